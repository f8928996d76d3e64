// LLaVA image preprocessing: transformers' CLIPImageProcessor as configured by
// preprocessor_config.json (the llava-hf processor: resize shortest edge, centre crop, rescale,
// normalise), plus the original LLaVA-1.5 variant that first pads the image to a square with the
// mean colour (expand2square).
// Ref: transformers/models/clip/image_processing_clip.py, image_transforms.py (v4.45);
//      haotian-liu/LLaVA llava/mm_utils.py expand2square / process_images.
#pragma once

#include <torch/torch.h>
#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/pil_resize.h"
#include "models/config_json.h"

namespace lli::models {

enum class ImageAspect {
  resize_crop,  // llava-hf processor (default): shortest edge -> size, centre crop
  pad_square,   // original LLaVA-1.5: pad to a square with the mean colour, then the same steps
};
// "crop" / "resize_crop" or "pad" / "pad_square"; UsageError otherwise.
ImageAspect parse_image_aspect(const std::string& s);

// Defaults = transformers' CLIPImageProcessor().
struct ImageProcessorConfig {
  bool do_convert_rgb = true;
  bool do_resize = true;
  std::int64_t shortest_edge = 224;            // used when size has "shortest_edge"
  std::int64_t size_height = 0, size_width = 0;  // used instead when size is {height, width}
  PilResample resample = PilResample::bicubic;
  bool do_center_crop = true;
  std::int64_t crop_height = 224, crop_width = 224;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean{0.48145466, 0.4578275, 0.40821073};
  std::vector<double> image_std{0.26862954, 0.26130258, 0.27577711};
};

ImageProcessorConfig parse_image_processor_config(const ConfigReader& r);
// <dir>/preprocessor_config.json; ModelError when missing or invalid.
ImageProcessorConfig load_image_processor_config(const std::filesystem::path& dir);

// transformers get_resize_output_image_size(default_to_square=False): short side -> `size`,
// long side -> int(size * long / short). Returns {height, width}.
std::pair<int, int> shortest_edge_size(int height, int width, int size);

// expand2square: pads the shorter side, centred ((long - short) // 2 before), with
// tuple(int(m * 255) for m in image_mean). rgb: CV_8UC3.
cv::Mat expand_to_square(const cv::Mat& rgb, const std::vector<double>& image_mean);

// The uint8 RGB image after aspect handling, resize and centre crop (before rescale/normalise).
cv::Mat prepare_image_rgb(const cv::Mat& rgb, const ImageProcessorConfig& cfg, ImageAspect aspect);

// pixel_values [1, 3, H, W] fp32 CPU from an RGB uint8 image: rescale in float64 then cast to
// float32, (x - mean) / std in float32 (numpy's order of operations).
torch::Tensor pixel_values_from_rgb(const cv::Mat& rgb, const ImageProcessorConfig& cfg, ImageAspect aspect);

// Same from an lli image (BGR CV_8UC3, as lli::read_image returns).
torch::Tensor pixel_values_from_bgr(const cv::Mat& bgr, const ImageProcessorConfig& cfg, ImageAspect aspect);

}  // namespace lli::models
