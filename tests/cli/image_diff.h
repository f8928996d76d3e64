// Pixel comparisons shared by the CLI tests (lli-generate, lli-edit outputs against references).
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <filesystem>

#include "test_util.h"

namespace lli::test {

inline cv::Mat load_image(const std::filesystem::path& p, int flags = cv::IMREAD_COLOR) {
  cv::Mat m = cv::imread(p.string(), flags);
  REQUIRE_MESSAGE(!m.empty(), p.string());
  return m;
}

// Largest per-channel |a - b| (8-bit BGR) over the pixels where `where` is non-zero (all pixels:
// empty `where`).
inline int max_diff(const cv::Mat& a, const cv::Mat& b, const cv::Mat& where = cv::Mat()) {
  REQUIRE(a.size() == b.size());
  cv::Mat d;
  cv::absdiff(a, b, d);
  int mx = 0;
  for (int y = 0; y < d.rows; ++y)
    for (int x = 0; x < d.cols; ++x) {
      if (!where.empty() && !where.at<uchar>(y, x)) continue;
      const auto& v = d.at<cv::Vec3b>(y, x);
      mx = std::max({mx, int(v[0]), int(v[1]), int(v[2])});
    }
  return mx;
}

inline int max_pixel_diff(const std::filesystem::path& a, const std::filesystem::path& b) {
  return max_diff(load_image(a), load_image(b));
}

// Pixels of `a` and `b` that differ (any channel), as a count.
inline int count_changed(const cv::Mat& a, const cv::Mat& b, const cv::Mat& where = cv::Mat()) {
  int n = 0;
  for (int y = 0; y < a.rows; ++y)
    for (int x = 0; x < a.cols; ++x)
      if ((where.empty() || where.at<uchar>(y, x)) && a.at<cv::Vec3b>(y, x) != b.at<cv::Vec3b>(y, x)) ++n;
  return n;
}

}  // namespace lli::test
