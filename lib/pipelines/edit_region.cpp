// Ref: IOPaint iopaint/model/base.py (crop strategy), OpenCV photo module (seamlessClone).
#include "pipelines/edit_region.h"

#include <opencv2/imgproc.hpp>
#include <opencv2/photo.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lli/error.h"

namespace lli::pipelines {

namespace {

void require_mask(const cv::Mat& m, const char* what) {
  if (m.empty() || m.type() != CV_8UC1) throw InputError(std::string(what) + ": expected a non-empty 8-bit 1-channel mask");
}

// Half-width of row dy of OpenCV's elliptical structuring element of size 2r+1: the row spans
// |dx| <= round(sqrt(r^2 - dy^2)). The expression is OpenCV's own (getStructuringElement, 4.x), so
// the value is bit for bit the same (the unit tests compare dilate_mask with cv::dilate).
int ellipse_row_half_width(int r, int dy) {
  const double rr = static_cast<double>(r) * r;
  return cvRound(r * std::sqrt((rr - static_cast<double>(dy) * dy) * (1.0 / rr)));
}

// cv::dilate(bin, out, getStructuringElement(MORPH_ELLIPSE, {2r+1, 2r+1})), same pixels, in
// O(pixels) whatever r. The element is a stack of centred rows whose half-width w(dy) shrinks as
// |dy| grows, so an output pixel (x, y) is set iff for some column x' the mask pixel nearest to
// row y in column x' (vertical distance g <= r) has |x - x'| <= w(g). Pass 1 stores the distance
// to the nearest mask pixel above (or on) each pixel; pass 2 goes up from the bottom with the one
// below, and marks in each row the union of the spans [x' - w(g), x' + w(g)] with one sweep from
// each side. Pixels outside the image count as not set, as with cv::dilate's default border.
// Dist: the type of the stored distances (uint16_t when min(r, rows - 1) + 1 fits: half the memory).
template <typename Dist>
void dilate_ellipse_into(const cv::Mat& bin, int r, cv::Mat& out) {
  const int rows = bin.rows, cols = bin.cols;
  const int gmax = std::min(r, rows - 1);  // larger vertical distances cannot occur
  const int none = gmax + 1;               // "no mask pixel within gmax rows"
  std::vector<int> w(gmax + 1);
  for (int g = 0; g <= gmax; ++g) w[g] = std::min(ellipse_row_half_width(r, g), cols);  // no overflow in x + w
  std::vector<Dist> up(static_cast<size_t>(rows) * cols);
  std::vector<int> run(cols, none);
  for (int y = 0; y < rows; ++y) {
    const uchar* b = bin.ptr<uchar>(y);
    Dist* u = &up[static_cast<size_t>(y) * cols];
    for (int x = 0; x < cols; ++x) u[x] = static_cast<Dist>(run[x] = b[x] ? 0 : std::min(run[x] + 1, none));
  }
  std::fill(run.begin(), run.end(), none);
  std::vector<int> half(cols);  // half-width of the span centred on each column in this row; -1: none
  for (int y = rows - 1; y >= 0; --y) {
    const uchar* b = bin.ptr<uchar>(y);
    const Dist* u = &up[static_cast<size_t>(y) * cols];
    uchar* o = out.ptr<uchar>(y);
    for (int x = 0; x < cols; ++x) {
      run[x] = b[x] ? 0 : std::min(run[x] + 1, none);
      const int g = std::min(static_cast<int>(u[x]), run[x]);
      half[x] = g < none ? w[g] : -1;
    }
    int right = -1;  // the furthest right end of a span centred at or left of x
    for (int x = 0; x < cols; ++x) {
      if (half[x] >= 0) right = std::max(right, x + half[x]);
      o[x] = right >= x ? 255 : 0;
    }
    int left = cols;  // the furthest left end of a span centred at or right of x
    for (int x = cols - 1; x >= 0; --x) {
      if (half[x] >= 0) left = std::min(left, x - half[x]);
      if (left <= x) o[x] = 255;
    }
  }
}

// Works on the mask's bounding box grown by r (clamped to the image): nothing outside it can be set.
cv::Mat dilate_ellipse(const cv::Mat& bin, int r) {
  cv::Mat out = cv::Mat::zeros(bin.size(), CV_8UC1);
  const cv::Rect box = cv::boundingRect(bin);
  if (box.empty()) return out;
  const int x0 = std::max(0, box.x - r), y0 = std::max(0, box.y - r);
  const int x1 = static_cast<int>(std::min<long long>(bin.cols, 0LL + box.x + box.width + r));
  const int y1 = static_cast<int>(std::min<long long>(bin.rows, 0LL + box.y + box.height + r));
  const cv::Rect roi(x0, y0, x1 - x0, y1 - y0);
  cv::Mat sub = out(roi);
  if (std::min(r, roi.height - 1) + 1 <= 0xFFFF)
    dilate_ellipse_into<uint16_t>(bin(roi), r, sub);
  else
    dilate_ellipse_into<int>(bin(roi), r, sub);
  return out;
}

}  // namespace

int default_dilate(cv::Size image) {
  const double side = std::max(image.width, image.height);
  return std::max(1, static_cast<int>(std::lround(50.0 * side / 512.0)));
}

// cv::dilate with the elliptical element costs about pixels x px^2, the sweep about pixels x 1, so
// small radii keep cv::dilate. 4000x3000 mask with a blob, best of 3 after a warm-up, on the 2-core
// VM shared with a fuzzer (OpenCV 4.6, 2 threads), cv::dilate vs sweep: px 1: 1.8 vs 15 ms; px 5:
// 17 vs 23 ms; px 8: 23 vs 16 ms; px 15: 73 vs 16 ms; px 50: 755 vs 18 ms; px 428 (default_dilate of a
// 4384-px side, 12.8 MP): 85 s (one run) vs 32 ms. 512x512, px 50: 18.6 vs 0.6 ms. Both give the same pixels.
constexpr int kDilateSweepFrom = 8;

namespace {

cv::Mat checked_binary(const cv::Mat& mask, int px, const char* what) {
  require_mask(mask, what);
  if (px < 0) throw UsageError("--dilate must be >= 0, got " + std::to_string(px));
  return mask > 0;  // 0/255
}

}  // namespace

cv::Mat dilate_mask(const cv::Mat& mask, int px) {
  cv::Mat bin = checked_binary(mask, px, "dilate_mask");
  if (px == 0) return bin;
  if (px >= kDilateSweepFrom) return dilate_ellipse(bin, px);
  cv::Mat out;
  cv::dilate(bin, out, cv::getStructuringElement(cv::MORPH_ELLIPSE, {2 * px + 1, 2 * px + 1}));
  return out;
}

cv::Mat dilate_mask_sweep(const cv::Mat& mask, int px) {
  cv::Mat bin = checked_binary(mask, px, "dilate_mask_sweep");
  return px == 0 ? bin : dilate_ellipse(bin, px);
}

cv::Mat feather_alpha(const cv::Mat& mask, int feather) {
  require_mask(mask, "feather_alpha");
  cv::Mat bin = mask > 0;
  cv::Mat alpha;
  if (feather <= 0) {
    bin.convertTo(alpha, CV_32F, 1.0 / 255.0);
    return alpha;
  }
  cv::Mat outside = bin == 0, dist;  // distance of each outside pixel to the mask
  cv::distanceTransform(outside, dist, cv::DIST_L2, cv::DIST_MASK_PRECISE, CV_32F);
  alpha = 1.0f - dist / static_cast<float>(feather + 1);  // 1 on the mask, > 0 up to `feather` px away
  cv::threshold(alpha, alpha, 0.0, 0.0, cv::THRESH_TOZERO);
  return alpha;
}

cv::Mat composite(const cv::Mat& base, const cv::Mat& patch, const cv::Mat& alpha) {
  if (base.type() != CV_8UC3 || patch.type() != CV_8UC3 || alpha.type() != CV_32FC1 || base.size() != patch.size() ||
      base.size() != alpha.size())
    throw RuntimeError("composite: expects two CV_8UC3 images and a CV_32FC1 alpha of one size");
  cv::Mat out = base.clone();
  for (int y = 0; y < base.rows; ++y) {
    const float* a = alpha.ptr<float>(y);
    const cv::Vec3b* p = patch.ptr<cv::Vec3b>(y);
    cv::Vec3b* o = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < base.cols; ++x) {
      if (a[x] <= 0.f) continue;
      if (a[x] >= 1.f) {
        o[x] = p[x];
        continue;
      }
      for (int c = 0; c < 3; ++c)
        o[x][c] = cv::saturate_cast<uchar>(std::lround(a[x] * p[x][c] + (1.f - a[x]) * o[x][c]));
    }
  }
  return out;
}

