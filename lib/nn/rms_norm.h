// RMSNorm as transformers' LlamaRMSNorm computes it: statistics in fp32, the normalised value
// cast back to the input dtype, then times the weight.
// Ref: transformers/models/llama/modeling_llama.py LlamaRMSNorm (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

#include "nn/decoder_ops_bf16.h"
#include "nn/layers.h"

namespace lli::nn {

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(std::int64_t dim, double eps) : eps(eps) {
    weight = register_parameter("weight", placeholder({dim}), /*requires_grad=*/false);
  }
  // x: [..., dim]. bf16 on a CPU with the bf16 kernels: one fused pass (nn/decoder_ops_bf16.h).
  torch::Tensor forward(const torch::Tensor& x) {
    if (rms_norm_bf16_applicable(x, weight)) return rms_norm_bf16(x, weight, eps);
    auto h = x.to(torch::kFloat32);
    auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * torch::rsqrt(variance + eps);
    return weight * h.to(x.scalar_type());
  }
  // The residual addition before a norm: {x + delta, forward(x + delta)}; x, delta: [..., dim].
  std::pair<torch::Tensor, torch::Tensor> forward_add(const torch::Tensor& x, const torch::Tensor& delta) {
    if (rms_norm_bf16_applicable(x, weight) && decoder_ops_bf16_applicable({&delta}) && x.sizes() == delta.sizes())
      return add_rms_norm_bf16(x, delta, weight, eps);
    auto h = x + delta;
    return {h, forward(h)};
  }
  double eps;
  torch::Tensor weight;  // [dim]
};
TORCH_MODULE(RMSNorm);

}  // namespace lli::nn
