// Ref: transformers/models/sam/image_processing_sam.py SamImageProcessor.preprocess /
// _get_preprocess_shape / post_process_masks, processing_sam.py _normalize_coordinates (v4.45).
#include "models/sam_preprocess.h"

#include <opencv2/imgproc.hpp>

#include <string>

#include "lli/error.h"
#include "models/image_normalize.h"
#include "lli/log.h"

namespace lli::models {

SamImageProcessorConfig parse_sam_image_processor_config(const ConfigReader& r) {
  SamImageProcessorConfig c;
  c.do_convert_rgb = r.get_bool("do_convert_rgb", c.do_convert_rgb);
  c.do_resize = r.get_bool("do_resize", c.do_resize);
  if (r.has("size")) {
    const auto& s = r.at("size");
    if (s.is_number_integer()) {
      c.longest_edge = s.get<std::int64_t>();  // get_size_dict(max_size=size)
    } else if (s.is_object() && r.child("size").has("longest_edge")) {
      c.longest_edge = r.child("size").get_int("longest_edge", 0);
    } else {
      throw ModelError(r.where("size") + ": expected {\"longest_edge\": N}, got " + s.dump());
    }
  }
  if (r.has("resample")) c.resample = pil_resample_from_code(static_cast<int>(r.get_int("resample", 2)), r.where("resample"));
  c.do_rescale = r.get_bool("do_rescale", c.do_rescale);
  c.rescale_factor = r.get_double("rescale_factor", c.rescale_factor);
  c.do_normalize = r.get_bool("do_normalize", c.do_normalize);
  c.image_mean = r.get_doubles("image_mean", 3, c.image_mean);
  c.image_std = r.get_doubles("image_std", 3, c.image_std);
  for (double s : c.image_std)
    if (s == 0.0) throw ModelError(r.where("image_std") + ": must not contain 0");
  c.do_pad = r.get_bool("do_pad", c.do_pad);
  if (r.has("pad_size")) {
    const auto& s = r.at("pad_size");
    if (s.is_number_integer()) {
      c.pad_height = c.pad_width = s.get<std::int64_t>();
    } else if (s.is_object() && r.child("pad_size").has("height") && r.child("pad_size").has("width")) {
      c.pad_height = r.child("pad_size").get_int("height", 0);
      c.pad_width = r.child("pad_size").get_int("width", 0);
    } else {
      throw ModelError(r.where("pad_size") + ": expected {\"height\": H, \"width\": W}, got " + s.dump());
    }
  }
  if (c.do_resize && c.longest_edge <= 0) throw ModelError(r.where("size") + ": longest_edge must be positive");
  if (c.do_pad && (c.pad_height <= 0 || c.pad_width <= 0)) throw ModelError(r.where("pad_size") + ": must be positive");
  return c;
}

SamImageProcessorConfig load_sam_image_processor_config(const std::filesystem::path& dir) {
  auto path = dir / "preprocessor_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    log_info("{}: absent; using SamImageProcessor defaults (longest edge 1024, bilinear, pad 1024x1024)", path.string());
    return {};
  }
  auto j = read_json_file(path);
  return parse_sam_image_processor_config(ConfigReader(j, path.string()));
}

std::pair<int, int> sam_preprocess_shape(int height, int width, std::int64_t longest_edge) {
  const double scale = static_cast<double>(longest_edge) * 1.0 / static_cast<double>(std::max(height, width));
  const double nh = height * scale, nw = width * scale;
  return {static_cast<int>(nh + 0.5), static_cast<int>(nw + 0.5)};
}

SamImageInputs sam_preprocess_rgb(const cv::Mat& rgb, const SamImageProcessorConfig& cfg) {
  if (rgb.empty() || rgb.type() != CV_8UC3)
    throw InputError("SAM preprocessing: expected a non-empty 8-bit 3-channel image");
  SamImageInputs out;
  out.original_h = rgb.rows;
  out.original_w = rgb.cols;
  cv::Mat img = rgb;
  if (cfg.do_resize) {
    auto [nh, nw] = sam_preprocess_shape(rgb.rows, rgb.cols, cfg.longest_edge);
    if (nh < 1 || nw < 1)
      throw InputError("SAM preprocessing: a " + std::to_string(rgb.cols) + "x" + std::to_string(rgb.rows) +
                       " image resizes to " + std::to_string(nw) + "x" + std::to_string(nh) + " (too thin)");
    img = pil_resize(rgb, nw, nh, cfg.resample);
  }
  out.reshaped_h = img.rows;
  out.reshaped_w = img.cols;
  const int H = cfg.do_pad ? static_cast<int>(cfg.pad_height) : img.rows;
  const int W = cfg.do_pad ? static_cast<int>(cfg.pad_width) : img.cols;
  if (img.rows > H || img.cols > W)
    throw InputError("SAM preprocessing: the resized image " + std::to_string(img.cols) + "x" + std::to_string(img.rows) +
                     " is larger than pad_size " + std::to_string(W) + "x" + std::to_string(H));
  out.pixel_values = torch::zeros({1, 3, H, W}, torch::kFloat32);
  float* o = out.pixel_values.data_ptr<float>();
  rescale_normalize_rgb(img, {cfg.do_rescale, cfg.rescale_factor, cfg.do_normalize, cfg.image_mean, cfg.image_std}, o, H, W);
  return out;
}

