// GLIGEN position net (diffusers GLIGENTextBoundingboxProjection, feature_type "text-only"): the
// `position_net.*` keys of a GLIGEN UNet checkpoint. Boxes are embedded with Fourier features
// (fourier_freqs frequencies 100^(f / fourier_freqs), sin and cos of each xyxy coordinate); padded
// objects (mask 0) take the learned null features instead; an MLP (linears.0, SiLU, linears.2,
// SiLU, linears.4) maps [phrase embedding | box embedding] to one grounding token per object.
// Always computed in fp32: an 8-bit mantissa on coordinate x frequency (up to ~87 rad) would be
// an error of whole radians.
// Ref: diffusers/models/embeddings.py GLIGENTextBoundingboxProjection,
// get_fourier_embeds_from_boundingbox (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/layers.h"

namespace lli::models {

struct GLIGENPositionNetConfig {
  std::int64_t positive_len = 768;  // phrase embedding width (the UNet's cross_attention_dim)
  std::int64_t out_dim = 768;       // grounding token width (the UNet's cross_attention_dim)
  std::int64_t fourier_freqs = 8;
  std::int64_t hidden = 512;

  std::int64_t position_dim() const { return fourier_freqs * 2 * 4; }  // sin/cos x xyxy
};

// Fourier embedding of boxes, as get_fourier_embeds_from_boundingbox: boxes [B, N, 4] ->
// [B, N, n_freq * 2 * 4], laid out (freq, sin|cos, coordinate).
torch::Tensor gligen_box_fourier_embedding(const torch::Tensor& boxes, std::int64_t n_freq);

struct GLIGENPositionNetImpl : torch::nn::Module {
  explicit GLIGENPositionNetImpl(const GLIGENPositionNetConfig& cfg);

  // boxes [B, N, 4] xyxy in 0..1, masks [B, N] (1 = real object), positive_embeddings
  // [B, N, positive_len] -> objs [B, N, out_dim] fp32 (any float inputs; computed in the weights'
  // dtype, fp32 as loaded by load_unet).
  torch::Tensor forward(const torch::Tensor& boxes, const torch::Tensor& masks, const torch::Tensor& positive_embeddings);

  GLIGENPositionNetConfig cfg;
  torch::nn::ModuleList linears{nullptr};  // 0, 2, 4: Linear; 1, 3: SiLU
  nn::Linear l0{nullptr}, l2{nullptr}, l4{nullptr};
  torch::Tensor null_positive_feature;  // [positive_len]
  torch::Tensor null_position_feature;  // [position_dim]
};
TORCH_MODULE(GLIGENPositionNet);

}  // namespace lli::models
