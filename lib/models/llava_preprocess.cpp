// Ref: transformers CLIPImageProcessor.preprocess (v4.45): convert_rgb -> resize (PIL) ->
// center_crop -> rescale -> normalize; LLaVA-1.5 expand2square.
#include "models/llava_preprocess.h"

#include <opencv2/imgproc.hpp>

#include <cmath>

#include "lli/error.h"
#include "models/image_normalize.h"

namespace lli::models {

ImageAspect parse_image_aspect(const std::string& s) {
  if (s == "crop" || s == "resize_crop") return ImageAspect::resize_crop;
  if (s == "pad" || s == "pad_square") return ImageAspect::pad_square;
  throw UsageError("image aspect \"" + s + "\" is not one of: crop, pad");
}

ImageProcessorConfig parse_image_processor_config(const ConfigReader& r) {
  ImageProcessorConfig c;
  c.do_convert_rgb = r.get_bool("do_convert_rgb", c.do_convert_rgb);
  c.do_resize = r.get_bool("do_resize", c.do_resize);
  if (r.has("size")) {
    const auto& s = r.at("size");
    if (s.is_number_integer()) {
      c.shortest_edge = s.get<std::int64_t>();  // legacy int: shortest edge
    } else if (s.is_object()) {
      auto sr = r.child("size");
      if (sr.has("shortest_edge")) {
        c.shortest_edge = sr.get_int("shortest_edge", 0);
      } else if (sr.has("height") && sr.has("width")) {
        c.size_height = sr.get_int("height", 0);
        c.size_width = sr.get_int("width", 0);
        c.shortest_edge = 0;
      } else {
        throw ModelError(r.where("size") + ": expected {\"shortest_edge\": N} or {\"height\": H, \"width\": W}, got " +
                         s.dump());
      }
    } else {
      throw ModelError(r.where("size") + ": expected an object or an integer, got " + s.dump());
    }
  }
  if (r.has("resample")) c.resample = pil_resample_from_code(static_cast<int>(r.get_int("resample", 3)), r.where("resample"));
  c.do_center_crop = r.get_bool("do_center_crop", c.do_center_crop);
  if (r.has("crop_size")) {
    const auto& s = r.at("crop_size");
    if (s.is_number_integer()) {
      c.crop_height = c.crop_width = s.get<std::int64_t>();
    } else if (s.is_object()) {
      auto cr = r.child("crop_size");
      if (!cr.has("height") || !cr.has("width"))
        throw ModelError(r.where("crop_size") + ": expected {\"height\": H, \"width\": W}, got " + s.dump());
      c.crop_height = cr.get_int("height", 0);
      c.crop_width = cr.get_int("width", 0);
    } else {
      throw ModelError(r.where("crop_size") + ": expected an object or an integer, got " + s.dump());
    }
  }
  c.do_rescale = r.get_bool("do_rescale", c.do_rescale);
  c.rescale_factor = r.get_double("rescale_factor", c.rescale_factor);
  c.do_normalize = r.get_bool("do_normalize", c.do_normalize);
  c.image_mean = r.get_doubles("image_mean", 3, c.image_mean);
  c.image_std = r.get_doubles("image_std", 3, c.image_std);
  for (double s : c.image_std)
    if (s == 0.0) throw ModelError(r.where("image_std") + ": must not contain 0");
  if (c.do_resize && c.shortest_edge <= 0 && (c.size_height <= 0 || c.size_width <= 0))
    throw ModelError(r.where("size") + ": sizes must be positive");
  if (c.do_center_crop && (c.crop_height <= 0 || c.crop_width <= 0))
    throw ModelError(r.where("crop_size") + ": sizes must be positive");
  return c;
}

ImageProcessorConfig load_image_processor_config(const std::filesystem::path& dir) {
  auto path = dir / "preprocessor_config.json";
  auto j = read_json_file(path);
  return parse_image_processor_config(ConfigReader(j, path.string()));
}

std::pair<int, int> shortest_edge_size(int height, int width, int size) {
  const bool portrait = width <= height;
  const int short_side = portrait ? width : height, long_side = portrait ? height : width;
  // Python: int(size * long / short), true division in double then truncation.
  const int new_long = static_cast<int>(static_cast<double>(static_cast<std::int64_t>(size) * long_side) /
                                        static_cast<double>(short_side));
  return portrait ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

cv::Mat expand_to_square(const cv::Mat& rgb, const std::vector<double>& image_mean) {
  const int w = rgb.cols, h = rgb.rows;
  if (w == h) return rgb.clone();
  cv::Scalar fill;
  for (int c = 0; c < 3; ++c) fill[c] = static_cast<int>(image_mean[static_cast<std::size_t>(c)] * 255);
  const int s = std::max(w, h);
  cv::Mat out(s, s, rgb.type(), fill);
  if (w > h)
    rgb.copyTo(out(cv::Rect(0, (w - h) / 2, w, h)));
  else
    rgb.copyTo(out(cv::Rect((h - w) / 2, 0, w, h)));
  return out;
}

cv::Mat prepare_image_rgb(const cv::Mat& rgb_in, const ImageProcessorConfig& cfg, ImageAspect aspect) {
  if (rgb_in.empty() || rgb_in.type() != CV_8UC3)
    throw InputError("image preprocessing: expected a non-empty 8-bit 3-channel image");
  cv::Mat img = rgb_in;
  if (aspect == ImageAspect::pad_square) img = expand_to_square(img, cfg.image_mean);
  if (cfg.do_resize) {
    int oh, ow;
    if (cfg.shortest_edge > 0) {
      std::tie(oh, ow) = shortest_edge_size(img.rows, img.cols, static_cast<int>(cfg.shortest_edge));
    } else {
      oh = static_cast<int>(cfg.size_height);
      ow = static_cast<int>(cfg.size_width);
    }
    if (oh < 1 || ow < 1)
      throw InputError("image preprocessing: a " + std::to_string(img.cols) + "x" + std::to_string(img.rows) +
                       " image resizes to " + std::to_string(ow) + "x" + std::to_string(oh) + " (too thin)");
    img = pil_resize(img, ow, oh, cfg.resample);
  }
  if (cfg.do_center_crop) img = center_crop(img, static_cast<int>(cfg.crop_height), static_cast<int>(cfg.crop_width));
  return img.isContinuous() ? img : img.clone();
}

torch::Tensor pixel_values_from_rgb(const cv::Mat& rgb, const ImageProcessorConfig& cfg, ImageAspect aspect) {
  cv::Mat img = prepare_image_rgb(rgb, cfg, aspect);
  const int H = img.rows, W = img.cols;
  auto out = torch::empty({1, 3, H, W}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  rescale_normalize_rgb(img, {cfg.do_rescale, cfg.rescale_factor, cfg.do_normalize, cfg.image_mean, cfg.image_std}, o, H, W);
  return out;
}

torch::Tensor pixel_values_from_bgr(const cv::Mat& bgr, const ImageProcessorConfig& cfg, ImageAspect aspect) {
  if (bgr.empty() || bgr.type() != CV_8UC3)
    throw InputError("image preprocessing: expected a non-empty 8-bit 3-channel image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return pixel_values_from_rgb(rgb, cfg, aspect);
}

}  // namespace lli::models
