// pipelines/edit_region: the scaled dilation default, feathering, compositing that leaves the
// outside bit-identical, the square context crop (placement, padding, round trip) and move_object.
#include <doctest/doctest.h>

#include <opencv2/imgproc.hpp>

#include "lli/error.h"
#include "pipelines/edit_region.h"

using namespace lli::pipelines;

namespace {

cv::Mat noise_image(cv::Size s, int seed) {
  cv::Mat m(s, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(m, cv::RNG::UNIFORM, 0, 256);
  return m;
}

bool equal(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return false;
  cv::Mat d;
  cv::absdiff(a, b, d);
  return cv::countNonZero(d.reshape(1)) == 0;
}

}  // namespace

TEST_CASE("edit_region: default dilation scales 50 px at 512 with the longer side") {
  CHECK(default_dilate({512, 512}) == 50);
  CHECK(default_dilate({1024, 768}) == 100);
  CHECK(default_dilate({548, 342}) == 54);  // round(53.5)
  CHECK(default_dilate({4, 4}) == 1);        // at least 1
}

TEST_CASE("edit_region: dilate_mask binarises and grows by an ellipse, feather_alpha ramps outside only") {
  cv::Mat m = cv::Mat::zeros(41, 41, CV_8UC1);
  m.at<uchar>(20, 20) = 7;  // any non-zero value is the object
  cv::Mat d0 = dilate_mask(m, 0);
  CHECK(cv::countNonZero(d0) == 1);
  CHECK(d0.at<uchar>(20, 20) == 255);
  cv::Mat d5 = dilate_mask(m, 5);
  CHECK(d5.at<uchar>(20, 25) == 255);
  CHECK(d5.at<uchar>(20, 26) == 0);
  CHECK(d5.at<uchar>(24, 24) == 0);  // an ellipse, not a square
  CHECK_THROWS_AS(dilate_mask(m, -1), lli::UsageError);
  CHECK(m.at<uchar>(20, 20) == 7);  // input untouched

  cv::Mat a = feather_alpha(d5, 4);
  CHECK(a.at<float>(20, 20) == 1.f);
  CHECK(a.at<float>(20, 25) == 1.f);
  CHECK(a.at<float>(20, 27) > 0.f);
  CHECK(a.at<float>(20, 27) < 1.f);
  CHECK(a.at<float>(20, 30) == 0.f);  // 5 px beyond the mask: outside the feather
  cv::Mat b = feather_alpha(d5, 0);
  CHECK(cv::countNonZero(b) == cv::countNonZero(d5));
}

TEST_CASE("edit_region: dilate_mask and its linear sweep give cv::dilate's pixels with the elliptical element") {
  auto reference = [](const cv::Mat& m, int px) {
    cv::Mat bin = m > 0, out;
    if (px == 0) return bin;
    cv::dilate(bin, out, cv::getStructuringElement(cv::MORPH_ELLIPSE, {2 * px + 1, 2 * px + 1}));
    return out;
  };
  // One pixel grows into the element itself (rows of half-width round(sqrt(r^2 - dy^2))).
  for (int r = 0; r <= 60; ++r) {
    cv::Mat dot = cv::Mat::zeros(2 * r + 1, 2 * r + 1, CV_8UC1);
    dot.at<uchar>(r, r) = 1;
    CAPTURE(r);
    CHECK(equal(dilate_mask_sweep(dot, r), reference(dot, r)));
  }
  // Random masks (sparse dots, blobs, touching the border, empty, full) and radii, some larger than
  // the image.
  cv::RNG rng(20261206);
  const cv::Size sizes[] = {{37, 53}, {64, 64}, {97, 41}, {1, 50}, {50, 1}, {23, 7}};
  const int radii[] = {0, 1, 2, 3, 7, 15, 16, 17, 30, 45, 70};
  int cases = 0;
  for (const cv::Size s : sizes)
    for (int kind = 0; kind < 5; ++kind) {
      cv::Mat m = cv::Mat::zeros(s, CV_8UC1);
      if (kind == 0) {  // sparse dots of any non-zero value
        for (int i = 0; i < 6; ++i)
          m.at<uchar>(rng.uniform(0, s.height), rng.uniform(0, s.width)) = rng.uniform(1, 256);
      } else if (kind == 1) {  // blobs
        for (int i = 0; i < 3; ++i)
          cv::ellipse(m, {rng.uniform(0, s.width), rng.uniform(0, s.height)}, {rng.uniform(1, 15), rng.uniform(1, 15)},
                      rng.uniform(0, 180), 0, 360, 255, -1);
      } else if (kind == 2) {  // noise
        rng.fill(m, cv::RNG::UNIFORM, 0, 256);
        m = m > 240;
      } else if (kind == 3) {  // touching the border
        m.row(0).setTo(9);
        m.at<uchar>(s.height - 1, s.width - 1) = 255;
      } else if (kind == 4 && s.area() % 2 == 0) {
        m.setTo(255);
      }  // else: empty
      for (int px : radii) {
        const int w = s.width, h = s.height;
        CAPTURE(w);
        CAPTURE(h);
        CAPTURE(kind);
        CAPTURE(px);
        const cv::Mat ref = reference(m, px);
        CHECK(equal(dilate_mask_sweep(m, px), ref));
        CHECK(equal(dilate_mask(m, px), ref));
        ++cases;
      }
    }
  CHECK(cases == 6 * 5 * 11);
  CHECK_THROWS_AS(dilate_mask_sweep(cv::Mat::zeros(4, 4, CV_8UC1), -1), lli::UsageError);
}

TEST_CASE("edit_region: composite copies the base where alpha is 0 and the patch where it is 1") {
  cv::Mat base = noise_image({30, 20}, 1), patch = noise_image({30, 20}, 2);
  cv::Mat alpha = cv::Mat::zeros(20, 30, CV_32F);
  alpha(cv::Rect(5, 5, 10, 5)) = 1.f;
  alpha(cv::Rect(15, 5, 3, 5)) = 0.5f;
  cv::Mat out = composite(base, patch, alpha);
  cv::Mat zero = alpha == 0, one = alpha == 1;
  cv::Mat d;
  cv::absdiff(out, base, d);
  CHECK(cv::countNonZero(d.reshape(1)) > 0);
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 30; ++x) {
      if (zero.at<uchar>(y, x)) CHECK(out.at<cv::Vec3b>(y, x) == base.at<cv::Vec3b>(y, x));
      if (one.at<uchar>(y, x)) CHECK(out.at<cv::Vec3b>(y, x) == patch.at<cv::Vec3b>(y, x));
    }
  const auto m = out.at<cv::Vec3b>(6, 16), pb = base.at<cv::Vec3b>(6, 16), pp = patch.at<cv::Vec3b>(6, 16);
  for (int c = 0; c < 3; ++c) CHECK(std::abs(2 * m[c] - (pb[c] + pp[c])) <= 1);
  CHECK_THROWS(composite(base, patch, cv::Mat::zeros(20, 30, CV_8U)));
}