cv::Mat nonzero_mask(const cv::Mat& m) { return m > 0; }

SquareCrop plan_square_crop(cv::Size image, const cv::Rect& roi, int context) {
  if (image.width <= 0 || image.height <= 0) throw InputError("empty image");
  if (roi.width <= 0 || roi.height <= 0) throw InputError("the edit region is empty");
  if (context < 0) throw UsageError("--context must be >= 0, got " + std::to_string(context));
  SquareCrop c;
  // Never larger than the image's longer side: padding beyond it adds no context.
  c.side = std::min(std::max(roi.width, roi.height) + 2 * context, std::max(image.width, image.height));
  c.side = std::max(c.side, std::max(roi.width, roi.height));
  auto place = [&](int lo, int len, int limit, int& start, int& extent, int& pad_lo, int& pad_hi) {
    if (c.side >= limit) {  // the whole dimension, padded to the side
      start = 0;
      extent = limit;
      pad_lo = (c.side - limit) / 2;
      pad_hi = c.side - limit - pad_lo;
      return;
    }
    start = lo + len / 2 - c.side / 2;  // centred, then shifted inside
    start = std::clamp(start, 0, limit - c.side);
    extent = c.side;
  };
  place(roi.x, roi.width, image.width, c.rect.x, c.rect.width, c.pad_left, c.pad_right);
  place(roi.y, roi.height, image.height, c.rect.y, c.rect.height, c.pad_top, c.pad_bottom);
  return c;
}

