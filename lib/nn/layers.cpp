#include "nn/layers.h"

#include "nn/group_norm_bf16.h"
#include "nn/linear_bf16.h"
#include "nn/quant_linear.h"

namespace lli::nn {

torch::Tensor placeholder(const std::vector<std::int64_t>& shape, torch::Dtype dtype) {
  return torch::empty(shape, torch::TensorOptions().dtype(dtype).requires_grad(false));
}

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool has_bias) {
  weight = register_parameter("weight", placeholder({out, in}), /*requires_grad=*/false);
  if (has_bias) bias = register_parameter("bias", placeholder({out}), /*requires_grad=*/false);
}
torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (qweight) return quant_linear(x, *qweight, bias);
  // bf16 with few rows (decoding): the memory-bound GEMV kernel; everything else: torch::linear.
  return nn::linear(x, weight, bias);
}

std::vector<torch::Tensor> linear_group(const torch::Tensor& x, const std::vector<LinearImpl*>& ls) {
  bool quantized = !ls.empty();
  for (const auto* l : ls) quantized = quantized && l->qweight && l->qweight->K == ls[0]->qweight->K;
  std::vector<torch::Tensor> out;
  if (quantized) {
    std::vector<const QuantWeight*> ws;
    std::vector<torch::Tensor> bs;
    for (const auto* l : ls) {
      ws.push_back(l->qweight.get());
      bs.push_back(l->bias);
    }
    return quant_linear_group(x, ws, bs);
  }
  for (auto* l : ls) out.push_back(l->forward(x));
  return out;
}

Conv2dImpl::Conv2dImpl(const Conv2dOptions& o) : opt(o) {
  weight = register_parameter("weight", placeholder({o.out, o.in / o.groups, o.kernel, o.kernel}), false);
  if (o.bias) bias = register_parameter("bias", placeholder({o.out}), false);
}
torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, weight, bias, opt.stride, opt.padding, opt.dilation, opt.groups);
}

ConvTranspose2dImpl::ConvTranspose2dImpl(const Conv2dOptions& o) : opt(o) {
  weight = register_parameter("weight", placeholder({o.in, o.out / o.groups, o.kernel, o.kernel}), false);
  if (o.bias) bias = register_parameter("bias", placeholder({o.out}), false);
}
torch::Tensor ConvTranspose2dImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kBFloat16 && x.device().is_cpu()) {
    auto y = torch::conv_transpose2d(x.to(torch::kFloat32), weight.to(torch::kFloat32),
                                     bias.defined() ? bias.to(torch::kFloat32) : bias, opt.stride, opt.padding,
                                     /*output_padding=*/0, opt.groups, opt.dilation);
    return y.to(torch::kBFloat16);
  }
  return torch::conv_transpose2d(x, weight, bias, opt.stride, opt.padding, /*output_padding=*/0, opt.groups,
                                 opt.dilation);
}

LayerNormImpl::LayerNormImpl(std::int64_t d, double e, bool affine, bool has_bias) : dim(d), eps(e) {
  if (affine) {
    weight = register_parameter("weight", placeholder({d}), false);
    if (has_bias) bias = register_parameter("bias", placeholder({d}), false);
  }
}
torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) { return torch::layer_norm(x, {dim}, weight, bias, eps); }

GroupNormImpl::GroupNormImpl(std::int64_t g, std::int64_t c, double e, bool affine) : groups(g), eps(e) {
  if (affine) {
    weight = register_parameter("weight", placeholder({c}), false);
    bias = register_parameter("bias", placeholder({c}), false);
  }
}
torch::Tensor GroupNormImpl::forward(const torch::Tensor& x) {
  if (group_norm_bf16_applicable(x, groups)) return group_norm_bf16(x, groups, weight, bias, eps, /*silu=*/false);
  return torch::group_norm(x, groups, weight, bias, eps);
}
torch::Tensor GroupNormImpl::forward_silu(const torch::Tensor& x) {
  if (group_norm_bf16_applicable(x, groups)) return group_norm_bf16(x, groups, weight, bias, eps, /*silu=*/true);
  return torch::silu(torch::group_norm(x, groups, weight, bias, eps));
}

EmbeddingImpl::EmbeddingImpl(std::int64_t num, std::int64_t d) {
  weight = register_parameter("weight", placeholder({num, d}), false);
}
torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

BatchNorm2dImpl::BatchNorm2dImpl(std::int64_t c, double e) : eps(e) {
  weight = register_parameter("weight", placeholder({c}), false);
  bias = register_parameter("bias", placeholder({c}), false);
  running_mean = register_buffer("running_mean", placeholder({c}));
  running_var = register_buffer("running_var", placeholder({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", placeholder({}, torch::kInt64));
}
torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& x) {
  return torch::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, /*momentum=*/0.0, eps,
                           /*cudnn_enabled=*/false);
}

}  // namespace lli::nn
