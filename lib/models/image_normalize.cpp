#include "models/image_normalize.h"

#include <cstdint>
#include <string>

#include "lli/error.h"

namespace lli::models {

void rescale_normalize_rgb(const cv::Mat& rgb, const PixelNormalize& n, float* out, int H, int W) {
  if (rgb.type() != CV_8UC3 || rgb.rows > H || rgb.cols > W)
    throw RuntimeError("rescale_normalize_rgb: expected an 8-bit 3-channel image within " + std::to_string(W) + "x" +
                       std::to_string(H));
  if (n.do_normalize && (n.mean.size() != 3 || n.std.size() != 3))
    throw RuntimeError("rescale_normalize_rgb: image_mean and image_std need 3 values");
  float mean[3] = {0, 0, 0}, stdv[3] = {1, 1, 1};
  if (n.do_normalize)
    for (int c = 0; c < 3; ++c) {
      mean[c] = static_cast<float>(n.mean[static_cast<std::size_t>(c)]);
      stdv[c] = static_cast<float>(n.std[static_cast<std::size_t>(c)]);
    }
  for (int y = 0; y < rgb.rows; ++y) {
    const std::uint8_t* row = rgb.ptr<std::uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      for (int c = 0; c < 3; ++c) {
        float v = n.do_rescale ? static_cast<float>(static_cast<double>(row[x * 3 + c]) * n.rescale_factor)
                               : static_cast<float>(row[x * 3 + c]);
        if (n.do_normalize) v = (v - mean[c]) / stdv[c];
        out[(static_cast<std::size_t>(c) * H + y) * W + x] = v;
      }
    }
  }
}

}  // namespace lli::models
