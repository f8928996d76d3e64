// Ref: transformers/models/owlv2/image_processing_owlv2.py Owlv2ImageProcessor.preprocess / pad /
// resize, models/owlvit/image_processing_owlvit.py OwlViTImageProcessor.preprocess,
// post_process_object_detection (v4.45). See owl_preprocess.h.
#include "models/owl_preprocess.h"

#include <algorithm>
#include <string>

#include "io/ndimage_resize.h"
#include "lli/error.h"
#include "lli/log.h"

namespace lli::models {

namespace {

// get_size_dict(default_to_square=True): {"height", "width"} or one number for both.
void read_size(const ConfigReader& r, const std::string& key, std::int64_t& h, std::int64_t& w) {
  if (!r.has(key)) return;
  const auto& v = r.at(key);
  if (v.is_number_integer()) {
    h = w = v.get<std::int64_t>();
  } else if (v.is_object()) {
    const ConfigReader s = r.child(key);
    if (s.has("shortest_edge") || s.has("longest_edge"))
      throw ModelError(r.where(key) + ": {shortest_edge / longest_edge} sizes are not used by OWL processors; expected "
                                      "{\"height\": N, \"width\": N}");
    h = s.get_int("height", h);
    w = s.get_int("width", w);
  } else {
    throw ModelError(r.where(key) + ": expected {\"height\": N, \"width\": N} or a number");
  }
  r.require_positive(key, std::min(h, w));
}

}  // namespace

const char* owl_variant_name(OwlVariant v) { return v == OwlVariant::owlv2 ? "owlv2" : "owlvit"; }

std::int64_t OwlImageProcessorConfig::output_side() const {
  if (variant == OwlVariant::owlvit && do_center_crop) return crop_h == crop_w ? crop_h : -1;
  return size_h == size_w ? size_h : -1;
}

OwlImageProcessorConfig default_owl_image_processor(OwlVariant v) {
  OwlImageProcessorConfig c;
  c.variant = v;
  c.norm.do_rescale = true;
  c.norm.rescale_factor = 1.0 / 255.0;
  c.norm.do_normalize = true;
  c.norm.mean = {0.48145466, 0.4578275, 0.40821073};  // OPENAI_CLIP_MEAN
  c.norm.std = {0.26862954, 0.26130258, 0.27577711};  // OPENAI_CLIP_STD
  if (v == OwlVariant::owlvit) {
    c.size_h = c.size_w = 768;
    c.crop_h = c.crop_w = 768;
    c.do_center_crop = true;
    c.do_pad = false;
  }
  return c;
}

OwlImageProcessorConfig parse_owl_image_processor_config(const ConfigReader& r, OwlVariant v) {
  OwlImageProcessorConfig c = default_owl_image_processor(v);
  c.do_resize = r.get_bool("do_resize", c.do_resize);
  read_size(r, "size", c.size_h, c.size_w);
  c.norm.do_rescale = r.get_bool("do_rescale", c.norm.do_rescale);
  c.norm.rescale_factor = r.get_double("rescale_factor", c.norm.rescale_factor);
  c.norm.do_normalize = r.get_bool("do_normalize", c.norm.do_normalize);
  c.norm.mean = r.get_doubles("image_mean", 3, c.norm.mean);
  c.norm.std = r.get_doubles("image_std", 3, c.norm.std);
  for (double s : c.norm.std)
    if (!(s != 0)) throw ModelError(r.where("image_std") + ": a standard deviation of 0");
  if (v == OwlVariant::owlvit) {
    if (r.has("resample"))
      c.resample = pil_resample_from_code(static_cast<int>(r.get_int("resample", 3)), r.where("resample"));
    c.do_center_crop = r.get_bool("do_center_crop", c.do_center_crop);
    read_size(r, "crop_size", c.crop_h, c.crop_w);
  } else {
    c.do_pad = r.get_bool("do_pad", c.do_pad);  // `resample` is saved but not used by Owlv2ImageProcessor
  }
  if (c.output_side() < 1)
    throw ModelError(r.where(v == OwlVariant::owlvit && c.do_center_crop ? "crop_size" : "size") +
                     ": OWL models take a square input; got " +
                     std::to_string(c.do_center_crop && v == OwlVariant::owlvit ? c.crop_w : c.size_w) + "x" +
                     std::to_string(c.do_center_crop && v == OwlVariant::owlvit ? c.crop_h : c.size_h));
  return c;
}

OwlImageProcessorConfig load_owl_image_processor_config(const std::filesystem::path& dir, OwlVariant v) {
  const auto path = dir / "preprocessor_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    log_info("{}: not found; using the {} image processor defaults", path.string(), owl_variant_name(v));
    return default_owl_image_processor(v);
  }
  const auto j = read_json_file(path);
  return parse_owl_image_processor_config(ConfigReader(j, path.string()), v);
}