TEST_CASE("edit_region: the square crop is centred, shifted inside, capped at the longer side, padded") {
  // Inside a large image: centred on the region, side = region + 2 context.
  SquareCrop c = plan_square_crop({1000, 800}, cv::Rect(400, 300, 100, 60), 50);
  CHECK(c.side == 200);
  CHECK(c.rect == cv::Rect(350, 230, 200, 200));
  CHECK(c.pad_left + c.pad_right + c.pad_top + c.pad_bottom == 0);
  // Near a corner: shifted, not cut.
  c = plan_square_crop({1000, 800}, cv::Rect(0, 0, 40, 40), 30);
  CHECK(c.rect == cv::Rect(0, 0, 100, 100));
  // Wider than the image is tall: the full height, padded to the square.
  c = plan_square_crop({600, 200}, cv::Rect(100, 50, 150, 100), 40);
  CHECK(c.side == 230);
  CHECK(c.rect.height == 200);
  CHECK(c.rect.width == 230);
  CHECK(c.pad_top + c.pad_bottom == 30);
  // Capped at the longer side: a square image stays the whole image, unpadded.
  c = plan_square_crop({64, 64}, cv::Rect(6, 12, 55, 46), 32);
  CHECK(c.side == 64);
  CHECK(c.rect == cv::Rect(0, 0, 64, 64));
  CHECK(c.pad_left + c.pad_right + c.pad_top + c.pad_bottom == 0);
  CHECK_THROWS_AS(plan_square_crop({64, 64}, cv::Rect(0, 0, 0, 5), 4), lli::InputError);
  CHECK_THROWS_AS(plan_square_crop({64, 64}, cv::Rect(0, 0, 5, 5), -1), lli::UsageError);

  // Round trip at the crop's own size is exact; to_model maps the crop's corner to 0.
  cv::Mat img = noise_image({600, 200}, 3);
  c = plan_square_crop(img.size(), cv::Rect(100, 50, 150, 100), 40);
  cv::Mat sq = extract_square(img, c, c.side);
  CHECK(sq.size() == cv::Size(c.side, c.side));
  CHECK(equal(restore_square(sq, c), img(c.rect)));
  const cv::Rect2d m = to_model(cv::Rect2d(c.rect.x, c.rect.y, 10, 10), c, 2 * c.side);
  CHECK(m.x == doctest::Approx(2.0 * c.pad_left));
  CHECK(m.y == doctest::Approx(2.0 * c.pad_top));
  CHECK(m.width == doctest::Approx(20));
  CHECK(extract_square(img, c, 64).size() == cv::Size(64, 64));
}

