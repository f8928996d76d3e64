// Layout changes with a dtype conversion in one pass: [B, M, N, E] -> [B, N, M, E] (E = 1, or 2 for
// complex / re-im pairs), fp32 <-> bf16 (round to nearest even, as torch's casts). libtorch 1.13's
// copy_ between channels-last bf16 and planar fp32 (what LaMa's Fourier units need around each
// FFT) iterates element by element: 249 ms per big-lama call at 512^2; the tiled copies here took 88 ms.
#pragma once

#include <torch/types.h>

namespace lli::nn {

// src: contiguous [B, M, N, E]; dst: contiguous [B, N, M, E]; dtypes fp32 or bf16 each; CPU.
// dst[b, n, m, e] = cast(src[b, m, n, e]). Parallel over libtorch's threads.
void transpose_copy(const torch::Tensor& src, torch::Tensor& dst);

}  // namespace lli::nn
