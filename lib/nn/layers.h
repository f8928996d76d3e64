// Basic layers whose parameters are allocated uninitialised (torch::empty: virtual memory only,
// never touched) and filled by lli::bind_weights. Registered names follow PyTorch
// (weight, bias, running_mean, ...) so module trees match checkpoint keys.
// Ref: torch.nn.{Linear,Conv2d,ConvTranspose2d,LayerNorm,GroupNorm,Embedding,BatchNorm2d}.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lli::nn {

struct QuantWeight;  // nn/quant_linear.h

// Identity placeholder so that Sequential / ModuleList indices line up with checkpoint keys.
struct IdentityImpl : torch::nn::Module {
  torch::Tensor forward(const torch::Tensor& x) { return x; }
};
TORCH_MODULE(Identity);

struct LinearImpl : torch::nn::Module {
  LinearImpl(std::int64_t in, std::int64_t out, bool bias = true);
  // x: [..., in] -> [..., out]
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // [out, in]; with qweight: a zero-stride view of zeros of that shape
  torch::Tensor bias;    // [out] or undefined
  std::shared_ptr<const QuantWeight> qweight;  // set: the weight is quantized (q8_0 / q4_k)
  std::int64_t in_features() const { return weight.size(1); }
  std::int64_t out_features() const { return weight.size(0); }
};
TORCH_MODULE(Linear);

// Several linears with the same input applied to one x (q/k/v projections, gate and up): the same
// outputs as calling each; when all are quantized, one activation quantization and one parallel
// region for all of them (nn/quant_linear.h quant_linear_group).
std::vector<torch::Tensor> linear_group(const torch::Tensor& x, const std::vector<LinearImpl*>& ls);

struct Conv2dOptions {
  std::int64_t in = 0, out = 0, kernel = 1, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};

struct Conv2dImpl : torch::nn::Module {
  explicit Conv2dImpl(const Conv2dOptions& o);
  // x: [B, in, H, W] -> [B, out, H', W']
  torch::Tensor forward(const torch::Tensor& x);
  Conv2dOptions opt;
  torch::Tensor weight;  // [out, in/groups, k, k]
  torch::Tensor bias;
};
TORCH_MODULE(Conv2d);

// ConvTranspose2d: libtorch 1.13's bf16 CPU kernel is broken, so a bf16 CPU input is computed in
// fp32 (cast in, cast out).
struct ConvTranspose2dImpl : torch::nn::Module {
  explicit ConvTranspose2dImpl(const Conv2dOptions& o);
  torch::Tensor forward(const torch::Tensor& x);
  Conv2dOptions opt;
  torch::Tensor weight;  // [in, out/groups, k, k]
  torch::Tensor bias;
};
TORCH_MODULE(ConvTranspose2d);

struct LayerNormImpl : torch::nn::Module {
  LayerNormImpl(std::int64_t dim, double eps, bool affine = true, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);  // normalises the last dim
  std::int64_t dim;
  double eps;
  torch::Tensor weight, bias;
};
TORCH_MODULE(LayerNorm);

struct GroupNormImpl : torch::nn::Module {
  GroupNormImpl(std::int64_t groups, std::int64_t channels, double eps, bool affine = true);
  // x: [B, C, ...]. bf16 on CPU (contiguous or channels-last): nn/group_norm_bf16.h's kernel,
  // output in x's memory format.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward_silu(const torch::Tensor& x);  // silu(forward(x)), fused on the bf16 path
  std::int64_t groups;
  double eps;
  torch::Tensor weight, bias;
};
TORCH_MODULE(GroupNorm);

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(std::int64_t num, std::int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids);  // ids: [...] int64 -> [..., dim]
  torch::Tensor weight;                             // [num, dim]
};
TORCH_MODULE(Embedding);

struct BatchNorm2dImpl : torch::nn::Module {
  BatchNorm2dImpl(std::int64_t channels, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);  // inference: running statistics
  double eps;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(BatchNorm2d);

// Placeholder parameter/buffer of a given shape: uninitialised, never touched until bound.
torch::Tensor placeholder(const std::vector<std::int64_t>& shape, torch::Dtype dtype = torch::kFloat32);

}  // namespace lli::nn
