// GroupNorm (+ SiLU) for bf16 tensors on CPU (AVX512-BF16), contiguous (NCHW) or channels-last.
// libtorch 1.13's bf16 GroupNorm is slow on NCHW (~5 ns per element) and WRONG on channels-last
// input (errors of several units on unit-scale outputs, measured against fp32), which the
// diffusion models' channels-last bf16 path needs.
// Numerics: statistics per (sample, group) in fp32/fp64 (two passes: mean, then the centred sum of
// squares; biased variance as torch), y = (x - mean) * rstd * w + b in fp32 rounded once to bf16
// (as libtorch's bf16 GroupNorm); with silu, then bf16(silu(y)) (as a separate bf16 SiLU op).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>

namespace lli::nn {

// bf16 kernels available, x bf16 on CPU, 3-D or more with C % groups == 0, and x contiguous or
// 4-D channels-last; w, b undefined or [C].
bool group_norm_bf16_applicable(const torch::Tensor& x, std::int64_t groups);

// x: [N, C, *] -> same shape and memory format.
torch::Tensor group_norm_bf16(const torch::Tensor& x, std::int64_t groups, const torch::Tensor& w,
                              const torch::Tensor& b, double eps, bool silu);

// The diffusion models' bf16 CPU path runs channels-last (NHWC): oneDNN's bf16 convolutions are
// 1.3-2.5x faster on it (measured here: 128 channels at 512^2 1013 -> 413 ms), and the blocks'
// permutes to token-major become views. x unchanged unless it is a 4-D bf16 CPU tensor and the bf16
// kernels are available (this GroupNorm is then used; libtorch's is wrong on channels-last bf16).
torch::Tensor prefer_channels_last(const torch::Tensor& x);
// Conv2d weights of `module` (recursively) to channels-last, when prefer_channels_last would pick it
// for `dtype` on `device` (a weight whose layout matches the input's avoids a reorder per call).
void convs_to_channels_last(torch::nn::Module& module, torch::Dtype dtype, const torch::Device& device);

}  // namespace lli::nn
