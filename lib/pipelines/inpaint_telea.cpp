// Classical object removal: Telea inpainting inside a dilated mask, composited so that only
// pixels inside the dilated mask change (see lli/inpaint_telea.h).
#include "lli/inpaint_telea.h"

#include <fmt/format.h>

#include <opencv2/imgproc.hpp>
#include <opencv2/photo.hpp>

#include <cmath>

#include "lli/error.h"
#include "lli/log.h"
#include "pipelines/edit_region.h"

namespace lli {

TeleaResult inpaint_telea(const cv::Mat& image, const cv::Mat& mask, const TeleaOptions& options,
                          const std::string& mask_name) {
  if (image.empty() || image.type() != CV_8UC3)
    throw InputError(fmt::format("Telea: expected a non-empty 8-bit BGR image, got OpenCV type {}", image.type()));
  if (mask.empty() || mask.type() != CV_8UC1)
    throw InputError(fmt::format("{}: expected a single-channel 8-bit mask, got OpenCV type {}", mask_name,
                                 mask.type()));
  if (mask.size() != image.size())
    throw InputError(fmt::format("{}: mask is {}x{} but the image is {}x{}", mask_name, mask.cols, mask.rows,
                                 image.cols, image.rows));
  if (options.dilate < 0) throw UsageError(fmt::format("Telea: dilate = {} must be >= 0", options.dilate));
  if (!(std::isfinite(options.radius) && options.radius > 0))
    throw UsageError(fmt::format("Telea: radius = {} must be > 0", options.radius));

  TeleaResult res;
  // non-zero -> 255, grown with the elliptical element (linear time for large radii)
  res.dilated_mask = pipelines::dilate_mask(mask, options.dilate);

  if (cv::countNonZero(res.dilated_mask) == 0) {
    log_info("{}: mask is empty, nothing to remove; the output equals the input", mask_name);
    res.image = image.clone();
    res.empty_mask = true;
    return res;
  }

  cv::Mat filled;
  try {
    cv::inpaint(image, res.dilated_mask, filled, options.radius, cv::INPAINT_TELEA);
  } catch (const cv::Exception& e) {
    throw RuntimeError(fmt::format("Telea inpainting failed: {}", e.err.empty() ? std::string(e.what()) : e.err));
  }
  res.image = image.clone();
  filled.copyTo(res.image, res.dilated_mask);
  return res;
}

}  // namespace lli
