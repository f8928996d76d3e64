// LLaVA-1.5 (llava-hf layout): CLIP vision tower + multi-modal projector + LLaMA, loaded from a
// (sharded) safetensors checkpoint directory with its config.json.
// Module tree = LlavaForConditionalGeneration's state_dict: vision_tower.vision_model.*,
// multi_modal_projector.linear_{1,2}.*, language_model.model.*, language_model.lm_head.*.
// Ref: transformers/models/llava/modeling_llava.py, configuration_llava.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lli/safetensors.h"
#include "models/clip_vision.h"
#include "models/config_json.h"
#include "models/llama.h"
#include "models/llava_projector.h"
#include "nn/activation.h"
#include "nn/quant_kernels.h"
#include "nn/tap.h"

namespace lli::models {

enum class VisionSelect {
  drop_cls,  // "default": patch features only
  full,      // "full": CLS + patches
};

// Defaults = transformers' LlavaConfig(): when vision_config is absent, CLIP ViT-L/14-336
// (hidden 1024, intermediate 4096, 24 layers, 16 heads, patch 14, image 336); when text_config is
// absent, LlamaConfig() (LLaMA-7B); every key absent from a present sub-config takes the
// CLIPVisionConfig / LlamaConfig default.
struct LlavaConfig {
  CLIPVisionConfig vision;
  LlamaConfig text;
  std::int64_t image_token_index = 32000;
  nn::Activation projector_hidden_act = nn::Activation::gelu;
  VisionSelect select_strategy = VisionSelect::drop_cls;
  std::vector<std::int64_t> vision_feature_layers{-2};  // as written (negative = from the end)
  std::int64_t image_seq_length = 576;
  bool multimodal_projector_bias = true;
  std::int64_t pad_token_id = -1;
  // Top-level tie_word_embeddings (PretrainedConfig default true). transformers 4.45 ties by
  // text_config.tie_word_embeddings only; the top-level flag is used by load_llava solely when
  // the checkpoint has no lm_head.weight (see there).
  bool tie_word_embeddings_top = true;

  // Image tokens per image: patches (+1 for the CLS token with "full").
  std::int64_t tokens_per_image() const;
  // vision_feature_layers as indices into the vision hidden states (0 = embeddings).
  std::vector<std::int64_t> feature_layer_indices() const;
};

// `source`: the file name for messages. Throws ModelError naming the key on invalid values.
LlavaConfig parse_llava_config(const nlohmann::json& j, const std::string& source);
LlavaConfig load_llava_config(const std::filesystem::path& dir);  // <dir>/config.json

struct LlavaImpl : torch::nn::Module {
  explicit LlavaImpl(const LlavaConfig& cfg);

  // pixel_values: [n_img, 3, S, S] (any float dtype/device) -> image features [n_img, N, Dt] in
  // the model's dtype. Taps: "vision.hidden_state" i (only the states up to the deepest feature
  // layer are computed), "vision.selected_layer" (hidden state of the first feature layer),
  // "vision.selected_features" [n_img, N, Dv*k], "projector.hidden", "projector.output".
  torch::Tensor image_features(const torch::Tensor& pixel_values, const nn::Tap& tap = {});

  // input_ids: [B, L] int64 with image_token_index at the image positions; image_features:
  // [n_img, N, Dt] or undefined. Returns embed_tokens(input_ids) [B, L, Dt] with the image
  // positions replaced, in order, by the feature rows. InputError when the number of image
  // tokens differs from n_img * N. Tap "inputs_embeds".
  torch::Tensor embed_inputs(const torch::Tensor& input_ids, const torch::Tensor& image_features,
                             const nn::Tap& tap = {});

  // Language model pass (see LlamaForCausalLMImpl::forward): fp32 logits.
  torch::Tensor logits(const torch::Tensor& inputs_embeds, KVCache* cache = nullptr, bool last_only = false,
                       const nn::Tap& tap = {});

  KVCache make_cache(std::int64_t capacity, std::int64_t batch = 1) const;

  torch::Dtype dtype() const;
  torch::Device device() const;

  LlavaConfig cfg;
  CLIPVisionModel vision_tower{nullptr};
  LlavaMultiModalProjector multi_modal_projector{nullptr};
  LlamaForCausalLM language_model{nullptr};
};
TORCH_MODULE(Llava);

struct LlavaLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // kFloat32 or kBFloat16 (kHalf only on CUDA)
  torch::Device device = torch::kCPU;
  // mmap: weights stored in the compute dtype are used in place from the mapped files; copy (CPU):
  // every tensor is read into huge-page anonymous memory, converted to `dtype` on the way.
  st::Residency weights = st::Residency::mmap;
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;  // copy: bytes read
  // Quantize the language model's linears (decoder layers and lm_head) at load; a checkpoint that
  // is already quantized (lli-quantize) is used as it is.
  std::optional<nn::quant::QType> quantize;
};

// What a loaded LLaVA's language-model linears hold: "f32"/"bf16"/"f16", or "q8_0"/"q4_k".
std::string llava_weight_format(const LlavaImpl& model);

// The linears lli quantizes in a LLaVA checkpoint (module names under LlavaImpl): the language
// model's (decoder layers' projections and lm_head).
bool llava_quantizable(const std::string& module_name);

// Loads <dir>/config.json and the checkpoint (model.safetensors or sharded with
// model.safetensors.index.json), strictly: every missing/unexpected key and shape mismatch is
// reported together (ModelError). Stored fp16/bf16/fp32 weights are converted to opts.dtype.
// Accepted layout variants: an `embeddings.position_ids` buffer (ignored); with tied word
// embeddings, either `lm_head.weight` or `embed_tokens.weight` (or both) may be stored; when
// text_config does not tie but the checkpoint has no lm_head.weight and the top-level
// tie_word_embeddings is true (or absent), the output matrix is tied to embed_tokens (newer
// transformers' reading of that config) instead of failing.
Llava load_llava(const std::filesystem::path& dir, const LlavaLoadOptions& opts = {});

// Replaces each single image token by `n` copies (what the llava-hf processor does to the prompt).
// ids: [1, L] int64 -> [1, L + k * (n - 1)].
torch::Tensor expand_image_tokens(const torch::Tensor& ids, std::int64_t image_token, std::int64_t n);

// Greedy decoding with a KV cache: feeds `inputs_embeds` [1, L, D] (appended to what `cache`
// holds), then each argmax token, up to max_new_tokens. Stops after emitting a token in stop_ids
// (the stop token is included), or when on_token returns false. Returns the new token ids.
std::vector<std::int64_t> generate_greedy(LlavaImpl& model, const torch::Tensor& inputs_embeds, KVCache& cache,
                                          std::int64_t max_new_tokens,
                                          const std::vector<std::int64_t>& stop_ids = {},
                                          const std::function<bool(std::int64_t)>& on_token = {});

}  // namespace lli::models
