// CLIP vision tower (the LLaVA image encoder), module tree = transformers' CLIPVisionModel
// state_dict: vision_model.{embeddings.{class_embedding, patch_embedding, position_embedding},
// pre_layrnorm, encoder.layers.N.*, post_layernorm}.
// Ref: transformers/models/clip/modeling_clip.py CLIPVisionModel, configuration_clip.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/clip_config.h"
#include "models/config_json.h"
#include "nn/activation.h"
#include "nn/clip_layer.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

// Defaults = transformers' CLIPVisionConfig() (ViT-B/32).
struct CLIPVisionConfig : CLIPEncoderConfig {
  CLIPVisionConfig() {
    hidden_size = 768;
    intermediate_size = 3072;
    projection_dim = 512;  // unused here (no visual projection in CLIPVisionModel)
    num_hidden_layers = 12;
    num_attention_heads = 12;
  }
  std::int64_t num_channels = 3;
  std::int64_t image_size = 224;
  std::int64_t patch_size = 32;
  // The checkpoint key of the layer norm before the encoder: CLIP's own (sic) spelling, or
  // "pre_layernorm" (OWL-ViT / OWLv2 vision towers).
  std::string pre_layernorm_key = "pre_layrnorm";

  std::int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  std::int64_t num_positions() const { return num_patches() + 1; }
  nn::CLIPLayerConfig layer_config() const { return encoder_layer_config(/*causal=*/false); }
};

// Reads a vision_config object; every absent key keeps the value already in `base`
// (transformers' defaults unless the caller passes others). Validates sizes.
CLIPVisionConfig parse_clip_vision_config(const ConfigReader& r, const CLIPVisionConfig& base = {});

struct CLIPVisionEmbeddingsImpl : torch::nn::Module {
  explicit CLIPVisionEmbeddingsImpl(const CLIPVisionConfig& cfg);
  // pixel_values: [B, C, S, S] -> [B, 1 + P, D] (CLS first)
  torch::Tensor forward(const torch::Tensor& pixel_values);

  CLIPVisionConfig cfg;
  torch::Tensor class_embedding;  // [D]
  nn::Conv2d patch_embedding{nullptr};
  nn::Embedding position_embedding{nullptr};  // [P + 1, D]
};
TORCH_MODULE(CLIPVisionEmbeddings);

struct CLIPVisionTransformerImpl : torch::nn::Module {
  explicit CLIPVisionTransformerImpl(const CLIPVisionConfig& cfg);
  // See CLIPVisionModelImpl::hidden_states.
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixel_values, std::int64_t up_to = -1,
                                           const nn::Tap& tap = {});

  CLIPVisionConfig cfg;
  CLIPVisionEmbeddings embeddings{nullptr};
  nn::LayerNorm pre_layrnorm{nullptr};  // registered as cfg.pre_layernorm_key
  nn::CLIPEncoder encoder{nullptr};
  nn::LayerNorm post_layernorm{nullptr};  // for pooled output; LLaVA does not use it
};
TORCH_MODULE(CLIPVisionTransformer);

struct CLIPVisionModelImpl : torch::nn::Module {
  explicit CLIPVisionModelImpl(const CLIPVisionConfig& cfg);

  // Hidden states as transformers returns them with output_hidden_states=True: [0] = embeddings
  // after pre_layrnorm, [i] = output of encoder layer i-1, each [B, 1 + P, D]. Only the states
  // 0..up_to are computed and returned (up_to = -1: all, num_hidden_layers + 1 states).
  // Taps "vision.hidden_state" (index i) for each state.
  // pixel_values: [B, C, S, S], converted to the weights' dtype and device.
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixel_values, std::int64_t up_to = -1,
                                           const nn::Tap& tap = {});

  // post_layernorm(hidden_states.back()[:, 0]): CLIP's pooled output [B, D].
  torch::Tensor pooled(const torch::Tensor& last_hidden_state);

  CLIPVisionConfig cfg;
  CLIPVisionTransformer vision_model{nullptr};
};
TORCH_MODULE(CLIPVisionModel);

}  // namespace lli::models
