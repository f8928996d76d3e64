// Classical backends: GrabCut segmentation and Telea removal.
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <random>

#include "lli/error.h"
#include "lli/grabcut.h"
#include "lli/image.h"
#include "lli/inpaint_telea.h"
#include "test_util.h"

using namespace lli;

namespace {

// The ball in shared/images/messi5.jpg (548x342): centre (362, 312), radius ~24 px
// (x 338..387, y 289..336), found by inspecting the image.
const cv::Point2d kBallCentre(362, 312);
constexpr double kBallRadius = 24;

// A noisy textured background with a dark disc of radius r at c.
cv::Mat disc_scene(cv::Size size, cv::Point c, int r, unsigned seed = 7) {
  cv::Mat img(size, CV_8UC3);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-12, 12);
  for (int y = 0; y < size.height; ++y)
    for (int x = 0; x < size.width; ++x) {
      const int b = 150 + (x * 40) / size.width;
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(cv::saturate_cast<uchar>(b + noise(rng)),
                                          cv::saturate_cast<uchar>(200 + noise(rng)),
                                          cv::saturate_cast<uchar>(120 + noise(rng)));
    }
  cv::Mat disc(size, CV_8UC1, cv::Scalar(0));
  cv::circle(disc, c, r, cv::Scalar(255), cv::FILLED);
  for (int y = 0; y < size.height; ++y)
    for (int x = 0; x < size.width; ++x)
      if (disc.at<uchar>(y, x))
        img.at<cv::Vec3b>(y, x) = cv::Vec3b(cv::saturate_cast<uchar>(30 + noise(rng)),
                                            cv::saturate_cast<uchar>(40 + noise(rng)),
                                            cv::saturate_cast<uchar>(180 + noise(rng)));
  return img;
}

double iou(const cv::Mat& a, const cv::Mat& b) {
  const double inter = cv::countNonZero(a & b), uni = cv::countNonZero(a | b);
  return uni > 0 ? inter / uni : 0.0;
}

}  // namespace

TEST_CASE("grabcut: a stroke and a box on the ball in messi5.jpg segment the ball") {
  const auto dir = lli::test::shared_dir();
  if (dir.empty()) LLI_SKIP("../shared is absent (messi5.jpg)");
  const Image img = read_image((dir / "images" / "messi5.jpg").string());
  REQUIRE(img.bgr.cols == 548);
  REQUIRE(img.bgr.rows == 342);

  GrabCutSeeds seeds;
  seeds.strokes.push_back({{{350, 312}, {375, 312}}, 6.0, true});
  seeds.box = cv::Rect2d(332, 283, 61, 58);  // (332,283)-(393,341) around the ball
  const GrabCutResult r = run_grabcut(img.bgr, seeds);
  REQUIRE(r.mask.size() == img.bgr.size());
  REQUIRE(r.mask.type() == CV_8UC1);
  CHECK_FALSE(r.downscaled);

  cv::Mat inner(r.mask.size(), CV_8UC1, cv::Scalar(0));
  cv::circle(inner, cv::Point(kBallCentre), int(kBallRadius - 6), cv::Scalar(255), cv::FILLED);
  const double covered = double(cv::countNonZero(inner & r.mask)) / cv::countNonZero(inner);
  const double disc_area = M_PI * kBallRadius * kBallRadius;
  MESSAGE("ball: inner disc covered " << covered << ", area " << r.area << " px (ball disc " << disc_area
                                      << "), bbox " << r.bbox);
  CHECK(covered >= 0.85);
  CHECK(r.area == cv::countNonZero(r.mask));
  CHECK(r.area < 2.0 * disc_area);
  CHECK(r.area > 0.6 * disc_area);
  CHECK(std::abs(r.bbox.x - 338) <= 8);
  CHECK(std::abs(r.bbox.y - 289) <= 8);
  CHECK(std::abs(r.bbox.x + r.bbox.width - 388) <= 8);
  CHECK(std::abs(r.bbox.y + r.bbox.height - 337) <= 8);
}

