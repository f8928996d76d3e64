// RMSNorm as transformers' LlamaRMSNorm computes it: statistics in fp32, the normalised value
// cast back to the input dtype, then times the weight.
// Ref: transformers/models/llama/modeling_llama.py LlamaRMSNorm (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/layers.h"

namespace lli::nn {

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(std::int64_t dim, double eps) : eps(eps) {
    weight = register_parameter("weight", placeholder({dim}), /*requires_grad=*/false);
  }
  // x: [..., dim]
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = x.to(torch::kFloat32);
    auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * torch::rsqrt(variance + eps);
    return weight * h.to(x.scalar_type());
  }
  double eps;
  torch::Tensor weight;  // [dim]
};
TORCH_MODULE(RMSNorm);

}  // namespace lli::nn
