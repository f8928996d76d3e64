// Exact re-implementation of Pillow's Image.resize for 8-bit images (torch-free), and the
// centre crop of transformers' image processors. Used by the LLaVA (CLIPImageProcessor) and SAM
// preprocessing so that pixel values match the Python reference bit for bit.
//
// Pillow semantics reproduced (src/libImaging/Resample.c, Geometry.c, _imaging.c `_resize`):
// - NEAREST: affine scale with source coordinate (x + 0.5) * in/out accumulated in double,
//   truncated (Pillow's ImagingScaleAffine).
// - BOX / BILINEAR / HAMMING / BICUBIC (a = -0.5) / LANCZOS (a = 3): separable two-pass resampling,
//   horizontal pass first, then vertical; filter support scaled by the downscale factor
//   (antialiasing); coefficients normalised to sum 1, converted to fixed point with
//   PRECISION_BITS = 22 (rounded half away from zero), accumulated in int32 from 1 << 21, and
//   clipped to 0..255 after EACH pass. A pass whose size does not change is skipped.
// - Same size: a copy.
// Each channel is processed independently (as Pillow does for L, RGB, RGBX, CMYK). Pillow's
// RGBA/LA premultiplication is not reproduced: pass 1- or 3-channel images for exact parity.
#pragma once

#include <opencv2/core.hpp>

#include <string>

namespace lli {

// Values are PIL.Image.Resampling codes (what image processors store as "resample").
enum class PilResample { nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

// From a PIL code; throws ModelError "<where>: unknown PIL resample code 7 (0..5)".
PilResample pil_resample_from_code(int code, const std::string& where);
const char* pil_resample_name(PilResample r);  // "nearest", "bicubic", ...

// src: CV_8UC1..CV_8UC4 (any channel order; channels are independent). Returns a new
// height x width image of the same type. width, height >= 1 (InputError otherwise).
cv::Mat pil_resize(const cv::Mat& src, int width, int height, PilResample filter);

// transformers.image_transforms.center_crop: top = (H - h) // 2, left = (W - w) // 2 (floor);
// when the crop is larger than the image, the image is first zero-padded centred
// (pad before = ceil((new - old) / 2)). Returns a new height x width image of src's type.
cv::Mat center_crop(const cv::Mat& src, int height, int width);

}  // namespace lli
