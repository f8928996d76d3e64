// Classical object removal: OpenCV Telea inpainting inside a dilated mask. Torch-free (lli_base).
//
// Steps: mask (binarised: non-zero -> 255) is dilated by `dilate` pixels with an elliptical
// kernel of size 2*dilate+1; cv::inpaint(INPAINT_TELEA, radius) fills it; the result is then
// composited into a copy of the input through the dilated mask, so ONLY pixels inside the
// dilated mask may differ from the input (bit-exact outside).
#pragma once

#include <opencv2/core.hpp>

#include <string>

namespace lli {

struct TeleaOptions {
  int dilate = 5;        // pixels (>= 0); 0 = use the mask as is
  double radius = 5.0;   // cv::inpaint neighbourhood radius (> 0)
};

struct TeleaResult {
  cv::Mat image;          // CV_8UC3, same size as the input
  cv::Mat dilated_mask;   // CV_8UC1 0/255, the region that was filled
  bool empty_mask = false;  // mask had no foreground: image == input (a log line is written)
};

// `image` CV_8UC3 BGR; `mask` CV_8UC1 (any non-zero = remove). `mask_name` names the mask in
// errors. Throws InputError "<mask_name>: mask is WxH but the image is WxH" on a size
// mismatch, InputError for an empty image or wrong mask type; UsageError for dilate < 0 or
// radius <= 0.
TeleaResult inpaint_telea(const cv::Mat& image, const cv::Mat& mask, const TeleaOptions& options = {},
                          const std::string& mask_name = "mask");

}  // namespace lli