cv::Mat extract_square(const cv::Mat& img, const SquareCrop& crop, int model, bool is_mask) {
  cv::Mat sq;
  cv::copyMakeBorder(img(crop.rect), sq, crop.pad_top, crop.pad_bottom, crop.pad_left, crop.pad_right,
                     cv::BORDER_REPLICATE);
  if (sq.cols == model && sq.rows == model) return sq.clone();
  cv::Mat out;
  const int interp = is_mask ? cv::INTER_NEAREST : (model < sq.cols ? cv::INTER_AREA : cv::INTER_CUBIC);
  cv::resize(sq, out, {model, model}, 0, 0, interp);
  return out;
}

cv::Mat restore_square(const cv::Mat& model_out, const SquareCrop& crop) {
  cv::Mat sq;
  if (model_out.cols == crop.side && model_out.rows == crop.side)
    sq = model_out;
  else
    cv::resize(model_out, sq, {crop.side, crop.side}, 0, 0, crop.side < model_out.cols ? cv::INTER_AREA : cv::INTER_CUBIC);
  return sq(cv::Rect(crop.pad_left, crop.pad_top, crop.rect.width, crop.rect.height)).clone();
}

cv::Rect2d to_model(const cv::Rect2d& r, const SquareCrop& crop, int model) {
  const double s = static_cast<double>(model) / crop.side;
  const double ox = crop.rect.x - crop.pad_left, oy = crop.rect.y - crop.pad_top;
  return {(r.x - ox) * s, (r.y - oy) * s, r.width * s, r.height * s};
}

