// Segment Anything (transformers SamModel layout, as distributed in facebook/sam-vit-{base,large,
// huge} and the SlimSAM conversions): config.json + model.safetensors (+ preprocessor_config.json,
// see sam_preprocess.h). Module tree = SamModel's state_dict: shared_image_embedding.
// positional_embedding, vision_encoder.*, prompt_encoder.*, mask_decoder.*.
//
// Compute dtype: the image encoder runs in the chosen dtype (f32 or bf16; f16 on CUDA); the
// positional embedding, prompt encoder and mask decoder always run in fp32. They are cheap, and
// the random-Fourier positional encoding (coords @ N(0, (D/2)^2) * 2 pi) has no precision left in
// bf16 (an 8-bit mantissa on the projected coordinate is an error of whole radians).
// Ref: transformers/models/sam/modeling_sam.py SamModel, configuration_sam.py SamConfig (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "models/config_json.h"
#include "models/sam_image_encoder.h"
#include "models/sam_mask_decoder.h"
#include "models/sam_prompt_encoder.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = transformers' SamConfig(): each absent sub-config is its class default.
struct SamConfig {
  SamVisionConfig vision;
  SamPromptEncoderConfig prompt_encoder;
  SamMaskDecoderConfig mask_decoder;

  std::int64_t embed_dim() const { return mask_decoder.hidden_size; }       // C of the image embedding
  std::int64_t grid() const { return prompt_encoder.image_embedding_size(); }  // g
  std::int64_t low_res_size() const { return 4 * grid(); }                     // low-res mask side
};

// Parses and cross-checks the sub-configs (embedding widths, grid sizes). ModelError naming the key.
SamConfig parse_sam_config(const nlohmann::json& j, const std::string& source);
SamConfig load_sam_config(const std::filesystem::path& dir);  // <dir>/config.json

struct SamDecodeResult {
  torch::Tensor iou_scores;  // [B, pb, m] fp32
  torch::Tensor pred_masks;  // [B, pb, m, 4g, 4g] fp32 low-res mask logits
};

struct SamModelImpl : torch::nn::Module {
  explicit SamModelImpl(const SamConfig& cfg);

  // pixel_values: [B, 3, S, S] -> image embeddings [B, C, g, g] fp32 (computed in the encoder's
  // dtype). Taps: see SamVisionEncoderImpl::forward.
  torch::Tensor get_image_embeddings(const torch::Tensor& pixel_values, const nn::Tap& tap = {});

  // Dense positional encoding of the embedding grid [1, C, g, g] (cell centres (i + 0.5) / g).
  torch::Tensor get_image_wide_positional_embeddings();

  SamPromptEmbeddings embed_prompts(const SamPromptTensors& prompts);

  // Runs the prompt encoder and the mask decoder against cached image embeddings [B, C, g, g].
  SamDecodeResult decode(const torch::Tensor& image_embeddings, const SamPromptTensors& prompts, bool multimask,
                         const nn::Tap& tap = {});
  // Same with precomputed prompt embeddings.
  SamDecodeResult decode(const torch::Tensor& image_embeddings, const SamPromptEmbeddings& prompts, bool multimask,
                         const nn::Tap& tap = {});

  torch::Dtype encoder_dtype() const { return vision_encoder->dtype(); }
  torch::Device device() const { return shared_image_embedding->positional_embedding.device(); }

  SamConfig cfg;
  SamPositionalEmbedding shared_image_embedding{nullptr};
  SamVisionEncoder vision_encoder{nullptr};
  SamPromptEncoder prompt_encoder{nullptr};
  SamMaskDecoder mask_decoder{nullptr};

 private:
  torch::Tensor image_pe_;  // cached get_image_wide_positional_embeddings()
};
TORCH_MODULE(SamModel);

struct SamLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // image encoder: kFloat32 or kBFloat16 (kHalf only on CUDA)
  torch::Device device = torch::kCPU;
};

// Loads <dir>/config.json and <dir>/model.safetensors (or a sharded index) strictly: every
// missing/unexpected key and shape mismatch is reported together in one ModelError. Accepted
// layout variant: a stored tied copy "prompt_encoder.shared_embedding.positional_embedding"
// (ignored when equal in shape to the shared one).
SamModel load_sam(const std::filesystem::path& dir, const SamLoadOptions& opts = {});

}  // namespace lli::models
