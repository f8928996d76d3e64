// diffusers Attention (to_q, to_k, to_v, to_out.0) with the classic AttnProcessor math, and
// FeedForward with GEGLU (net.0.proj, net.2). One attention module for every diffusers use:
//   - BasicTransformerBlock attn1 (self) / attn2 (cross, keys from the text), no q/k/v bias;
//   - GLIGEN's fuser (self attention over visual + grounding tokens);
//   - the VAE mid-block attention: 4-D input, group_norm first, q/k/v biases, a residual
//     connection and rescale_output_factor, fp32 softmax (upcast_softmax).
// Scores are softmax(scale * q k^T) with scale = dim_head^-0.5; upcast_attention computes the
// scores and softmax in fp32 (q, k and v are taken to fp32, the output cast back).
// Ref: diffusers/models/attention_processor.py Attention, AttnProcessor; attention.py
// FeedForward; activations.py GEGLU (v0.31).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/layers.h"

namespace lli::nn {

struct DiffusersAttentionConfig {
  std::int64_t query_dim = 0;
  std::int64_t cross_attention_dim = 0;  // 0: keys/values from the queries' input (self attention)
  std::int64_t heads = 8;
  std::int64_t dim_head = 64;
  bool bias = false;      // to_q / to_k / to_v biases
  bool out_bias = true;   // to_out.0 bias
  bool upcast_attention = false;  // scores and softmax in fp32
  bool upcast_softmax = false;    // softmax in fp32 (the scores in the input dtype)
  std::int64_t norm_num_groups = 0;  // > 0: group_norm over the input first (4-D input)
  double eps = 1e-5;                 // group_norm epsilon
  bool residual_connection = false;  // add the input back after to_out
  double rescale_output_factor = 1.0;
  // Queries per chunk in the attention product (memory bound on [B, H, chunk, Lk] scores;
  // identical results). 0: no chunking.
  std::int64_t q_chunk = 0;

  std::int64_t inner_dim() const { return heads * dim_head; }
};

struct DiffusersAttentionImpl : torch::nn::Module {
  explicit DiffusersAttentionImpl(const DiffusersAttentionConfig& cfg);

  // x: [B, L, query_dim] or [B, query_dim, H, W] (tokens = pixels, row-major);
  // context: [B, Lk, cross_attention_dim] (or query_dim) or undefined = x (self attention).
  // n_query: > 0 computes only the first n_query query rows (GLIGEN keeps only the visual
  // tokens); 3-D input only. Returns x's shape ([B, n_query, query_dim] with n_query).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {}, std::int64_t n_query = 0);

  DiffusersAttentionConfig cfg;
  GroupNorm group_norm{nullptr};
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [0] = Linear (inner_dim -> query_dim), [1] = dropout (no weights)
  Linear out_proj{nullptr};               // = to_out[0]
};
TORCH_MODULE(DiffusersAttention);

// bf16 CPU kernels of the diffusers blocks (AVX512-BF16, see bf16_kernels_available() in
// nn/linear_bf16.h), rounding where the eager bf16 ops round:
//   layer_norm_bf16: y = (x - mean) * rstd * w + b over the last dim, statistics and arithmetic in
//     fp32, one rounding (as libtorch's bf16 LayerNorm);
//   geglu_bf16: bf16(hidden * bf16(gelu(gate))) for u = [hidden | gate] (erf GELU, |error| of the
//     erf approximation < 2e-7).
// Applicable to bf16 CPU tensors whose last dim is contiguous.
bool diffusers_bf16_kernels_applicable(const torch::Tensor& x);
torch::Tensor layer_norm_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, double eps);
torch::Tensor geglu_bf16(const torch::Tensor& u);  // [..., 2F] -> [..., F]
// LayerNorm through layer_norm_bf16 when applicable, else the module.
torch::Tensor layer_norm(LayerNorm& norm, const torch::Tensor& x);

// GEGLU: proj to 2 * inner, then hidden * gelu(gate) (exact erf GELU).
struct GEGLUImpl : torch::nn::Module {
  GEGLUImpl(std::int64_t dim_in, std::int64_t dim_out);
  torch::Tensor forward(const torch::Tensor& x);  // x: [..., dim_in] -> [..., dim_out]
  Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

// FeedForward(dim, activation_fn="geglu", mult=4): net.0 = GEGLU(dim, 4 dim), net.1 = dropout,
// net.2 = Linear(4 dim, dim).
struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(std::int64_t dim, std::int64_t inner_dim);
  // x: [..., dim] -> [..., dim]. bf16 on CPU: in blocks of kFeedForwardRows rows (the [rows, 8 dim]
  // intermediate stays small: cache-friendly, and below glibc's mmap threshold, so its memory is
  // reused instead of faulted in afresh), with geglu_bf16; the same values as one block.
  torch::Tensor forward(const torch::Tensor& x);
  static constexpr std::int64_t kFeedForwardRows = 2048;
  torch::nn::ModuleList net{nullptr};
  GEGLU geglu{nullptr};
  Linear out{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace lli::nn
