// Attention for few query rows in bf16 on CPU (decoding with a KV cache): one pass per
// (batch, head) over the cached keys and values, read in place from strided cache views,
// split over at::parallel_for's threads in one region. libtorch 1.13's bf16 bmm takes a slow
// path for a KV-cache view (its batch strides are not those of a contiguous tensor), and the
// eager sequence (matmul, div, softmax, cast, matmul) is five thread-pool rounds per layer.
// The arithmetic follows nn::attention's eager bf16 sequence, rounding where it rounds:
//   q' = bf16(q * scale) (multiply_query) | q;  s_j = bf16(q' . k_j) (fp32 accumulation);
//   s_j = bf16(s_j / scale) (divide_scores);   p = bf16(softmax_fp32(s));
//   out = bf16(sum_j p_j v_j) (fp32 accumulation).
// Ref: transformers LlamaAttention / CLIPAttention eager paths (v4.45); see nn/attention.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/attention.h"

namespace lli::nn {

// Most query rows attention_bf16 takes (larger Lq is prefill: torch's batched matmuls).
constexpr std::int64_t kAttentionBF16MaxQueries = 8;

// Whether attention_bf16 takes these operands: bf16 kernels available (nn/linear_bf16.h), q, k, v
// bf16 on CPU with unit stride in the last dim, Lq <= kAttentionBF16MaxQueries, no additive mask
// and no relative-position bias, head counts compatible (H % Hkv == 0), equal head dims.
bool attention_bf16_applicable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, const AttentionOptions& opt);

// q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D] (strided views allowed) -> [B, H, Lq, D] bf16.
// opt.causal: query i sees keys j <= i + causal_offset.
torch::Tensor attention_bf16(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionOptions& opt);

}  // namespace lli::nn
