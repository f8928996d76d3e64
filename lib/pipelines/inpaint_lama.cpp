// Ref: advimman/lama bin/predict.py (refine=False), saicinpainting/training/trainers/default.py;
// Sanster/IOPaint iopaint/model/base.py (HDStrategy.CROP: _crop_box, _run_box). See inpaint_lama.h.
#include "pipelines/inpaint_lama.h"

#include <torch/torch.h>

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>

#include "core/cpu_allocator.h"
#include "core/torch_device.h"
#include "lli/error.h"
#include "lli/log.h"
#include "models/lama.h"

namespace lli::pipelines {

namespace m = lli::models;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_inputs(const cv::Mat& bgr, const cv::Mat& mask) {
  if (bgr.empty() || bgr.type() != CV_8UC3) throw InputError("LaMa: the image must be a non-empty 8-bit BGR image");
  if (mask.type() != CV_8UC1) throw InputError("LaMa: the mask must be an 8-bit single-channel image");
  if (mask.size() != bgr.size())
    throw InputError("LaMa: mask is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) +
                     " but the image is " + std::to_string(bgr.cols) + "x" + std::to_string(bgr.rows));
}

// [lo, lo + len) of length min(len, size) placed at lo, shifted to lie inside [0, size).
void fit_span(int& lo, int& len, int size) {
  len = std::min(len, size);
  lo = std::clamp(lo, 0, size - len);
}

// More parts than this: one region around the whole mask (the pairwise merge is quadratic).
constexpr std::size_t kMaxCropParts = 64;

}  // namespace

// ---- crop strategy -----------------------------------------------------------------------------

LamaCropPlan plan_lama_crop(cv::Size image, const cv::Rect& box, int max_side, int margin) {
  if (box.empty() || (box & cv::Rect(0, 0, image.width, image.height)) != box)
    throw RuntimeError("plan_lama_crop: box outside the image");
  margin = std::max(margin, 0);
  int w = box.width + 2 * margin, h = box.height + 2 * margin;
  int x = box.x + box.width / 2 - w / 2, y = box.y + box.height / 2 - h / 2;
  fit_span(x, w, image.width);
  fit_span(y, h, image.height);
  LamaCropPlan p;
  p.region = cv::Rect(x, y, w, h) | box;  // contains the box (a no-op but for rounding)
  p.model_size = p.region.size();
  const int longer = std::max(p.region.width, p.region.height);
  if (max_side > 0 && longer > max_side) {
    const double s = static_cast<double>(max_side) / longer;
    p.model_size = cv::Size(std::max(1, static_cast<int>(std::lround(p.region.width * s))),
                            std::max(1, static_cast<int>(std::lround(p.region.height * s))));
  }
  return p;
}

std::vector<LamaCropPlan> plan_lama_crops(const cv::Mat& mask, int max_side, int margin) {
  if (mask.empty() || mask.type() != CV_8UC1) throw InputError("LaMa: the mask must be an 8-bit single-channel image");
  cv::Mat hole = mask > 0, labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(hole, labels, stats, centroids, 8, CV_32S);
  std::vector<cv::Rect> boxes;
  for (int i = 1; i < n; ++i)
    boxes.emplace_back(stats.at<int>(i, cv::CC_STAT_LEFT), stats.at<int>(i, cv::CC_STAT_TOP),
                       stats.at<int>(i, cv::CC_STAT_WIDTH), stats.at<int>(i, cv::CC_STAT_HEIGHT));
  if (boxes.size() > kMaxCropParts) {
    cv::Rect all = boxes[0];
    for (const auto& b : boxes) all |= b;
    boxes = {all};
  }
  const cv::Size size = mask.size();
  for (bool merged = true; merged;) {  // merge parts whose regions overlap until none do
    merged = false;
    for (std::size_t i = 0; i < boxes.size() && !merged; ++i)
      for (std::size_t j = i + 1; j < boxes.size() && !merged; ++j) {
        const auto a = plan_lama_crop(size, boxes[i], max_side, margin).region;
        const auto b = plan_lama_crop(size, boxes[j], max_side, margin).region;
        if ((a & b).area() > 0) {
          boxes[i] |= boxes[j];
          boxes.erase(boxes.begin() + static_cast<std::ptrdiff_t>(j));
          merged = true;
        }
      }
  }
  std::vector<LamaCropPlan> plans;
  for (const auto& b : boxes) plans.push_back(plan_lama_crop(size, b, max_side, margin));
  return plans;
}

cv::Mat inpaint_cropped(const cv::Mat& bgr, const cv::Mat& mask, const std::vector<LamaCropPlan>& plans,
                        const InpaintFn& fn) {
  check_inputs(bgr, mask);
  cv::Mat out = bgr.clone();
  const cv::Mat hole = mask > 0;
  for (const auto& p : plans) {
    cv::Mat img = bgr(p.region), m = hole(p.region);
    const bool resize = p.model_size != p.region.size();
    if (resize) {
      cv::Mat img_s, m_s;
      cv::resize(img, img_s, p.model_size, 0, 0, cv::INTER_AREA);
      cv::resize(m, m_s, p.model_size, 0, 0, cv::INTER_AREA);
      img = img_s;
      m = m_s > 0;  // any coverage stays a hole
    }
    cv::Mat res = fn(img, m);
    if (res.size() != img.size() || res.type() != CV_8UC3)
      throw RuntimeError("inpaint_cropped: the inpainting function returned a different size or type");
    if (resize) {
      cv::Mat up;
      cv::resize(res, up, p.region.size(), 0, 0, cv::INTER_CUBIC);
      res = up;
    }
    res.copyTo(out(p.region), hole(p.region));
  }
  return out;
}