TEST_CASE("grabcut: a single positive point on a synthetic disc, with and without downscaling") {
  const cv::Point c(300, 200);
  const int radius = 60;
  const cv::Mat img = disc_scene({640, 400}, c, radius);
  cv::Mat truth(img.size(), CV_8UC1, cv::Scalar(0));
  cv::circle(truth, c, radius, cv::Scalar(255), cv::FILLED);

  GrabCutSeeds seeds;
  seeds.points.push_back({cv::Point2d(c), true});
  seeds.strokes.push_back({{{20, 20}, {600, 20}}, 8.0, false});
  const GrabCutResult r = run_grabcut(img, seeds);
  MESSAGE("full-res IoU " << iou(r.mask, truth));
  CHECK(iou(r.mask, truth) > 0.9);

  GrabCutOptions small;
  small.max_side = 200;
  const GrabCutResult d = run_grabcut(img, seeds, small);
  CHECK(d.downscaled);
  CHECK(d.scale == doctest::Approx(200.0 / 640.0));
  REQUIRE(d.mask.size() == img.size());
  MESSAGE("downscaled IoU " << iou(d.mask, truth));
  CHECK(iou(d.mask, truth) > 0.85);
  // Sure seeds are re-imposed at full resolution.
  CHECK(d.mask.at<uchar>(c) == 255);
  CHECK(d.mask.at<uchar>(20, 300) == 0);
}

TEST_CASE("grabcut: only components touching a positive seed are kept") {
  // Two identical discs; a point on the left one and a box around both.
  cv::Mat img = disc_scene({400, 200}, {100, 100}, 40);
  cv::circle(img, cv::Point(300, 100), 40, cv::Scalar(30, 40, 180), cv::FILLED);
  GrabCutSeeds seeds;
  seeds.points.push_back({{100, 100}, true});
  seeds.box = cv::Rect2d(40, 40, 320, 120);
  GrabCutResult kept = run_grabcut(img, seeds);
  CHECK(kept.mask.at<uchar>(100, 100) == 255);
  CHECK(kept.mask.at<uchar>(100, 300) == 0);
  CHECK(kept.bbox.x + kept.bbox.width < 200);

  GrabCutOptions all;
  all.keep_seeded_components = false;
  GrabCutResult both = run_grabcut(img, seeds, all);
  CHECK(both.mask.at<uchar>(100, 300) == 255);
  CHECK(both.area > kept.area);
}

TEST_CASE("grabcut: invalid seeds are InputErrors") {
  const cv::Mat img = disc_scene({120, 80}, {60, 40}, 15);
  GrabCutSeeds none;
  none.strokes.push_back({{{10, 10}, {50, 10}}, 5.0, false});
  none.points.push_back({{5, 5}, false});
  try {
    run_grabcut(img, none);
    FAIL("expected an InputError");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "GrabCut needs a box or a positive stroke/point");
  }
  GrabCutSeeds outside;
  outside.box = cv::Rect2d(500, 500, 10, 10);
  CHECK_THROWS_AS(run_grabcut(img, outside), InputError);
  GrabCutSeeds empty_stroke;
  empty_stroke.strokes.push_back({{}, 5.0, true});
  CHECK_THROWS_AS(run_grabcut(img, empty_stroke), InputError);
  GrabCutSeeds nan_point;
  nan_point.points.push_back({{NAN, 3}, true});
  CHECK_THROWS_AS(run_grabcut(img, nan_point), InputError);
  GrabCutSeeds ok;
  ok.points.push_back({{60, 40}, true});
  GrabCutOptions bad;
  bad.iterations = 0;
  CHECK_THROWS_AS(run_grabcut(img, ok, bad), UsageError);
  CHECK_THROWS_AS(run_grabcut(cv::Mat(), ok), InputError);
}

