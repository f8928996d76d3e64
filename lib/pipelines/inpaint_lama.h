// LaMa object removal (big-lama): BGR image + mask -> inpainted BGR image. Orchestration only: the
// generator and predict.py's pre/post-processing are in models/lama.h. Torch-free header (cv::Mat
// in and out) so that tools need no libtorch include.
//
// Full-size path (inpaint_full): the image at its own size, exactly as advimman/lama's
// bin/predict.py (refine=False): image / 255, hole = mask > 0, both padded at the bottom/right to
// a multiple of 8 (config dataset.pad_out_to_modulo) with numpy's 'symmetric' mode, generator
// input cat(image * (1 - mask), mask), result mask * prediction + (1 - mask) * image cropped back,
// uint8 by truncation (np.clip(x * 255, 0, 255).astype(uint8)). Pixels outside the mask come back
// bit-identical (u8 / 255 * 255 truncates back to u8 for every value in fp32).
//
// Crop strategy (inpaint, for photos whose longer side is above max_side; IOPaint's "crop"): one
// region per connected part of the mask, its bounding box grown by crop_margin pixels on each side
// (shifted to stay inside the image; regions that overlap are merged), downscaled (INTER_AREA) so
// that its longer side is max_side when it is still larger. Each result (upscaled back with
// INTER_CUBIC) is pasted into a copy of the input ONLY where the mask is non-zero: every other
// pixel is bit-identical to the input.
// Ref: advimman/lama bin/predict.py, saicinpainting/training/trainers/default.py;
//      Sanster/IOPaint iopaint/model/base.py (HDStrategy.CROP, _crop_box).
#pragma once

#include <opencv2/core.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lli/device.h"

namespace lli::pipelines {

struct LamaOptions {
  DeviceChoice device;                         // cpu (default) or cuda[:N]
  DTypeChoice dtype = DTypeChoice::automatic;  // convolutions (resolve_dtype: bf16 on AVX512-BF16 CPUs);
                                               // the Fourier transforms always run in fp32
  int max_side = 1024;    // inpaint(): longer side above which the crop strategy is used (0 = never)
  int crop_margin = 128;  // context pixels around the mask's bounding box in the crop strategy
};

struct LamaTimings {
  double preprocess_ms = 0, model_ms = 0, postprocess_ms = 0;  // last inpaint()/inpaint_full()
  int model_runs = 0;     // generator calls of the last inpaint() (crop strategy: one per region)
  bool cropped = false;  // the last inpaint() used the crop strategy
  std::vector<cv::Rect> regions;  // image regions given to the model (the whole image when not cropped)
  cv::Size model_size;            // size of the last generator input (before padding to the modulo)
};

// Where the crop strategy runs: `region` (image pixels) and the size it is resized to.
struct LamaCropPlan {
  cv::Rect region;
  cv::Size model_size;  // region.size(), or scaled down so that the longer side is max_side
};

// The box grown by `margin` on each side, at most the image, shifted (not cut) to stay inside it;
// model_size limits the longer side to max_side (<= 0: no limit). box: non-empty, inside the image.
LamaCropPlan plan_lama_crop(cv::Size image, const cv::Rect& box, int max_side, int margin);

// One plan per connected part of the mask (non-zero = hole; 8-connectivity), plans whose regions
// overlap merged into one; none for an empty mask.
std::vector<LamaCropPlan> plan_lama_crops(const cv::Mat& mask, int max_side, int margin);

// fn(bgr, mask) -> BGR of the same size (e.g. LamaInpainter::inpaint_full).
using InpaintFn = std::function<cv::Mat(const cv::Mat& bgr, const cv::Mat& mask)>;

// Runs fn on each plan's region of bgr/mask (resized to model_size when it differs: the mask with
// INTER_AREA, any coverage kept as hole) and returns a copy of bgr with fn's results (resized back
// with INTER_CUBIC) pasted where mask > 0 inside the regions. mask: CV_8UC1, non-zero = hole.
cv::Mat inpaint_cropped(const cv::Mat& bgr, const cv::Mat& mask, const std::vector<LamaCropPlan>& plans,
                        const InpaintFn& fn);

// True when <dir> holds generator.safetensors and config.yaml (for `--backend auto`).
bool lama_model_present(const std::filesystem::path& dir);

class LamaInpainter {
 public:
  // Loads <model_dir>/{config.yaml, generator.safetensors} (see scripts/convert-lama.py).
  // ModelError for a missing/invalid checkpoint, a refused config option or an unavailable device.
  explicit LamaInpainter(const std::filesystem::path& model_dir, const LamaOptions& opts = {});
  ~LamaInpainter();
  LamaInpainter(LamaInpainter&&) noexcept;
  LamaInpainter& operator=(LamaInpainter&&) noexcept;

  // bgr: CV_8UC3; mask: CV_8UC1 of the same size, non-zero = remove. InputError otherwise. An
  // empty mask returns a copy of the image. Longer side > max_side: the crop strategy; otherwise
  // inpaint_full. Not thread-safe (timings).
  cv::Mat inpaint(const cv::Mat& bgr, const cv::Mat& mask) const;
  // The reference's full-size path (see above), whatever the size.
  cv::Mat inpaint_full(const cv::Mat& bgr, const cv::Mat& mask) const;

  std::string describe() const;  // one line: sizes, ratios, device, dtype
  const LamaTimings& timings() const;
  const LamaOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::pipelines
