// The rescale + normalize step that Hugging Face image processors share (CLIPImageProcessor,
// SamImageProcessor): numpy's float64 rescale cast to float32, then float32 (v - mean) / std.
#pragma once

#include <opencv2/core.hpp>

#include <vector>

namespace lli::models {

struct PixelNormalize {
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> mean, std;  // 3 values each (used when do_normalize)
};

// rgb: 8-bit 3-channel [h, w] -> the top-left h x w corner of the float planes out[3][H][W]
// (H >= h, W >= w; the rest of out is left as it is, e.g. zero padding).
void rescale_normalize_rgb(const cv::Mat& rgb, const PixelNormalize& n, float* out, int H, int W);

}  // namespace lli::models
