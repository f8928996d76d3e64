// Classical interactive segmentation with OpenCV GrabCut (see lli/grabcut.h for the semantics).
#include "lli/grabcut.h"

#include <fmt/format.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

#include "lli/error.h"
#include "lli/log.h"

namespace lli {

namespace {

constexpr int kShift = 4;  // sub-pixel drawing: coordinates in 1/16 px
constexpr double kOne = 1 << kShift;
constexpr double kMinBand = 15.0;  // px at full resolution

cv::Point fixed(const cv::Point2d& p, double scale) {
  return {int(std::lround(p.x * scale * kOne)), int(std::lround(p.y * scale * kOne))};
}

// Draws a polyline of diameter `width` (already scaled) with round caps and joins.
void draw_stroke(cv::Mat& m, const std::vector<cv::Point2d>& pts, double scale, double width, int value) {
  const int thickness = std::max(1, int(std::lround(width)));
  if (pts.size() == 1 || thickness <= 1) {
    for (const auto& p : pts)
      cv::circle(m, fixed(p, scale), std::max(0, int(std::lround(width / 2 * kOne))), cv::Scalar(value), cv::FILLED,
                 cv::LINE_8, kShift);
  }
  for (size_t i = 1; i < pts.size(); ++i)
    cv::line(m, fixed(pts[i - 1], scale), fixed(pts[i], scale), cv::Scalar(value), thickness, cv::LINE_8, kShift);
}

void draw_disc(cv::Mat& m, const cv::Point2d& c, double scale, double radius, int value) {
  cv::circle(m, fixed(c, scale), std::max(1, int(std::lround(radius * kOne))), cv::Scalar(value), cv::FILLED,
             cv::LINE_8, kShift);
}

// GrabCut initial mask at `scale` (GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD).
cv::Mat build_init_mask(cv::Size size, const GrabCutSeeds& seeds, const cv::Rect& box_full, bool has_box,
                        double scale, double point_r, const GrabCutOptions& opt) {
  cv::Mat mask;
  if (has_box) {
    mask = cv::Mat(size, CV_8UC1, cv::Scalar(cv::GC_BGD));
    const cv::Rect r(int(std::floor(box_full.x * scale)), int(std::floor(box_full.y * scale)),
                     std::max(1, int(std::ceil(box_full.width * scale))),
                     std::max(1, int(std::ceil(box_full.height * scale))));
    mask(r & cv::Rect(0, 0, size.width, size.height)).setTo(cv::GC_PR_FGD);
  } else {
    mask = cv::Mat(size, CV_8UC1, cv::Scalar(cv::GC_PR_BGD));
    // Probable-foreground band around the positive seeds.
    for (const auto& s : seeds.strokes) {
      if (!s.positive) continue;
      const double d = std::max(kMinBand, opt.band_factor * s.width);
      draw_stroke(mask, s.points, scale, (s.width + 2 * d) * scale, cv::GC_PR_FGD);
    }
    for (const auto& p : seeds.points) {
      if (!p.positive) continue;
      const double d = std::max(kMinBand, opt.band_factor * 2 * point_r);
      draw_disc(mask, p.p, scale, (point_r + d) * scale, cv::GC_PR_FGD);
    }
  }
  // Sure seeds override the box and the band: negatives first, then positives.
  for (int pass = 0; pass < 2; ++pass) {
    const bool positive = pass == 1;
    const int value = positive ? cv::GC_FGD : cv::GC_BGD;
    for (const auto& s : seeds.strokes)
      if (s.positive == positive) draw_stroke(mask, s.points, scale, s.width * scale, value);
    for (const auto& p : seeds.points)
      if (p.positive == positive) draw_disc(mask, p.p, scale, point_r * scale, value);
  }
  return mask;
}

bool finite(const cv::Point2d& p) { return std::isfinite(p.x) && std::isfinite(p.y); }

}  // namespace

GrabCutResult run_grabcut(const cv::Mat& image_in, const GrabCutSeeds& seeds, const GrabCutOptions& opt) {
  if (image_in.empty()) throw InputError("GrabCut: the image is empty");
  if (opt.iterations < 1) throw UsageError(fmt::format("GrabCut: iterations = {} must be >= 1", opt.iterations));
  cv::Mat image;
  if (image_in.type() == CV_8UC3) image = image_in;
  else if (image_in.type() == CV_8UC1) cv::cvtColor(image_in, image, cv::COLOR_GRAY2BGR);
  else if (image_in.type() == CV_8UC4) cv::cvtColor(image_in, image, cv::COLOR_BGRA2BGR);
  else throw InputError(fmt::format("GrabCut: expected an 8-bit image, got OpenCV type {}", image_in.type()));
  const int W = image.cols, H = image.rows;

  bool has_positive = false;
  for (size_t i = 0; i < seeds.strokes.size(); ++i) {
    const auto& s = seeds.strokes[i];
    if (s.points.empty()) throw InputError(fmt::format("GrabCut: strokes[{}] has no points", i));
    if (!(std::isfinite(s.width) && s.width > 0))
      throw InputError(fmt::format("GrabCut: strokes[{}].width = {} must be > 0", i, s.width));
    for (size_t j = 0; j < s.points.size(); ++j)
      if (!finite(s.points[j])) throw InputError(fmt::format("GrabCut: strokes[{}].points[{}] is not finite", i, j));
    has_positive |= s.positive;
  }
  for (size_t i = 0; i < seeds.points.size(); ++i) {
    if (!finite(seeds.points[i].p)) throw InputError(fmt::format("GrabCut: points[{}] is not finite", i));
    has_positive |= seeds.points[i].positive;
  }
  cv::Rect box_full;
  const bool has_box = seeds.box.has_value();
  if (has_box) {
    const cv::Rect2d& b = *seeds.box;
    if (!(std::isfinite(b.x) && std::isfinite(b.y) && std::isfinite(b.width) && std::isfinite(b.height)))
      throw InputError("GrabCut: box is not finite");
    const int x0 = int(std::floor(std::min(b.x, b.x + b.width))), y0 = int(std::floor(std::min(b.y, b.y + b.height)));
    const int x1 = int(std::ceil(std::max(b.x, b.x + b.width))), y1 = int(std::ceil(std::max(b.y, b.y + b.height)));
    box_full = cv::Rect(cv::Point(x0, y0), cv::Point(std::max(x1, x0 + 1), std::max(y1, y0 + 1))) & cv::Rect(0, 0, W, H);
    if (box_full.empty())
      throw InputError(fmt::format("GrabCut: box ({}, {}, {}, {}) lies outside the image ({}x{})", b.x, b.y,
                                   b.x + b.width, b.y + b.height, W, H));
  }
  if (!has_positive && !has_box) throw InputError("GrabCut needs a box or a positive stroke/point");

  const double point_r = opt.point_radius > 0 ? opt.point_radius : std::max(3.0, 0.01 * std::min(W, H));

  // Working scale.
  GrabCutResult res;
  const int longest = std::max(W, H);
  cv::Mat work = image;
  if (opt.max_side > 0 && longest > opt.max_side) {
    res.scale = double(opt.max_side) / longest;
    res.downscaled = true;
    const cv::Size ws(std::max(1, int(std::lround(W * res.scale))), std::max(1, int(std::lround(H * res.scale))));
    cv::resize(image, work, ws, 0, 0, cv::INTER_AREA);
  }
  const double sx = double(work.cols) / W;  // ~= scale, exact for the rounded size

  cv::Mat gc = build_init_mask(work.size(), seeds, box_full, has_box, sx, point_r, opt);
  const cv::Mat init_work = gc.clone();

  // GrabCut's GMMs need samples on both sides; otherwise keep the initial labelling.
  cv::Mat fg_bits = (gc & 1);
  const int n_fg = cv::countNonZero(fg_bits), n_bg = int(gc.total()) - n_fg;
  if (n_fg >= 10 && n_bg >= 10) {
    cv::Mat bgd_model, fgd_model;
    try {
      cv::grabCut(work, gc, cv::Rect(), bgd_model, fgd_model, opt.iterations, cv::GC_INIT_WITH_MASK);
    } catch (const cv::Exception& e) {
      throw RuntimeError(fmt::format("GrabCut failed: {}", e.err.empty() ? std::string(e.what()) : e.err));
    }
  } else {
    log_info("grabcut: {} foreground / {} background seed pixels, keeping the initial labelling", n_fg, n_bg);
  }
  cv::Mat result;  // GC_FGD (1) and GC_PR_FGD (3) are odd -> 255
  cv::compare(gc & 1, 0, result, cv::CMP_NE);

  // Full-resolution sure seeds (for upscaling and the component filter).
  cv::Mat init_full = res.downscaled ? build_init_mask(image.size(), seeds, box_full, has_box, 1.0, point_r, opt)
                                     : init_work;
  if (res.downscaled) {
    cv::Mat up;
    cv::resize(result, up, image.size(), 0, 0, cv::INTER_LINEAR);
    cv::threshold(up, result, 127, 255, cv::THRESH_BINARY);
    result.setTo(255, init_full == cv::GC_FGD);
    result.setTo(0, init_full == cv::GC_BGD);
  }

  if (opt.keep_seeded_components && has_positive) {
    cv::Mat labels;
    const int n = cv::connectedComponents(result, labels, 8, CV_32S);
    std::vector<char> keep(size_t(n), 0);
    const cv::Mat seed = (init_full == cv::GC_FGD) & (result != 0);
    for (int y = 0; y < seed.rows; ++y) {
      const uchar* s = seed.ptr<uchar>(y);
      const int* l = labels.ptr<int>(y);
      for (int x = 0; x < seed.cols; ++x)
        if (s[x]) keep[size_t(l[x])] = 1;
    }
    keep[0] = 0;
    for (int y = 0; y < result.rows; ++y) {
      uchar* r = result.ptr<uchar>(y);
      const int* l = labels.ptr<int>(y);
      for (int x = 0; x < result.cols; ++x)
        if (r[x] && !keep[size_t(l[x])]) r[x] = 0;
    }
  }

  res.mask = result;
  res.area = cv::countNonZero(result);
  res.bbox = res.area > 0 ? cv::boundingRect(result) : cv::Rect();
  log_debug("grabcut: {}x{} scale {:.3f}, {} iterations, area {} px, bbox ({}, {}, {}x{})", W, H, res.scale,
            opt.iterations, res.area, res.bbox.x, res.bbox.y, res.bbox.width, res.bbox.height);
  return res;
}

}  // namespace lli
