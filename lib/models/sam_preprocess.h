// Segment Anything pre- and post-processing: transformers' SamImageProcessor / SamProcessor as
// configured by preprocessor_config.json.
//   image: RGB -> resize the longest edge to size.longest_edge (Pillow, `resample`, the new size
//   int(x * S / max(H, W) + 0.5)) -> * rescale_factor (float64, then float32) -> (x - mean) / std
//   (float32) -> zero-pad bottom/right to pad_size.
//   prompts: x * (new_w / old_w), y * (new_h / old_h) in float64 (boxes are first cast to float32,
//   as the processor does).
//   masks: bilinear (align_corners=False) to pad_size, crop to the resized size, bilinear to the
//   original size; binary masks are logits > 0.
// Ref: transformers/models/sam/image_processing_sam.py SamImageProcessor (preprocess,
//      _get_preprocess_shape, post_process_masks), processing_sam.py SamProcessor
//      (_normalize_coordinates) (v4.45).
#pragma once

#include <torch/torch.h>
#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

#include "io/pil_resize.h"
#include "models/config_json.h"

namespace lli::models {

// Defaults = transformers' SamImageProcessor() (the sam-vit-* values).
struct SamImageProcessorConfig {
  bool do_convert_rgb = true;
  bool do_resize = true;
  std::int64_t longest_edge = 1024;
  PilResample resample = PilResample::bilinear;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean{0.485, 0.456, 0.406};  // IMAGENET_DEFAULT_MEAN
  std::vector<double> image_std{0.229, 0.224, 0.225};   // IMAGENET_DEFAULT_STD
  bool do_pad = true;
  std::int64_t pad_height = 1024, pad_width = 1024;
};

SamImageProcessorConfig parse_sam_image_processor_config(const ConfigReader& r);
// <dir>/preprocessor_config.json; when the file is absent, the defaults (logged).
SamImageProcessorConfig load_sam_image_processor_config(const std::filesystem::path& dir);

// _get_preprocess_shape: {int(h * s + 0.5), int(w * s + 0.5)}, s = longest_edge / max(h, w).
std::pair<int, int> sam_preprocess_shape(int height, int width, std::int64_t longest_edge);

struct SamImageInputs {
  torch::Tensor pixel_values;      // [1, 3, Hp, Wp] fp32 CPU
  int original_h = 0, original_w = 0;  // original_sizes
  int reshaped_h = 0, reshaped_w = 0;  // reshaped_input_sizes (before padding)
};

// rgb: CV_8UC3 RGB. InputError for an empty/odd image or one that does not fit pad_size.
SamImageInputs sam_preprocess_rgb(const cv::Mat& rgb, const SamImageProcessorConfig& cfg);
SamImageInputs sam_preprocess_bgr(const cv::Mat& bgr, const SamImageProcessorConfig& cfg);

// Scale factors from original pixel coordinates to the resized frame (new / old per axis).
struct SamCoordScale {
  double sx = 1, sy = 1;
};
SamCoordScale sam_coord_scale(int original_h, int original_w, const SamImageProcessorConfig& cfg);

// xy: [..., 2] (x, y) original pixels -> float64 resized-frame coordinates.
torch::Tensor sam_scale_points(const torch::Tensor& xy, const SamCoordScale& s);
// boxes: [..., 4] (x0, y0, x1, y1) original pixels -> float64 (cast to float32 first, as SamProcessor).
torch::Tensor sam_scale_boxes(const torch::Tensor& boxes, const SamCoordScale& s);

// masks: [N, m, h, w] low-res logits -> [N, m, original_h, original_w] fp32 logits.
torch::Tensor sam_post_process_masks(const torch::Tensor& masks, const SamImageInputs& sizes, int pad_h, int pad_w);

// One pass over original-size logits: binary mask, area, tight box and the counts behind the
// stability score (reference: (logits > t + offset).sum() / (logits > t - offset).sum()).
struct SamMaskStats {
  std::int64_t area = 0;       // logit > threshold
  std::int64_t above_hi = 0;   // logit > threshold + offset
  std::int64_t above_lo = 0;   // logit > threshold - offset
  int x0 = -1, y0 = -1, x1 = -1, y1 = -1;  // inclusive pixel box of the mask (-1 when empty)
  double stability() const { return above_lo > 0 ? static_cast<double>(above_hi) / static_cast<double>(above_lo) : 0.0; }
};
// logits: [H, W] fp32 CPU (any strides). binary: H * W bytes written 255 / 0 row-major, or null.
SamMaskStats sam_mask_stats(const torch::Tensor& logits, double threshold, double offset, std::uint8_t* binary);

}  // namespace lli::models
