// Fast bf16 linear for few rows (LLM decoding): y = x @ W^T + b with x bf16 [M, K], W bf16 [N, K]
// row-major, fp32 accumulation, one bf16 rounding per output (as oneDNN's bf16 matmul rounds).
// For small M the product is bound by reading W from memory; libtorch 1.13's bf16 path reaches
// about half the machine's read bandwidth there. This kernel streams each weight row once per
// call with AVX512-BF16 dot products (vdpbf16ps), one row at a time (each thread's share of the
// rows is one sequential read), and splits the output rows over at::parallel_for's threads.
// Compiled with target attributes, so the library builds for any x86-64 (and other
// architectures); at run time the kernel is used only when the CPU has AVX512-BF16.
// Ref: Intel intrinsics guide _mm512_dpbf16_ps; llama.cpp ggml_vec_dot_bf16 (the same idea).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace lli::nn {

// Most rows of x (product of all dims but the last) that the fast path takes; larger inputs go
// to torch::linear (oneDNN). Measured on the 7B shapes (BENCHMARKS.md): oneDNN reads the weights
// faster from M = 4 on (16 vs 12 GB/s at M = 4, 14 vs 7 at M = 8), so only M <= 2 stays here.
constexpr std::int64_t kLinearBF16MaxRows = 2;

// True when the CPU has AVX512-BF16 and the hand-written bf16 kernels (this linear and
// nn/attention_bf16.h) are enabled: they are unless set_bf16_kernels_enabled(false) was called or
// $LLI_FAST_BF16 is "0" at start-up.
bool bf16_kernels_available();
// Turns the bf16 kernels on or off for the whole process (benchmarks compare both ways).
void set_bf16_kernels_enabled(bool enabled);

// Whether linear_bf16 takes these operands: bf16_kernels_available(), x bf16 on CPU with last dim K and at most
// kLinearBF16MaxRows rows, w bf16 CPU contiguous [N, K], b undefined or bf16 CPU [N].
bool linear_bf16_applicable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

// x: [..., K] bf16, w: [N, K] bf16, b: [N] bf16 or undefined -> [..., N] bf16.
// Requires linear_bf16_applicable(x, w, b) apart from the row limit (any M works; large M is slow).
torch::Tensor linear_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

// The linear every module uses: linear_bf16 when applicable, torch::linear otherwise (fp32 and
// many-row inputs are exactly torch::linear).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b = {});

}  // namespace lli::nn
