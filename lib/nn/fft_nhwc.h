// 2-D real FFTs (torch.fft.rfftn / irfftn over the last two dims) of channels-last activations,
// computed in fp32 with AVX-512 across the channels: every butterfly works on 16 channels at once, so
// the data never leaves the channels-last layout (LaMa's Fourier units: libtorch's pocketfft needs
// planar data, and the transposes around it plus the transforms took ~0.3 s of a ~1.05 s big-lama
// call at 512^2).
//
// Numerics: radix-2 decimation in time in fp32 with twiddles computed in double (error O(log N)
// ulps, as pocketfft). irfft2 treats the input as the one-sided spectrum of a real signal, as
// torch.fft.irfftn does (the imaginary parts of the DC and Nyquist columns are ignored).
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace lli::nn {

// H and W powers of two (>= 2), C a multiple of 16, fp32 or bf16 data on the CPU, AVX-512 present.
bool fft_nhwc_supported(std::int64_t H, std::int64_t W, std::int64_t C, torch::Dtype dtype);

// x: [B, C, H, W] channels-last (fp32 or bf16) -> spectrum [B, 2C, H, W/2+1] channels-last of
// dtype `out`, channel ri*C + c = (real, imaginary)[ri] of channel c, multiplied by `scale`.
torch::Tensor rfft2_nhwc(const torch::Tensor& x, double scale, torch::Dtype out);

// spec: [B, 2C, H, W/2+1] channels-last in rfft2_nhwc's channel order -> [B, C, H, W]
// channels-last of dtype `out`, multiplied by `scale` (the inverse transform is unnormalised).
torch::Tensor irfft2_nhwc(const torch::Tensor& spec, std::int64_t W, double scale, torch::Dtype out);

}  // namespace lli::nn