bool lama_model_present(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::is_regular_file(dir / "generator.safetensors", ec) &&
         std::filesystem::is_regular_file(dir / "config.yaml", ec);
}

// ---- LamaInpainter -----------------------------------------------------------------------------

struct LamaInpainter::Impl {
  m::LamaGenerator model{nullptr};
  LamaOptions opts;
  DTypeChoice dtype = DTypeChoice::f32;
  torch::Device device = torch::kCPU;
  std::string dir;
  mutable LamaTimings timings;

  // One generator run at the input's own size; adds to the timings.
  cv::Mat run(const cv::Mat& bgr, const cv::Mat& mask) const {
    torch::NoGradGuard no_grad;
    const double t0 = now_ms();
    auto in = m::lama_preprocess(bgr, mask, model->cfg);
    const double t1 = now_ms();
    torch::Tensor pred;
    try {
      pred = model->forward(in.model_input);  // [1, 3, Hp, Wp] fp32
      if (pred.is_cuda()) torch::cuda::synchronize();
    } catch (const c10::Error& e) {
      throw RuntimeError("LaMa: the generator failed on a " + std::to_string(in.model_input.size(3)) + "x" +
                         std::to_string(in.model_input.size(2)) + " input: " + e.what_without_backtrace());
    }
    if (pred.sizes() != in.image.sizes())
      throw ModelError("LaMa: the generator returned " + std::to_string(pred.size(3)) + "x" +
                       std::to_string(pred.size(2)) + " for a " + std::to_string(in.image.size(3)) + "x" +
                       std::to_string(in.image.size(2)) +
                       " input (dataset.pad_out_to_modulo must be a multiple of 2^n_downsampling)");
    const double t2 = now_ms();
    cv::Mat out = m::lama_to_bgr_u8(m::lama_composite(in, pred));
    const double t3 = now_ms();
    timings.preprocess_ms += t1 - t0;
    timings.model_ms += t2 - t1;
    timings.postprocess_ms += t3 - t2;
    timings.model_runs += 1;
    timings.model_size = bgr.size();
    return out;
  }

  void reset_timings() const { timings = LamaTimings{}; }
};

LamaInpainter::LamaInpainter(const std::filesystem::path& dir, const LamaOptions& opts)
    : impl_(std::make_unique<Impl>()) {
  check_device_available(opts.device);
  impl_->opts = opts;
  impl_->dtype = resolve_dtype(opts.dtype, opts.device);
  impl_->device = to_torch_device(opts.device);
  impl_->dir = dir.string();
  m::LamaLoadOptions lo;
  lo.dtype = to_torch_dtype(impl_->dtype);
  lo.device = impl_->device;
  impl_->model = m::load_lama(dir, lo);
  // Every call allocates the same ~100 large activation sizes: keep them for the next call.
  cpu_allocator_reserve_cache(std::size_t{1024} << 20);
}

LamaInpainter::~LamaInpainter() = default;
LamaInpainter::LamaInpainter(LamaInpainter&&) noexcept = default;
LamaInpainter& LamaInpainter::operator=(LamaInpainter&&) noexcept = default;

const LamaTimings& LamaInpainter::timings() const { return impl_->timings; }
const LamaOptions& LamaInpainter::options() const { return impl_->opts; }

std::string LamaInpainter::describe() const {
  const auto& c = impl_->model->cfg;
  auto ratio = [](const m::LamaFFCConfig& k) {
    return fmt::format("{:g}/{:g}{}", k.ratio_gin, k.ratio_gout, k.enable_lfu ? " lfu" : "");
  };
  return fmt::format("LaMa {}: ngf {}, {} downsamplings, {} FFC blocks (ratios init {}, down {}, blocks {}), device {}, "
                     "convolutions {} (FFT fp32)",
                     impl_->dir, c.ngf, c.n_downsampling, c.n_blocks, ratio(c.init_conv), ratio(c.downsample_conv),
                     ratio(c.resnet_conv), impl_->device.str(), dtype_choice_name(impl_->dtype));
}

cv::Mat LamaInpainter::inpaint_full(const cv::Mat& bgr, const cv::Mat& mask) const {
  check_inputs(bgr, mask);
  impl_->reset_timings();
  impl_->timings.regions = {cv::Rect(0, 0, bgr.cols, bgr.rows)};
  return impl_->run(bgr, mask);
}

cv::Mat LamaInpainter::inpaint(const cv::Mat& bgr, const cv::Mat& mask) const {
  check_inputs(bgr, mask);
  const int max_side = impl_->opts.max_side;
  if (max_side <= 0 || std::max(bgr.cols, bgr.rows) <= max_side) return inpaint_full(bgr, mask);
  impl_->reset_timings();
  auto plans = plan_lama_crops(mask, max_side, impl_->opts.crop_margin);
  impl_->timings.cropped = true;
  for (const auto& p : plans) impl_->timings.regions.push_back(p.region);
  if (plans.empty()) log_info("LaMa: the mask is empty; the image is unchanged");
  return inpaint_cropped(bgr, mask, plans, [this](const cv::Mat& b, const cv::Mat& m) { return impl_->run(b, m); });
}

}  // namespace lli::pipelines
