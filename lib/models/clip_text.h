// CLIP text encoder (Stable Diffusion / GLIGEN text_encoder, the text tower of OWL-ViT / OWLv2),
// module tree = transformers' CLIPTextModel state_dict:
// text_model.{embeddings.{token_embedding, position_embedding}, encoder.layers.N.*,
// final_layer_norm}. The encoder layers are the shared nn::CLIPEncoder with the causal mask.
// Construction (from a config) and loading are separate so that a larger model (OWL) can hold a
// CLIPTextTransformer under its own prefix and bind it with its own weights.
// Ref: transformers/models/clip/modeling_clip.py CLIPTextModel / CLIPTextTransformer /
//      CLIPTextEmbeddings, configuration_clip.py CLIPTextConfig (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>

#include "models/clip_config.h"
#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/clip_layer.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

// How the pooled output picks each row's EOS position.
enum class CLIPTextPooling {
  argmax_id,  // argmax(input_ids): legacy configs with eos_token_id == 2 (SD 1.x); EOS has the largest id
  first_eos,  // the first position whose id is eos_token_id (0 when there is none)
};

// Defaults = transformers' CLIPTextConfig() (4.45).
struct CLIPTextConfig : CLIPEncoderConfig {
  CLIPTextConfig() {
    hidden_size = 512;
    intermediate_size = 2048;
    projection_dim = 512;  // unused here (no text projection in CLIPTextModel)
    num_hidden_layers = 12;
    num_attention_heads = 8;
  }
  std::int64_t vocab_size = 49408;
  std::int64_t max_position_embeddings = 77;
  std::int64_t pad_token_id = 1;
  std::int64_t bos_token_id = 49406;
  std::int64_t eos_token_id = 49407;
  // OWL-ViT / OWLv2 text towers always pool at argmax(input_ids), whatever eos_token_id says.
  bool pool_at_argmax_id = false;

  CLIPTextPooling pooling() const {
    return pool_at_argmax_id || eos_token_id == 2 ? CLIPTextPooling::argmax_id : CLIPTextPooling::first_eos;
  }
  nn::CLIPLayerConfig layer_config() const { return encoder_layer_config(/*causal=*/true); }
};

// Reads a CLIPTextConfig object (config.json of a CLIPTextModel, or a text_config); every absent
// key keeps the value in `base` (transformers' defaults unless the caller passes others, e.g.
// OWL's). Validates sizes (ModelError naming the file and key).
CLIPTextConfig parse_clip_text_config(const ConfigReader& r, const CLIPTextConfig& base = {});

struct CLIPTextOutput {
  torch::Tensor last_hidden_state;  // [B, T, D] final_layer_norm(last layer), compute dtype
  torch::Tensor pooler_output;      // [B, D] last_hidden_state at each row's EOS position
};

struct CLIPTextEmbeddingsImpl : torch::nn::Module {
  explicit CLIPTextEmbeddingsImpl(const CLIPTextConfig& cfg);
  // input_ids: [B, T] int64 on the weights' device -> [B, T, D] (positions 0..T-1)
  torch::Tensor forward(const torch::Tensor& input_ids);

  nn::Embedding token_embedding{nullptr};     // [vocab_size, D]
  nn::Embedding position_embedding{nullptr};  // [max_position_embeddings, D]
};
TORCH_MODULE(CLIPTextEmbeddings);

// transformers' CLIPTextTransformer (the `text_model` of CLIPTextModel, OWL's
// `owlv2.text_model`).
struct CLIPTextTransformerImpl : torch::nn::Module {
  explicit CLIPTextTransformerImpl(const CLIPTextConfig& cfg);

  // input_ids: [B, T] integer ids (T <= max_position_embeddings, each in [0, vocab_size));
  // attention_mask: [B, T] (1 = token, 0 = padding) or undefined (causal mask only, as
  // Stable Diffusion's prompt encoding). Inputs are moved to the weights' device. Taps
  // "text.hidden_state" i = 0 (embeddings) .. num_hidden_layers (layer outputs, before the final
  // layer norm) and "text.last_hidden_state". InputError on bad shapes or ids.
  CLIPTextOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                         const nn::Tap& tap = {});

  CLIPTextConfig cfg;
  CLIPTextEmbeddings embeddings{nullptr};
  nn::CLIPEncoder encoder{nullptr};
  nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(CLIPTextTransformer);

struct CLIPTextModelImpl : torch::nn::Module {
  explicit CLIPTextModelImpl(const CLIPTextConfig& cfg);
  // See CLIPTextTransformerImpl::forward.
  CLIPTextOutput forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                         const nn::Tap& tap = {});

  CLIPTextConfig cfg;
  CLIPTextTransformer text_model{nullptr};
};
TORCH_MODULE(CLIPTextModel);

struct CLIPTextLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // compute dtype: f32, bf16 (f16 on CUDA only)
  torch::Device device = torch::kCPU;
};

// Loads <dir>/config.json and model.safetensors (or a sharded model.safetensors.index.json),
// strictly: every missing/unexpected key and shape mismatch is reported together (ModelError).
// fp32 / fp16 / bf16 checkpoints are converted to the compute dtype. A stored
// text_model.embeddings.position_ids buffer (older exports) is accepted and ignored.
CLIPTextModel load_clip_text(const std::filesystem::path& dir, const CLIPTextLoadOptions& opts = {});

}  // namespace lli::models