TEST_CASE("edit_region: move_object moves the pixels, fills the hole, leaves the rest, and out of frame removes") {
  cv::Mat img = noise_image({120, 80}, 4);
  cv::Mat mask = cv::Mat::zeros(80, 120, CV_8UC1);
  cv::rectangle(mask, cv::Rect(20, 20, 20, 20), cv::Scalar(255), cv::FILLED);
  int fills = 0;
  FillFn fill = [&](const cv::Mat& bgr, const cv::Mat& hole) {
    ++fills;
    cv::Mat out = bgr.clone();
    out.setTo(cv::Scalar(1, 2, 3), hole);
    out(cv::Rect(100, 0, 20, 20)).setTo(cv::Scalar(9, 9, 9));  // outside the hole: must be ignored
    return out;
  };
  MovePlan p;
  p.from = cv::Rect(20, 20, 20, 20);
  p.to = cv::Rect(70, 40, 20, 20);
  p.dilate = 2;
  p.feather = 0;
  MoveResult r = move_object(img, mask, p, fill);
  CHECK(fills == 1);
  CHECK(equal(r.image(p.to), img(p.from)));
  CHECK(r.image.at<cv::Vec3b>(30, 30) == cv::Vec3b(1, 2, 3));
  cv::Mat keep = ~r.changed;
  cv::Mat d;
  cv::absdiff(r.image, img, d);
  d.setTo(cv::Scalar::all(0), r.changed);
  CHECK(cv::countNonZero(d.reshape(1)) == 0);
  CHECK(cv::countNonZero(keep) == 120 * 80 - cv::countNonZero(r.changed));
  CHECK(r.to_clipped == p.to);

  // Scaled into a larger box.
  p.to = cv::Rect(60, 30, 40, 40);
  r = move_object(img, mask, p, fill);
  CHECK(cv::countNonZero(r.placed) == 40 * 40);
  // Partly out of the frame: clipped.
  p.to = cv::Rect(110, 70, 20, 20);
  r = move_object(img, mask, p, fill);
  CHECK(r.to_clipped == cv::Rect(110, 70, 10, 10));
  CHECK(equal(r.image(r.to_clipped), img(cv::Rect(20, 20, 10, 10))));
  // Entirely out: removed (only the hole is filled).
  p.to = cv::Rect(200, 10, 20, 20);
  r = move_object(img, mask, p, fill);
  CHECK(r.to_clipped.area() == 0);
  CHECK(r.placed.empty());
  CHECK(cv::countNonZero(r.changed) == cv::countNonZero(dilate_mask(mask, 2)));
  // Without paste the background alone (for --regenerate).
  p.to = cv::Rect(70, 40, 20, 20);
  r = move_object(img, mask, p, fill, /*paste=*/false);
  CHECK(equal(r.image, r.background));
  CHECK(parse_blend_mode("poisson") == BlendMode::poisson);
  CHECK_THROWS_AS(parse_blend_mode("screen"), lli::UsageError);
}