SamImageInputs sam_preprocess_bgr(const cv::Mat& bgr, const SamImageProcessorConfig& cfg) {
  if (bgr.empty() || bgr.type() != CV_8UC3)
    throw InputError("SAM preprocessing: expected a non-empty 8-bit 3-channel image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return sam_preprocess_rgb(rgb, cfg);
}

SamCoordScale sam_coord_scale(int original_h, int original_w, const SamImageProcessorConfig& cfg) {
  // SamProcessor always scales to the longest-edge size (even when do_resize is false).
  auto [nh, nw] = sam_preprocess_shape(original_h, original_w, cfg.longest_edge);
  return {static_cast<double>(nw) / original_w, static_cast<double>(nh) / original_h};
}

torch::Tensor sam_scale_points(const torch::Tensor& xy, const SamCoordScale& s) {
  auto p = xy.to(torch::kFloat64).clone();  // [..., 2]
  p.select(-1, 0).mul_(s.sx);
  p.select(-1, 1).mul_(s.sy);
  return p;
}

torch::Tensor sam_scale_boxes(const torch::Tensor& boxes, const SamCoordScale& s) {
  auto b = boxes.to(torch::kFloat32).to(torch::kFloat64);  // [..., 4]
  auto shape = b.sizes().vec();
  auto p = b.reshape({-1, 2, 2});
  p.select(-1, 0).mul_(s.sx);
  p.select(-1, 1).mul_(s.sy);
  return p.reshape(shape);
}

torch::Tensor sam_post_process_masks(const torch::Tensor& masks, const SamImageInputs& sizes, int pad_h, int pad_w) {
  torch::NoGradGuard no_grad;
  if (masks.dim() != 4) throw RuntimeError("sam_post_process_masks: masks must be [N, m, h, w], got " + c10::str(masks.sizes()));
  auto m = masks.to(torch::kFloat32);
  auto up = at::upsample_bilinear2d(m, {pad_h, pad_w}, /*align_corners=*/false);
  up = up.narrow(2, 0, sizes.reshaped_h).narrow(3, 0, sizes.reshaped_w);
  // Same size (a longest_edge-sized original): bilinear resampling at scale 1 is the identity.
  if (sizes.reshaped_h == sizes.original_h && sizes.reshaped_w == sizes.original_w) return up.contiguous();
  return at::upsample_bilinear2d(up, {sizes.original_h, sizes.original_w}, /*align_corners=*/false);
}

SamMaskStats sam_mask_stats(const torch::Tensor& logits, double threshold, double offset, std::uint8_t* binary) {
  if (logits.dim() != 2) throw RuntimeError("sam_mask_stats: logits must be [H, W], got " + c10::str(logits.sizes()));
  auto l = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto H = l.size(0), W = l.size(1);
  const float* p = l.data_ptr<float>();
  const float t = static_cast<float>(threshold), hi = static_cast<float>(threshold + offset),
              lo = static_cast<float>(threshold - offset);
  SamMaskStats st;
  for (std::int64_t y = 0; y < H; ++y) {
    const float* row = p + y * W;
    std::int64_t n = 0, nh = 0, nl = 0, first = -1, last = -1;
    for (std::int64_t x = 0; x < W; ++x) {
      const float v = row[x];
      const bool in = v > t;
      n += in;
      nh += v > hi;
      nl += v > lo;
      if (binary) binary[y * W + x] = in ? 255 : 0;
      if (in) {
        if (first < 0) first = x;
        last = x;
      }
    }
    st.area += n;
    st.above_hi += nh;
    st.above_lo += nl;
    if (n > 0) {
      if (st.y0 < 0) st.y0 = static_cast<int>(y);
      st.y1 = static_cast<int>(y);
      if (st.x0 < 0 || first < st.x0) st.x0 = static_cast<int>(first);
      if (last > st.x1) st.x1 = static_cast<int>(last);
    }
  }
  return st;
}

}  // namespace lli::models
