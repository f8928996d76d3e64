// Image-region helpers for lli-edit: mask dilation with the scaled default, feathered compositing
// that leaves every pixel outside the (dilated, feathered) mask bit-identical, the square context
// crop that fits a photo region to a square diffusion model (IOPaint's "crop" strategy), and moving
// an object's pixels. Torch-free (lli_base): the models come in as callbacks.
//
// Conventions: images CV_8UC3 BGR; masks CV_8UC1, non-zero = the object / region; alphas CV_32FC1
// in [0, 1]. Every function leaves its inputs untouched.
// Ref: Sanster/IOPaint iopaint/model/base.py (HDStrategy.CROP); LLaVA-Interactive's editing
// (mask dilation by 50 px at 512 px before removal).
#pragma once

#include <opencv2/core.hpp>

#include <functional>
#include <string>

namespace lli::pipelines {

// The seed system dilates removal masks by 50 px on 512-px images; lli scales that with the photo:
// round(50 * max(W, H) / 512), at least 1.
int default_dilate(cv::Size image);

// Binarised (non-zero -> 255) copy of `mask` grown by `px` pixels with an elliptical kernel of size
// 2 px + 1 (px = 0: only binarised). UsageError for px < 0. The same pixels as cv::dilate with
// getStructuringElement(MORPH_ELLIPSE, {2 px + 1, 2 px + 1}), border not set; from px = 8 on
// computed by dilate_mask_sweep (linear in the pixels: at 4000x3000, px 428 takes about 32 ms
// instead of 85 s).
cv::Mat dilate_mask(const cv::Mat& mask, int px);

// dilate_mask for every px through the span sweep (distance to the nearest mask pixel in each
// column, then the union of the element's row spans in each row): O(pixels) whatever px. Public so
// that the tests can compare it with cv::dilate at small radii too.
cv::Mat dilate_mask_sweep(const cv::Mat& mask, int px);

// Alpha for compositing: 1 on the mask, falling linearly to 0 over `feather` pixels outside it
// (Euclidean distance), 0 beyond. feather = 0: the binary mask as 0/1.
cv::Mat feather_alpha(const cv::Mat& mask, int feather);

// alpha * patch + (1 - alpha) * base, rounded; where alpha is 0 the base pixel is copied unchanged,
// where it is 1 the patch pixel. base, patch: same size CV_8UC3; alpha CV_32FC1 of that size.
cv::Mat composite(const cv::Mat& base, const cv::Mat& patch, const cv::Mat& alpha);

// Non-zero pixels of a CV_32F alpha or CV_8U mask, as a 0/255 mask (the changed region).
cv::Mat nonzero_mask(const cv::Mat& m);

// The square crop around `roi` (image pixels) grown by `context` on each side, for a square model:
// side = max(roi.w, roi.h) + 2 * context (at most the image's longer side), centred on roi, shifted
// (not cut) to stay inside the image. When the side exceeds the image in a dimension, `rect` spans the image there and the crop is
// padded (replicated border) to the square: pad_* say how much on each side.
struct SquareCrop {
  cv::Rect rect;  // image pixels
  int side = 0;   // the square's side: rect.size() + padding
  int pad_left = 0, pad_top = 0, pad_right = 0, pad_bottom = 0;
};
SquareCrop plan_square_crop(cv::Size image, const cv::Rect& roi, int context);

// The crop (padded to its square) resized to model x model (INTER_AREA when shrinking, INTER_CUBIC
// when enlarging; masks: INTER_NEAREST).
cv::Mat extract_square(const cv::Mat& img, const SquareCrop& crop, int model, bool is_mask = false);
// A model-size result back to the crop: resized to the square, padding removed -> rect.size().
cv::Mat restore_square(const cv::Mat& model_out, const SquareCrop& crop);
// Image pixels -> the model canvas of a square crop (0..model); and model-canvas boxes normalised.
cv::Rect2d to_model(const cv::Rect2d& r, const SquareCrop& crop, int model);

// Fills the non-zero pixels of a mask in a BGR image (e.g. LaMa, Telea); returns the whole image.
using FillFn = std::function<cv::Mat(const cv::Mat& bgr, const cv::Mat& mask)>;

enum class BlendMode { alpha, poisson };
BlendMode parse_blend_mode(const std::string& s);  // "alpha" | "poisson"; UsageError otherwise
const char* blend_mode_name(BlendMode b);

struct MovePlan {
  cv::Rect from;      // the object's bounding box (image pixels)
  cv::Rect to;        // where it goes (may reach outside the image; scaled when sizes differ)
  int dilate = 0;     // hole: the object mask grown by this much before filling
  int feather = 4;    // edge of the pasted object (alpha blend)
  BlendMode blend = BlendMode::alpha;
};

struct MoveResult {
  cv::Mat image;        // CV_8UC3
  cv::Mat background;   // the image with the hole filled (before pasting)
  cv::Mat hole;         // 0/255: the filled region
  cv::Mat placed;       // 0/255: where the object was pasted (within the frame); empty when out of frame
  cv::Mat changed;      // 0/255: every pixel that may differ from the input
  cv::Rect to_clipped;  // the target box inside the frame (empty = moved out of the frame)
};

// Moves the masked object: the hole (mask dilated by plan.dilate) is filled by `fill`, then the
// object's pixels (its box, resized to plan.to when the sizes differ) are pasted at plan.to through
// the feathered object mask (alpha) or with Poisson blending (cv::seamlessClone, falling back to
// alpha where the target touches the frame). Out of the frame: clipped; entirely out = removed.
// paste = false: only the hole is filled (e.g. the object is redrawn by a generator afterwards).
MoveResult move_object(const cv::Mat& bgr, const cv::Mat& mask, const MovePlan& plan, const FillFn& fill,
                       bool paste = true);

}  // namespace lli::pipelines
