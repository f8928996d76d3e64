// LLaVA multi-modal projector: linear_1 -> act (projector_hidden_act) -> linear_2, mapping vision
// features [.., Dv * n_layers] to the language model's hidden size.
// Ref: transformers/models/llava/modeling_llava.py LlavaMultiModalProjector (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/activation.h"
#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

struct LlavaProjectorConfig {
  std::int64_t in_features = 1024;   // vision hidden_size (x number of feature layers)
  std::int64_t out_features = 4096;  // text hidden_size
  nn::Activation act = nn::Activation::gelu;
  bool bias = true;
};

struct LlavaMultiModalProjectorImpl : torch::nn::Module {
  explicit LlavaMultiModalProjectorImpl(const LlavaProjectorConfig& cfg);
  // x: [B, N, in_features] -> [B, N, out_features]; taps "projector.hidden" (after the act).
  torch::Tensor forward(const torch::Tensor& x, const nn::Tap& tap = {});

  LlavaProjectorConfig cfg;
  nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(LlavaMultiModalProjector);

}  // namespace lli::models
