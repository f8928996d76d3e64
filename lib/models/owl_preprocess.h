// OWL-ViT / OWLv2 image preprocessing as transformers' OwlViTImageProcessor and
// Owlv2ImageProcessor, configured by preprocessor_config.json. Torch-free.
//   owlv2:  RGB uint8 -> * rescale_factor (float64, cast to float32) -> pad bottom/right to a
//           square of side max(H, W) with 0.5 -> ndimage resize to size (Gaussian anti-aliasing +
//           linear zoom, io/ndimage_resize.h; `resample` is ignored, as the reference does) ->
//           (x - mean) / std (float32).
//   owlvit: RGB uint8 -> Pillow resize to size (height x width, aspect not kept; `resample`,
//           default bicubic) -> centre crop to crop_size (offsets floor((size - crop) / 2)) ->
//           rescale -> normalise.
// Boxes come back in the model's square input frame (0..1); owl_box_scale() gives the factors
// the reference's post_process_object_detection multiplies them by.
// Ref: transformers/models/owlv2/image_processing_owlv2.py, models/owlvit/image_processing_owlvit.py
//      (v4.45).
#pragma once

#include <opencv2/core.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "io/pil_resize.h"
#include "models/config_json.h"
#include "models/image_normalize.h"

namespace lli::models {

enum class OwlVariant { owlvit, owlv2 };
const char* owl_variant_name(OwlVariant v);  // "owlvit" | "owlv2"

// Defaults = the transformers image processor of the variant.
struct OwlImageProcessorConfig {
  OwlVariant variant = OwlVariant::owlv2;
  bool do_resize = true;
  std::int64_t size_h = 960, size_w = 960;  // owlvit: 768 x 768
  PilResample resample = PilResample::bicubic;  // owlvit only
  bool do_center_crop = false;                  // owlvit: true
  std::int64_t crop_h = 768, crop_w = 768;
  bool do_pad = true;  // owlv2 only
  PixelNormalize norm;  // OPENAI_CLIP mean / std, 1/255

  // The square side of pixel_values this configuration produces.
  std::int64_t output_side() const;
};

OwlImageProcessorConfig default_owl_image_processor(OwlVariant v);
OwlImageProcessorConfig parse_owl_image_processor_config(const ConfigReader& r, OwlVariant v);
// <dir>/preprocessor_config.json; the variant's defaults when the file is absent (logged).
OwlImageProcessorConfig load_owl_image_processor_config(const std::filesystem::path& dir, OwlVariant v);

// rgb: CV_8UC3 RGB -> pixel_values [3, S, S] float32 planes (S = cfg.output_side()).
// InputError for an empty image; ModelError when the configuration cannot give a square.
std::vector<float> owl_preprocess_rgb(const cv::Mat& rgb, const OwlImageProcessorConfig& cfg);

// (sx, sy, sx, sy): owlv2 max(H, W) for all four, owlvit (W, H, W, H) of the original image.
std::array<float, 4> owl_box_scale(OwlVariant v, int original_h, int original_w);

}  // namespace lli::models