TEST_CASE("telea: only pixels inside the dilated mask change") {
  cv::Mat img(90, 120, CV_8UC3);
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) img.at<cv::Vec3b>(y, x) = cv::Vec3b(uchar(x * 2), uchar(y * 2), 90);
  cv::Mat mask(img.size(), CV_8UC1, cv::Scalar(0));
  const cv::Rect hole(50, 30, 20, 15);
  img(hole).setTo(cv::Scalar(0, 0, 255));  // a red object to remove
  mask(hole).setTo(255);

  TeleaOptions opt;
  opt.dilate = 4;
  const TeleaResult r = inpaint_telea(img, mask, opt, "obj.png");
  CHECK_FALSE(r.empty_mask);
  REQUIRE(r.image.size() == img.size());
  REQUIRE(r.image.type() == CV_8UC3);

  // Exactly unchanged outside the dilated mask.
  cv::Mat diff;
  cv::absdiff(r.image, img, diff);
  int changed_outside = 0, changed_inside = 0;
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) {
      const bool ch = diff.at<cv::Vec3b>(y, x) != cv::Vec3b(0, 0, 0);
      if (!r.dilated_mask.at<uchar>(y, x)) changed_outside += ch;
      else if (mask.at<uchar>(y, x)) changed_inside += ch;
    }
  CHECK(changed_outside == 0);
  CHECK(changed_inside == hole.area());  // every red pixel was replaced
  // The red object is gone: the filled region is close to the gradient.
  const cv::Vec3b centre = r.image.at<cv::Vec3b>(37, 60);
  CHECK(centre[2] < 150);

  // Dilation radius: the dilated mask reaches exactly `dilate` px beyond the hole's edges.
  CHECK(r.dilated_mask.at<uchar>(37, hole.x - 4) == 255);
  CHECK(r.dilated_mask.at<uchar>(37, hole.x - 5) == 0);
  CHECK(r.dilated_mask.at<uchar>(hole.y + hole.height - 1 + 4, 60) == 255);
  CHECK(r.dilated_mask.at<uchar>(hole.y + hole.height - 1 + 5, 60) == 0);
}

TEST_CASE("telea: the dilation kernel is an ellipse of size 2*d+1") {
  const cv::Mat img(41, 41, CV_8UC3, cv::Scalar(10, 20, 30));
  cv::Mat mask(img.size(), CV_8UC1, cv::Scalar(0));
  mask.at<uchar>(20, 20) = 255;
  TeleaOptions opt;
  opt.dilate = 6;
  const TeleaResult r = inpaint_telea(img, mask, opt);
  CHECK(r.dilated_mask.at<uchar>(20, 26) == 255);
  CHECK(r.dilated_mask.at<uchar>(20, 27) == 0);
  CHECK(r.dilated_mask.at<uchar>(14, 20) == 255);
  CHECK(r.dilated_mask.at<uchar>(26, 26) == 0);  // corner cut: not a square
  cv::Mat expect = cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(13, 13)) * 255;
  CHECK(cv::countNonZero(r.dilated_mask) == cv::countNonZero(expect));

  opt.dilate = 0;
  const TeleaResult z = inpaint_telea(img, mask, opt);
  CHECK(cv::countNonZero(z.dilated_mask) == 1);
}

TEST_CASE("telea: empty mask returns the input, mismatched or bad masks are errors") {
  const cv::Mat img = disc_scene({64, 48}, {30, 20}, 8);
  const TeleaResult r = inpaint_telea(img, cv::Mat(img.size(), CV_8UC1, cv::Scalar(0)));
  CHECK(r.empty_mask);
  CHECK(cv::norm(r.image, img, cv::NORM_INF) == 0);
  CHECK(r.image.data != img.data);

  try {
    inpaint_telea(img, cv::Mat(24, 32, CV_8UC1, cv::Scalar(0)), {}, "small.png");
    FAIL("expected an InputError");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "small.png: mask is 32x24 but the image is 64x48");
  }
  CHECK_THROWS_AS(inpaint_telea(img, cv::Mat(img.size(), CV_8UC3, cv::Scalar(0))), InputError);
  TeleaOptions bad;
  bad.dilate = -1;
  CHECK_THROWS_AS(inpaint_telea(img, cv::Mat(img.size(), CV_8UC1, cv::Scalar(255)), bad), UsageError);
  bad.dilate = 2;
  bad.radius = 0;
  CHECK_THROWS_AS(inpaint_telea(img, cv::Mat(img.size(), CV_8UC1, cv::Scalar(255)), bad), UsageError);
}
