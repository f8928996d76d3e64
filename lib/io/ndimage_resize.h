// Exact re-implementation of the resize that transformers' Owlv2ImageProcessor uses (its own
// `resize`, a port of skimage.transform.resize on top of scipy.ndimage), for float32 HxWxC
// images. Torch-free.
//
// Semantics reproduced (scipy 1.10 ndimage, transformers 4.45 image_processing_owlv2.py):
//   factor f = in / out per spatial axis (the channel axis is never resized);
//   1. anti-aliasing when f > 1: gaussian_filter with sigma = max(0, (f - 1) / 2), truncate 4.0:
//      weights exp(-x^2 / (2 sigma^2)) for integer x in [-r, r], r = int(4 sigma + 0.5),
//      normalised to sum 1 (float64); boundary mode 'mirror' (index -1 -> 1, n -> n - 2: reflect
//      about the edge pixel's centre); axis 0 (along the rows' direction, i.e. vertical) first,
//      then axis 1, each pass accumulated in float64 and stored as float32;
//   2. zoom(order=1, mode='mirror', grid_mode=True): output pixel o reads input coordinate
//      (o + 0.5) * f - 0.5 with bilinear weights in both axes at once (float64, stored as
//      float32); neighbours beyond the edge mirrored as in 1;
//   3. clip to the input's [min, max]: a no-op for linear interpolation, not performed.
// Only the rows and columns that the interpolation reads are filtered (the same arithmetic per
// value, far less work when downscaling a large photo).
#pragma once

#include <cstdint>
#include <cstddef>
#include <vector>

namespace lli {

// The input: an 8-bit interleaved image rescaled to float32 as numpy does
// (float32(uint8 * rescale in float64)), padded at the bottom and right to padded_h x padded_w
// with pad_value (Owlv2ImageProcessor's order: rescale, pad, resize), without materialising the
// padded float image.
struct NdSource {
  const std::uint8_t* data = nullptr;  // h rows of w * channels bytes, row_stride bytes apart
  int h = 0, w = 0, channels = 0;
  std::size_t row_stride = 0;
  double rescale = 1.0;
  int padded_h = 0, padded_w = 0;  // >= h, w
  float pad_value = 0.f;
};

// Returns out_h x out_w x channels float32 values, interleaved (HWC). out_h, out_w >= 1
// (InputError otherwise).
std::vector<float> ndimage_resize(const NdSource& src, int out_h, int out_w);

// scipy.ndimage's 'mirror' boundary: maps any integer index into [0, n).
std::int64_t mirror_index(std::int64_t i, std::int64_t n);

// The normalised Gaussian weights w[0..2r] of scipy.ndimage.gaussian_filter1d(sigma, truncate=4).
std::vector<double> gaussian_kernel1d(double sigma);

}  // namespace lli
