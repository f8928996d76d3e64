// Fused attention in bf16 on CPU (AVX512-BF16), rounding where nn::attention's eager bf16
// sequence rounds:
//   q' = bf16(q * scale) (multiply_query) | q;  s_j = bf16(q' . k_j) (fp32 accumulation);
//   s_j = bf16(s_j / scale) (divide_scores);   p = bf16(softmax_fp32(s));
//   out = bf16(sum_j p_j v_j) (fp32 accumulation).
// Few query rows (decoding with a KV cache): one pass per (batch, head) over the cached keys and
// values, read in place from the strided cache views, all heads in one parallel region.
// libtorch 1.13's bf16 bmm takes a slow path for a KV-cache view (its batch strides are not a
// contiguous tensor's), and the eager sequence is five thread-pool rounds per layer.
// Many query rows (prefill): each head's keys and values are repacked into dot-product pairs so
// scores and the weighted sum come out 16 lanes at a time; no [B, H, Lq, Lk] score tensors are
// materialised (the eager fp32 softmax allocates and passes over them several times).
// Ref: transformers LlamaAttention / CLIPAttention eager paths (v4.45); see nn/attention.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "nn/attention.h"

namespace lli::nn {

// Query rows up to which attention_bf16 is used whatever the softmax dtype; beyond, only with
// opt.softmax_fp32 (LLaMA prefill). CLIP-style attention (bf16 softmax) over many rows stays on
// the eager path, whose oneDNN matmuls are as fast there.
constexpr std::int64_t kAttentionBF16MaxQueries = 8;

// Whether nn::attention should use attention_bf16: bf16 kernels available (nn/linear_bf16.h); q,
// k, v bf16 on CPU with unit stride in the last dim; head dim <= 256; Lq <= kAttentionBF16MaxQueries
// or opt.softmax_fp32; no additive mask and no relative-position bias; H % Hkv == 0.
bool attention_bf16_applicable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, const AttentionOptions& opt);

// q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D] (strided views allowed) -> [B, H, Lq, D] bf16.
// opt.causal: query i sees keys j <= i + causal_offset. Any Lq (the applicability rule above is
// about speed); RuntimeError when the operands are otherwise unsupported.
torch::Tensor attention_bf16(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionOptions& opt);

}  // namespace lli::nn
