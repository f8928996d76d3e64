// Scaled dot-product attention shared by the CLIP encoder layer (vision tower, SD text encoder)
// and the LLaMA decoder. Eager math in the order the reference implementations use, so fp32
// results match them to rounding:
//   CLIP  (transformers CLIPAttention):  softmax((q * scale) @ k^T [+ mask]) @ v, softmax in the
//         input dtype;
//   LLaMA (transformers LlamaAttention, eager): softmax(q @ k^T / sqrt(d) [+ mask], fp32) @ v.
//   SAM   (transformers SamVisionAttention): softmax((q * scale) @ k^T + decomposed rel-pos bias,
//         fp32) @ v; SamAttention (mask decoder): softmax(q @ k^T / sqrt(d)) @ v.
// Grouped-query attention: k/v may have fewer heads than q (n_head % n_kv_head == 0); query head
// h uses kv head h / (n_head / n_kv_head), as transformers' repeat_kv does.
// Ref: transformers/models/{clip,llama,sam}/modeling_*.py (v4.45).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace lli::nn {

enum class AttentionScale {
  multiply_query,  // (q * scale) @ k^T          (CLIP)
  divide_scores,   // (q @ k^T) / divisor        (LLaMA: divisor = sqrt(head_dim))
};

struct AttentionOptions {
  AttentionScale scale_mode = AttentionScale::multiply_query;
  double scale = 1.0;    // multiply_query: the factor; divide_scores: the divisor
  bool softmax_fp32 = false;  // softmax computed in fp32 and cast back (LLaMA)
  bool causal = false;   // query i (0-based in this call) sees keys j <= i + causal_offset
  std::int64_t causal_offset = 0;  // number of cached positions before this call's queries
  // Decomposed relative-position bias (SAM / MViTv2), both undefined or both defined: with
  // Lk = kh * kw, the scores viewed as [B, H, Lq, kh, kw] get rel_h[..., :, None] +
  // rel_w[..., None, :] added (after scaling, before `mask`). rel_h: [B, H, Lq, kh],
  // rel_w: [B, H, Lq, kw]. Only with multiply_query scaling and without grouped-query heads.
  // Computed inside the q k^T product (one fp32-accumulated sum per score: in bf16 this rounds
  // once where the reference rounds after each of its two adds).
  torch::Tensor rel_h, rel_w;
  // > 0: queries are processed in chunks of at most this many rows, bounding the scores' memory
  // to [B, H, q_chunk, Lk] (same results; mask rows, rel_h/rel_w rows and the causal offset follow
  // each chunk). 0 = all rows at once.
  std::int64_t q_chunk = 0;
  // bf16 on CPU with many query rows and a bf16 softmax (CLIP): use the fused kernel
  // (nn/attention_bf16.h) instead of the eager matmul-softmax-matmul, which materialises
  // [B, H, Lq, Lk] scores. The kernel rounds the softmax once from fp32 where the eager path
  // computes it in bf16. CLIPAttention sets it from kCLIPFusedMinTokens tokens.
  bool fused_long = false;
};

// q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D] (may be strided views, e.g. of a KV cache);
// mask: undefined or additive, broadcastable to [B, H, Lq, Lk] (used together with `causal`).
// Returns [B, H, Lq, D] in q's dtype.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, const AttentionOptions& opt);

// Additive causal mask [Lq, Lk] (0 where visible, dtype's lowest value where not), as
// transformers builds it: query i sees key j iff j <= i + offset.
torch::Tensor causal_mask(std::int64_t lq, std::int64_t lk, std::int64_t offset, torch::Dtype dtype,
                          torch::Device device);

}  // namespace lli::nn