std::vector<float> owl_preprocess_rgb(const cv::Mat& rgb, const OwlImageProcessorConfig& cfg) {
  if (rgb.empty() || rgb.type() != CV_8UC3) throw InputError("OWL preprocessing: expected a non-empty 8-bit RGB image");
  const auto S64 = cfg.output_side();
  if (S64 < 1) throw ModelError("OWL preprocessing: the configuration does not give a square input");
  const int S = static_cast<int>(S64);
  std::vector<float> out(static_cast<std::size_t>(3) * S * S);

  if (cfg.variant == OwlVariant::owlv2) {
    const int side = cfg.do_pad ? std::max(rgb.rows, rgb.cols) : 0;
    if (!cfg.do_pad && rgb.rows != rgb.cols && !cfg.do_resize)
      throw InputError("OWLv2 preprocessing: a " + std::to_string(rgb.cols) + "x" + std::to_string(rgb.rows) +
                       " image with do_pad and do_resize off cannot become " + std::to_string(S) + "x" + std::to_string(S));
    cv::Mat src = rgb.isContinuous() ? rgb : rgb.clone();
    NdSource ns;
    ns.data = src.ptr<std::uint8_t>(0);
    ns.h = src.rows;
    ns.w = src.cols;
    ns.channels = 3;
    ns.row_stride = src.step[0];
    ns.rescale = cfg.norm.do_rescale ? cfg.norm.rescale_factor : 1.0;
    ns.padded_h = cfg.do_pad ? side : src.rows;
    ns.padded_w = cfg.do_pad ? side : src.cols;
    ns.pad_value = 0.5f;  // Owlv2ImageProcessor.pad: constant 0.5 after the rescale
    const int oh = cfg.do_resize ? S : ns.padded_h, ow = cfg.do_resize ? S : ns.padded_w;
    if (oh != S || ow != S)
      throw InputError("OWLv2 preprocessing: with do_resize off the padded image must be " + std::to_string(S) + "x" +
                       std::to_string(S) + ", got " + std::to_string(ow) + "x" + std::to_string(oh));
    const std::vector<float> hwc = ndimage_resize(ns, S, S);  // [S, S, 3] in 0..1
    float mean[3] = {0, 0, 0}, stdv[3] = {1, 1, 1};
    if (cfg.norm.do_normalize)
      for (int c = 0; c < 3; ++c) {
        mean[c] = static_cast<float>(cfg.norm.mean[static_cast<std::size_t>(c)]);
        stdv[c] = static_cast<float>(cfg.norm.std[static_cast<std::size_t>(c)]);
      }
    const std::size_t plane = static_cast<std::size_t>(S) * S;
    for (std::size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) out[static_cast<std::size_t>(c) * plane + i] = (hwc[i * 3 + c] - mean[c]) / stdv[c];
    return out;
  }

  // owlvit
  cv::Mat img = rgb;
  if (cfg.do_resize) img = pil_resize(img, static_cast<int>(cfg.size_w), static_cast<int>(cfg.size_h), cfg.resample);
  if (cfg.do_center_crop) img = center_crop(img, static_cast<int>(cfg.crop_h), static_cast<int>(cfg.crop_w));
  if (img.rows != S || img.cols != S)
    throw InputError("OWL-ViT preprocessing: the image is " + std::to_string(img.cols) + "x" + std::to_string(img.rows) +
                     " after resize and crop, the model takes " + std::to_string(S) + "x" + std::to_string(S));
  rescale_normalize_rgb(img, cfg.norm, out.data(), S, S);
  return out;
}

std::array<float, 4> owl_box_scale(OwlVariant v, int original_h, int original_w) {
  const float h = static_cast<float>(original_h), w = static_cast<float>(original_w);
  if (v == OwlVariant::owlv2) {
    const float s = std::max(h, w);
    return {s, s, s, s};
  }
  return {w, h, w, h};
}

}  // namespace lli::models
