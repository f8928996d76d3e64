// Classical interactive segmentation: OpenCV GrabCut seeded by strokes, points and/or a box.
// Torch-free (lli_base). Independent of prompt.h: tools convert their prompt into GrabCutSeeds.
//
// Seed semantics (all coordinates in pixels of the input image, x right, y down; a pixel
// (i, j) covers [i, i+1) x [j, j+1), so a pixel centre is at (i+0.5, j+0.5) but integer
// coordinates are accepted as-is):
// - positive stroke  -> sure foreground, drawn as a polyline with its width (round caps);
// - negative stroke  -> sure background, same drawing;
// - positive point   -> sure-foreground disc of radius max(3, 0.01*min(W,H)) (point_radius
//                       overrides when > 0); negative point -> sure-background disc;
// - box              -> outside: sure background; inside: probable foreground.
// - without a box: the whole image starts as probable background and a band around the
//   positive seeds (each positive stroke/point dilated by band_factor x its width/diameter,
//   at least 15 px) becomes probable foreground.
// Strokes and points are drawn after the box, so they override it (a negative stroke inside
// the box is sure background). cv::grabCut then runs with GC_INIT_WITH_MASK for `iterations`
// iterations. Result = GC_FGD | GC_PR_FGD as 0/255.
//
// Post-processing: with keep_seeded_components, only the 8-connected components of the result
// that contain a positive seed pixel (or, with a box and no positive seed, that intersect the
// box) are kept; holes are not filled.
//
// Large images: when max_side > 0 and the longest image side exceeds it, GrabCut runs on a
// copy downscaled (INTER_AREA) so the longest side is max_side, seeds scaled with it (widths
// too, at least 1 px); the probabilistic result is upscaled with INTER_LINEAR on a 0/255 map and
// thresholded at 127, then the sure seeds are re-imposed at full resolution (sure-fg pixels
// set, sure-bg pixels cleared) before the component filter.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <optional>
#include <vector>

namespace lli {

struct GrabCutStroke {
  std::vector<cv::Point2d> points;  // polyline vertices in pixels (one point = a dot)
  double width = 10.0;              // brush diameter in pixels (>= 1)
  bool positive = true;             // true = foreground, false = background
};

struct GrabCutPoint {
  cv::Point2d p;
  bool positive = true;
};

struct GrabCutSeeds {
  std::vector<GrabCutStroke> strokes;
  std::vector<GrabCutPoint> points;
  std::optional<cv::Rect2d> box;  // x, y, width, height in pixels; clipped to the image
};

struct GrabCutOptions {
  int iterations = 5;                  // cv::grabCut iterations (>= 1)
  int max_side = 1024;                 // downscale above this longest side; 0 = never
  bool keep_seeded_components = true;  // see header comment
  double point_radius = 0.0;           // > 0 overrides max(3, 0.01*min(W,H))
  double band_factor = 3.0;            // probable-fg band = positive seeds dilated by this x width
};

struct GrabCutResult {
  cv::Mat mask;         // CV_8UC1, 0/255, same size as the image
  std::int64_t area = 0;  // number of 255 pixels
  cv::Rect bbox;        // bounding box of the mask (empty Rect when area == 0)
  bool downscaled = false;
  double scale = 1.0;   // working scale used (<= 1)
};

// Runs GrabCut on an 8-bit BGR image (CV_8UC3; CV_8UC1/CV_8UC4 are converted).
// Throws InputError "GrabCut needs a box or a positive stroke/point" when there is neither,
// InputError for an empty image, a box entirely outside the image, or a stroke with no
// points / non-finite coordinates; UsageError for iterations < 1.
GrabCutResult run_grabcut(const cv::Mat& image, const GrabCutSeeds& seeds,
                          const GrabCutOptions& options = {});

}  // namespace lli