BlendMode parse_blend_mode(const std::string& s) {
  if (s == "alpha") return BlendMode::alpha;
  if (s == "poisson") return BlendMode::poisson;
  throw UsageError("--blend '" + s + "': expected alpha or poisson");
}

const char* blend_mode_name(BlendMode b) { return b == BlendMode::alpha ? "alpha" : "poisson"; }

MoveResult move_object(const cv::Mat& bgr, const cv::Mat& mask, const MovePlan& plan, const FillFn& fill, bool paste) {
  if (bgr.type() != CV_8UC3) throw InputError("move: expected an 8-bit BGR image");
  require_mask(mask, "move");
  if (mask.size() != bgr.size()) throw InputError("move: the mask and the image differ in size");
  if (plan.from.area() <= 0 || plan.to.width <= 0 || plan.to.height <= 0) throw InputError("move: empty object box");
  MoveResult r;
  r.hole = dilate_mask(mask, plan.dilate);
  r.background = cv::countNonZero(r.hole) ? fill(bgr, r.hole) : bgr.clone();
  if (r.background.size() != bgr.size() || r.background.type() != CV_8UC3)
    throw RuntimeError("move: the hole filler returned an image of another size or type");
  // Pixels outside the hole stay the input's, whatever the filler did there.
  r.background = composite(bgr, r.background, feather_alpha(r.hole, 0));
  r.image = r.background.clone();
  r.changed = r.hole.clone();
  const cv::Rect frame(0, 0, bgr.cols, bgr.rows);
  r.to_clipped = plan.to & frame;
  if (!paste || r.to_clipped.area() == 0) return r;

  // The object (box pixels + mask) scaled to the target box.
  cv::Mat obj = bgr(plan.from), obj_mask = mask(plan.from) > 0;
  if (plan.to.size() != plan.from.size()) {
    cv::resize(obj, obj, plan.to.size(), 0, 0, cv::INTER_CUBIC);
    cv::resize(obj_mask, obj_mask, plan.to.size(), 0, 0, cv::INTER_NEAREST);
  }
  // Full-frame layers: the object placed at `to`, clipped.
  cv::Mat layer = r.background.clone(), placed = cv::Mat::zeros(bgr.size(), CV_8UC1);
  const cv::Rect src(r.to_clipped.x - plan.to.x, r.to_clipped.y - plan.to.y, r.to_clipped.width, r.to_clipped.height);
  obj(src).copyTo(layer(r.to_clipped));
  obj_mask(src).copyTo(placed(r.to_clipped));
  r.placed = placed;
  if (cv::countNonZero(placed) == 0) return r;

  const bool inner = r.to_clipped.x > 1 && r.to_clipped.y > 1 && r.to_clipped.br().x < bgr.cols - 1 &&
                     r.to_clipped.br().y < bgr.rows - 1;
  cv::Mat alpha = feather_alpha(placed, plan.feather);
  if (plan.blend == BlendMode::poisson && inner) {
    // seamlessClone: the object's gradients with the background's boundary values, inside the
    // (dilated) object mask only.
    cv::Mat clone_mask = dilate_mask(placed, std::max(1, plan.feather));
    const cv::Rect mb = cv::boundingRect(clone_mask) & frame;
    const cv::Point centre(mb.x + mb.width / 2, mb.y + mb.height / 2);
    cv::Mat blended;
    cv::seamlessClone(layer(mb), r.background, clone_mask(mb), centre, blended, cv::NORMAL_CLONE);
    r.image = composite(r.background, blended, feather_alpha(clone_mask, 0));
    r.changed = r.changed | clone_mask;
  } else {
    r.image = composite(r.background, layer, alpha);
    r.changed = r.changed | nonzero_mask(alpha);
  }
  return r;
}

}  // namespace lli::pipelines
