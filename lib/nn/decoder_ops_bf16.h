// The elementwise steps of a LLaMA decoder layer fused for bf16 on CPU (AVX512-BF16): RMSNorm
// (with the residual addition before it), rotary position embedding and SiLU(gate) * up. Each
// replaces a chain of 4-12 eager libtorch ops (dispatch, allocation and one pass over memory per
// op) by one pass, and rounds to bf16 exactly where the eager bf16 sequence rounds, so results
// match it bit for bit (RMSNorm even adds its fp32 sum of squares in libtorch's order). In decoding (one row) the eager chains cost more than
// the attention itself on small models.
// Ref: transformers/models/llama/modeling_llama.py (v4.45): LlamaRMSNorm, apply_rotary_pos_emb,
// LlamaMLP (act_fn(gate_proj(x)) * up_proj(x)).
#pragma once

#include <torch/torch.h>

#include <utility>

namespace lli::nn {

// Whether the fused ops take these tensors: bf16_kernels_available() (nn/linear_bf16.h), the fused
// ops enabled, and every tensor bf16, on the CPU, contiguous.
bool decoder_ops_bf16_applicable(std::initializer_list<const torch::Tensor*> ts);
// On unless $LLI_FUSED_DECODER is "0" at start-up; benchmarks and tests compare both ways.
void set_decoder_ops_enabled(bool enabled);

// Whether rms_norm_bf16 / add_rms_norm_bf16 take x and w: decoder_ops_bf16_applicable, D = w's
// size <= 32768, and this libtorch's fp32 sum order reproduced (see the .cpp).
bool rms_norm_bf16_applicable(const torch::Tensor& x, const torch::Tensor& w);

// LlamaRMSNorm: w * bf16(x * rsqrt(mean(x^2) + eps)) with the statistics in fp32, the sum of
// squares added in libtorch's order (bit-identical to the eager ops).
// x: [..., D] bf16, w: [D] bf16 -> [..., D] bf16.
torch::Tensor rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& w, double eps);

// h = bf16(x + delta) and rms_norm_bf16(h, w, eps) in one pass: returns {h, normalised h}.
// x, delta: [..., D] bf16 (same shape).
std::pair<torch::Tensor, torch::Tensor> add_rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& delta,
                                                         const torch::Tensor& w, double eps);

// In place, x = x * cos + rotate_half(x) * sin with bf16 rounding after each product and the sum
// (as the eager bf16 expression). x: [B, L, H, hd] bf16 contiguous; cos, sin: [L, hd] bf16.
void rotary_bf16_(torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// bf16(silu(gate) * up) with silu rounded as libtorch 1.13 rounds it in bf16:
// bf16(x / bf16(1 + bf16(e^-x))). gate, up: [..., F] bf16 (same shape) -> [..., F] bf16.
torch::Tensor silu_mul_bf16(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace lli::nn
