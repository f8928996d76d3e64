// Ref: transformers SamProcessor / SamModel / post_process_masks (v4.45), pipelines/
// mask_generation.py + image_processing_sam.py (_build_point_grid, filter_masks,
// _compute_stability_score, _batched_mask_to_box, _postprocess_for_amg); segment_anything
// SamPredictor / SamAutomaticMaskGenerator. See segment_sam.h for the semantics.
#include "pipelines/segment_sam.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "models/sam.h"
#include "models/sam_preprocess.h"
#include "pipelines/feature_cache.h"

namespace lli::pipelines {

namespace m = lli::models;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr const char* kEmbeddingFormat = "lli-sam-embedding";
constexpr const char* kEmbeddingVersion = "1";
constexpr const char* kEmbeddingTensor = "image_embeddings";

[[noreturn]] void embedding_error(const std::string& source, const std::string& why) {
  throw InputError(source + ": not a usable SAM embedding: " + why);
}

cv::Mat float_to_mat(const torch::Tensor& t) {  // [h, w] -> CV_32FC1
  auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  cv::Mat m(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_32FC1);
  std::memcpy(m.data, c.data_ptr(), static_cast<std::size_t>(c.numel()) * 4);
  return m;
}

// The per-mask fields from original-size logits [H, W] (one pass, see models::sam_mask_stats).
SamMask make_mask(const torch::Tensor& logits, const torch::Tensor& low_res, float score, double offset,
                  m::SamMaskStats* stats_out = nullptr) {
  SamMask r;
  r.mask = cv::Mat(static_cast<int>(logits.size(0)), static_cast<int>(logits.size(1)), CV_8UC1);
  const auto st = m::sam_mask_stats(logits, 0.0, offset, r.mask.data);
  r.score = score;
  r.stability = static_cast<float>(st.stability());
  r.low_res_logits = float_to_mat(low_res);
  r.area = static_cast<int>(st.area);
  if (st.area > 0) r.bbox = cv::Rect(st.x0, st.y0, st.x1 - st.x0 + 1, st.y1 - st.y0 + 1);
  if (stats_out) *stats_out = st;
  return r;
}

// Prompts per decoder call in segment(): small batches keep each activation under glibc's 32 MiB
// mmap threshold (4 measured ~2x faster per prompt than 16 on 2 cores).
constexpr std::int64_t kPromptBatch = 4;

// Masks upscaled to the original size at once: about 64 MiB of fp32 logits per chunk.
std::size_t masks_per_chunk(const m::SamImageInputs& s) {
  const auto per_mask = static_cast<std::size_t>(s.original_h) * static_cast<std::size_t>(s.original_w) * 4;
  return std::max<std::size_t>(1, (std::size_t{64} << 20) / std::max<std::size_t>(1, per_mask));
}

torch::Dtype to_torch_dtype(DTypeChoice d) {
  switch (d) {
    case DTypeChoice::bf16: return torch::kBFloat16;
    case DTypeChoice::f16: return torch::kHalf;
    default: return torch::kFloat32;
  }
}

}  // namespace

// ---- small public helpers -----------------------------------------------------------------

SamMultimask parse_sam_multimask(const std::string& s) {
  if (s == "best") return SamMultimask::best;
  if (s == "off" || s == "single") return SamMultimask::off;
  if (s == "all") return SamMultimask::all;
  throw UsageError("multimask mode \"" + s + "\" is not one of: best, off, all");
}

const char* sam_multimask_name(SamMultimask m) {
  switch (m) {
    case SamMultimask::best: return "best";
    case SamMultimask::off: return "off";
    case SamMultimask::all: return "all";
  }
  return "?";
}

std::vector<SamPoint> sample_stroke_points(const std::vector<XY>& polyline, double width, bool positive,
                                           double spacing, int cap) {
  std::vector<SamPoint> out;
  if (polyline.empty()) return out;
  const double step = spacing > 0 ? spacing : std::max(8.0, width);
  out.push_back({polyline[0].x, polyline[0].y, positive});
  double carry = 0;  // arc length walked since the last emitted point
  for (std::size_t i = 1; i < polyline.size(); ++i) {
    const double x0 = polyline[i - 1].x, y0 = polyline[i - 1].y;
    const double dx = polyline[i].x - x0, dy = polyline[i].y - y0;
    const double len = std::hypot(dx, dy);
    if (len <= 0) continue;
    double t = step - carry;  // distance along this segment of the next sample
    while (t <= len) {
      out.push_back({x0 + dx * t / len, y0 + dy * t / len, positive});
      t += step;
    }
    carry = len - (t - step);
  }
  const auto& last = polyline.back();
  if (std::hypot(out.back().x - last.x, out.back().y - last.y) > 1e-6) out.push_back({last.x, last.y, positive});
  if (cap > 0 && static_cast<int>(out.size()) > cap) {
    std::vector<SamPoint> sub;
    const double n = static_cast<double>(out.size() - 1);
    for (int i = 0; i < cap; ++i) {
      const auto idx = cap == 1 ? 0 : static_cast<std::size_t>(std::lround(i * n / (cap - 1)));
      sub.push_back(out[idx]);
    }
    out.swap(sub);
  }
  return out;
}

namespace {
std::vector<SamPoint> even_subsample(const std::vector<SamPoint>& v, std::size_t k) {
  if (v.size() <= k) return v;
  std::vector<SamPoint> out;
  const double n = static_cast<double>(v.size() - 1);
  for (std::size_t i = 0; i < k; ++i)
    out.push_back(v[k == 1 ? 0 : static_cast<std::size_t>(std::lround(static_cast<double>(i) * n / (k - 1)))]);
  return out;
}
}  // namespace

SamPrompt sam_prompt_from(const Prompt& p, SamMultimask multimask, const SamStrokeSampling& s) {
  if (p.coords != Coords::pixels)
    throw RuntimeError("sam_prompt_from: the prompt must be converted with to_pixels() first");
  SamPrompt out;
  out.multimask = multimask;
  for (const auto& pt : p.points) out.points.push_back({pt.x, pt.y, pt.positive});
  for (const auto& b : p.boxes) out.boxes.push_back({b.x0, b.y0, b.x1, b.y1});
  std::vector<std::vector<SamPoint>> per_stroke;
  std::size_t total = 0;
  for (const auto& st : p.strokes) {
    per_stroke.push_back(sample_stroke_points(st.points, st.width, st.positive, s.spacing, s.per_stroke_cap));
    total += per_stroke.back().size();
  }
  std::vector<SamPoint> stroke_points;
  for (auto& v : per_stroke) {
    if (s.total_cap > 0 && total > static_cast<std::size_t>(s.total_cap)) {
      const auto quota = std::max<std::size_t>(1, static_cast<std::size_t>(s.total_cap) * v.size() / total);
      v = even_subsample(v, quota);
    }
    stroke_points.insert(stroke_points.end(), v.begin(), v.end());
  }
  if (s.total_cap > 0) stroke_points = even_subsample(stroke_points, static_cast<std::size_t>(s.total_cap));
  out.points.insert(out.points.end(), stroke_points.begin(), stroke_points.end());
  return out;
}

std::vector<int> sam_box_nms(const std::vector<cv::Vec4d>& b, const std::vector<float>& scores, double thr) {
  if (b.size() != scores.size()) throw RuntimeError("sam_box_nms: boxes and scores differ in length");
  std::vector<int> order(b.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return scores[i] > scores[j]; });
  auto area = [](const cv::Vec4d& r) { return (r[2] - r[0]) * (r[3] - r[1]); };
  std::vector<int> keep;
  std::vector<bool> removed(b.size(), false);
  for (std::size_t a = 0; a < order.size(); ++a) {
    const int i = order[a];
    if (removed[i]) continue;
    keep.push_back(i);
    for (std::size_t c = a + 1; c < order.size(); ++c) {
      const int j = order[c];
      if (removed[j]) continue;
      const double iw = std::max(0.0, std::min(b[i][2], b[j][2]) - std::max(b[i][0], b[j][0]));
      const double ih = std::max(0.0, std::min(b[i][3], b[j][3]) - std::max(b[i][1], b[j][1]));
      const double inter = iw * ih;
      const double iou = inter / (area(b[i]) + area(b[j]) - inter);  // NaN for two empty boxes: kept
      if (iou > thr) removed[j] = true;
    }
  }
  return keep;
}

// ---- embedding ----------------------------------------------------------------------------

struct SamEmbedding::Impl {
  torch::Tensor embeddings;  // [1, C, g, g] fp32 on the model's device
  m::SamImageInputs sizes;   // original / reshaped sizes (pixel_values undefined)
  std::string fingerprint;
  std::string encoder_dtype;
};

int SamEmbedding::image_width() const { return impl().sizes.original_w; }
int SamEmbedding::image_height() const { return impl().sizes.original_h; }
const SamEmbedding::Impl& SamEmbedding::impl() const {
  if (!impl_) throw RuntimeError("SAM: empty image embedding (compute_embedding first)");
  return *impl_;
}

// ---- segmenter ----------------------------------------------------------------------------

struct SamSegmenter::Impl {
  m::SamModel model{nullptr};
  m::SamImageProcessorConfig pc;
  torch::Device device = torch::kCPU;
  DTypeChoice dtype = DTypeChoice::f32;
  std::string fingerprint;
  std::string dir;
  SamTimings timings;

  void check_embedding(const SamEmbedding& e) const {
    if (e.impl().fingerprint != fingerprint)
      throw InputError("SAM: the image embedding was computed by another model");
  }

  // Original-size logits [1, K, H, W] for low-res masks [K, lr, lr].
  torch::Tensor upscale(const torch::Tensor& low_res, const m::SamImageInputs& sizes) const {
    return m::sam_post_process_masks(low_res.unsqueeze(0), sizes, static_cast<int>(pc.do_pad ? pc.pad_height : sizes.reshaped_h),
                                     static_cast<int>(pc.do_pad ? pc.pad_width : sizes.reshaped_w));
  }
};

SamSegmenter::SamSegmenter(const std::filesystem::path& dir, const SamOptions& opts) : impl_(std::make_unique<Impl>()) {
  check_device_available(opts.device);
  impl_->dtype = resolve_dtype(opts.dtype, opts.device);
  impl_->device = opts.device.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts.device.index))
                                   : torch::Device(torch::kCPU);
  impl_->dir = dir.string();
  m::SamLoadOptions lo;
  lo.dtype = to_torch_dtype(impl_->dtype);
  lo.device = impl_->device;
  impl_->model = m::load_sam(dir, lo);
  impl_->pc = m::load_sam_image_processor_config(dir);
  const auto& cfg = impl_->model->cfg;
  const auto H = impl_->pc.do_pad ? impl_->pc.pad_height : 0, W = impl_->pc.do_pad ? impl_->pc.pad_width : 0;
  if (H != cfg.vision.image_size || W != cfg.vision.image_size)
    throw ModelError((dir / "preprocessor_config.json").string() + ": pad_size " + std::to_string(W) + "x" +
                     std::to_string(H) + " does not give the " + std::to_string(cfg.vision.image_size) +
                     "x" + std::to_string(cfg.vision.image_size) + " input the image encoder expects");
  // Fingerprint: config.json + a few small weights that differ between checkpoints.
  impl_->fingerprint = model_fingerprint(dir / "config.json", {impl_->model->shared_image_embedding->positional_embedding,
                                                                impl_->model->mask_decoder->iou_token->weight,
                                                                impl_->model->vision_encoder->patch_embed->projection->bias});
}

SamSegmenter::~SamSegmenter() = default;
SamSegmenter::SamSegmenter(SamSegmenter&&) noexcept = default;
SamSegmenter& SamSegmenter::operator=(SamSegmenter&&) noexcept = default;

int SamSegmenter::low_res_size() const { return static_cast<int>(impl_->model->cfg.low_res_size()); }
const std::string& SamSegmenter::fingerprint() const { return impl_->fingerprint; }
const SamTimings& SamSegmenter::timings() const { return impl_->timings; }

std::string SamSegmenter::describe() const {
  const auto& c = impl_->model->cfg;
  return "SAM " + impl_->dir + ": ViT D" + std::to_string(c.vision.hidden_size) + " L" +
         std::to_string(c.vision.num_hidden_layers) + " H" + std::to_string(c.vision.num_attention_heads) + ", input " +
         std::to_string(c.vision.image_size) + ", embedding " + std::to_string(c.embed_dim()) + "x" +
         std::to_string(c.grid()) + "x" + std::to_string(c.grid()) + ", device " + impl_->device.str() +
         ", encoder " + dtype_choice_name(impl_->dtype);
}

SamEmbedding SamSegmenter::compute_embedding(const cv::Mat& bgr) const {
  torch::NoGradGuard no_grad;
  const double t0 = now_ms();
  auto inputs = m::sam_preprocess_bgr(bgr, impl_->pc);
  const double t1 = now_ms();
  auto emb = impl_->model->get_image_embeddings(inputs.pixel_values);  // [1, C, g, g] fp32
  if (emb.is_cuda()) torch::cuda::synchronize();
  const double t2 = now_ms();
  impl_->timings.preprocess_ms = t1 - t0;
  impl_->timings.encoder_ms = t2 - t1;
  auto e = std::make_shared<SamEmbedding::Impl>();
  e->embeddings = emb;
  e->sizes = inputs;
  e->sizes.pixel_values = torch::Tensor();
  e->fingerprint = impl_->fingerprint;
  e->encoder_dtype = dtype_choice_name(impl_->dtype);
  return SamEmbedding(e);
}

std::string SamSegmenter::embedding_to_bytes(const SamEmbedding& e) const {
  const auto& d = e.impl();
  return feature_cache_bytes({{kEmbeddingTensor, d.embeddings}},
                             {{"format", kEmbeddingFormat},
                              {"version", kEmbeddingVersion},
                              {"fingerprint", d.fingerprint},
                              {"original_h", std::to_string(d.sizes.original_h)},
                              {"original_w", std::to_string(d.sizes.original_w)},
                              {"reshaped_h", std::to_string(d.sizes.reshaped_h)},
                              {"reshaped_w", std::to_string(d.sizes.reshaped_w)},
                              {"encoder_dtype", d.encoder_dtype}});
}

SamEmbedding SamSegmenter::embedding_from_bytes(std::string_view bytes, const std::string& source) const {
  const auto& cfg = impl_->model->cfg;
  FeatureCacheSpec spec;
  spec.what = "SAM embedding";
  spec.format = kEmbeddingFormat;
  spec.version = kEmbeddingVersion;
  spec.fingerprint = impl_->fingerprint;
  spec.shapes[kEmbeddingTensor] = {1, cfg.embed_dim(), cfg.grid(), cfg.grid()};
  std::map<std::string, torch::Tensor> tensors;
  const auto meta = parse_feature_cache(bytes, source, spec, tensors);
  auto to_int = [&](const char* key) { return feature_cache_positive_int(meta, key, source, spec.what); };
  m::SamImageInputs sizes;
  sizes.original_h = to_int("original_h");
  sizes.original_w = to_int("original_w");
  sizes.reshaped_h = to_int("reshaped_h");
  sizes.reshaped_w = to_int("reshaped_w");
  auto expect = m::sam_preprocess_shape(sizes.original_h, sizes.original_w, impl_->pc.longest_edge);
  if (impl_->pc.do_resize && (expect.first != sizes.reshaped_h || expect.second != sizes.reshaped_w))
    embedding_error(source, "resized size " + std::to_string(sizes.reshaped_w) + "x" + std::to_string(sizes.reshaped_h) +
                                " does not follow from the original " + std::to_string(sizes.original_w) + "x" +
                                std::to_string(sizes.original_h));
  auto e = std::make_shared<SamEmbedding::Impl>();
  e->embeddings = tensors[kEmbeddingTensor].to(impl_->device);
  e->sizes = sizes;
  e->fingerprint = impl_->fingerprint;
  auto dt = meta.find("encoder_dtype");
  e->encoder_dtype = dt == meta.end() ? "" : dt->second;
  return SamEmbedding(e);
}

std::vector<SamMask> SamSegmenter::segment(const SamEmbedding& e, const SamPrompt& prompt) const {
  torch::NoGradGuard no_grad;
  impl_->check_embedding(e);
  const auto& d = e.impl();
  const int lr = low_res_size();
  if (prompt.points.empty() && prompt.boxes.empty() && prompt.mask_prompt.empty())
    throw InputError("SAM: nothing to segment (no points, boxes or mask prompt)");
  for (std::size_t i = 0; i < prompt.points.size(); ++i)
    if (!std::isfinite(prompt.points[i].x) || !std::isfinite(prompt.points[i].y))
      throw InputError("SAM: point " + std::to_string(i) + " has a non-finite coordinate");
  for (std::size_t i = 0; i < prompt.boxes.size(); ++i) {
    const auto& b = prompt.boxes[i];
    if (!std::isfinite(b.x0) || !std::isfinite(b.y0) || !std::isfinite(b.x1) || !std::isfinite(b.y1) || b.x1 < b.x0 ||
        b.y1 < b.y0)
      throw InputError("SAM: box " + std::to_string(i) + " is not (x0, y0, x1, y1) with x0 <= x1, y0 <= y1");
  }
  if (!prompt.mask_prompt.empty() &&
      (prompt.mask_prompt.type() != CV_32FC1 || prompt.mask_prompt.rows != lr || prompt.mask_prompt.cols != lr))
    throw InputError("SAM: a mask prompt must be a " + std::to_string(lr) + "x" + std::to_string(lr) +
                     " float logit map (the low-res frame)");

  const double t0 = now_ms();
  const auto scale = m::sam_coord_scale(d.sizes.original_h, d.sizes.original_w, impl_->pc);
  const auto n = static_cast<std::int64_t>(prompt.points.size());
  const auto nb = static_cast<std::int64_t>(prompt.boxes.size());
  m::SamPromptTensors t;
  if (n > 0) {
    std::vector<double> xy;
    std::vector<std::int64_t> labels;
    for (const auto& p : prompt.points) {
      xy.push_back(p.x);
      xy.push_back(p.y);
      labels.push_back(p.positive ? m::sam_label_positive : m::sam_label_negative);
    }
    const auto pb = std::max<std::int64_t>(1, nb);
    t.points = m::sam_scale_points(torch::tensor(xy, torch::kFloat64).view({1, 1, n, 2}), scale)
                   .expand({1, pb, n, 2})
                   .contiguous();
    t.labels = torch::tensor(labels, torch::kInt64).view({1, 1, n}).expand({1, pb, n}).contiguous();
  }
  if (nb > 0) {
    std::vector<double> bx;
    for (const auto& b : prompt.boxes) bx.insert(bx.end(), {b.x0, b.y0, b.x1, b.y1});
    t.boxes = m::sam_scale_boxes(torch::tensor(bx, torch::kFloat64).view({1, nb, 4}), scale);
  }
  if (!prompt.mask_prompt.empty()) {
    cv::Mat mp = prompt.mask_prompt.isContinuous() ? prompt.mask_prompt : prompt.mask_prompt.clone();
    t.masks = torch::from_blob(mp.data, {1, 1, lr, lr}, torch::kFloat32).clone();
  }
  const bool multi = prompt.multimask != SamMultimask::off;
  // Prompts (boxes) are independent in the decoder: run them kPromptBatch at a time so that a
  // long box list does not need one giant batch, and upscale kept masks in bounded chunks.
  const auto pb = t.boxes.defined() ? nb : std::int64_t{1};
  std::vector<torch::Tensor> ious, lows;
  for (std::int64_t s0 = 0; s0 < pb; s0 += kPromptBatch) {
    const auto b = std::min(kPromptBatch, pb - s0);
    m::SamPromptTensors tb = t;
    if (t.boxes.defined()) {
      tb.boxes = t.boxes.narrow(1, s0, b);
      if (t.points.defined()) {
        tb.points = t.points.narrow(1, s0, b);
        tb.labels = t.labels.narrow(1, s0, b);
      }
    }
    auto out = impl_->model->decode(d.embeddings, tb, multi);
    ious.push_back(out.iou_scores[0].to(torch::kCPU));  // [b, m]
    lows.push_back(out.pred_masks[0]);                  // [b, m, lr, lr]
  }
  auto iou = torch::cat(ious, 0);
  auto masks = torch::cat(lows, 0);
  const double t1 = now_ms();

  // Selected (prompt, token) pairs.
  std::vector<std::pair<std::int64_t, std::int64_t>> sel;
  for (std::int64_t p = 0; p < iou.size(0); ++p) {
    if (prompt.multimask == SamMultimask::best) {
      sel.emplace_back(p, iou[p].argmax().item<std::int64_t>());
    } else {
      for (std::int64_t k = 0; k < iou.size(1); ++k) sel.emplace_back(p, k);
    }
  }
  std::vector<SamMask> result;
  const auto chunk = masks_per_chunk(d.sizes);
  for (std::size_t c0 = 0; c0 < sel.size(); c0 += chunk) {
    const auto n = std::min(chunk, sel.size() - c0);
    std::vector<torch::Tensor> low;
    for (std::size_t i = 0; i < n; ++i) low.push_back(masks[sel[c0 + i].first][sel[c0 + i].second]);
    auto low_res = torch::stack(low, 0);                // [n, lr, lr]
    auto logits = impl_->upscale(low_res, d.sizes)[0];  // [n, H, W]
    for (std::size_t i = 0; i < n; ++i) {
      auto [p, k] = sel[c0 + i];
      const auto ii = static_cast<std::int64_t>(i);
      auto r = make_mask(logits[ii], low_res[ii], iou[p][k].item<float>(), 1.0);
      r.prompt_index = static_cast<int>(p);
      r.mask_token = multi ? static_cast<int>(k) + 1 : 0;
      result.push_back(std::move(r));
    }
  }
  impl_->timings.decoder_ms = t1 - t0;
  impl_->timings.postprocess_ms = now_ms() - t1;
  return result;
}

std::vector<SamMask> SamSegmenter::everything(const SamEmbedding& e, const SamEverythingOptions& o) const {
  torch::NoGradGuard no_grad;
  impl_->check_embedding(e);
  if (o.points_per_side < 1 || o.points_per_side > 1024)
    throw UsageError("points per side must be 1..1024, got " + std::to_string(o.points_per_side));
  if (o.points_per_batch < 1) throw UsageError("points per batch must be >= 1");
  const auto& d = e.impl();
  const double t0 = now_ms();
  double t_dec = 0;
  const auto scale = m::sam_coord_scale(d.sizes.original_h, d.sizes.original_w, impl_->pc);

  // _build_point_grid: linspace(1/(2n), 1 - 1/(2n), n), x varying fastest, scaled by (W, H).
  const int n = o.points_per_side;
  auto side = torch::linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n, torch::kFloat64);
  auto gx = side.view({1, n}).expand({n, n}) * static_cast<double>(d.sizes.original_w);
  auto gy = side.view({n, 1}).expand({n, n}) * static_cast<double>(d.sizes.original_h);
  auto grid = m::sam_scale_points(torch::stack({gx, gy}, -1).reshape({n * n, 2}), scale);  // [P, 2]
  const auto P = grid.size(0);

  std::vector<SamMask> kept;
  std::vector<cv::Vec4d> boxes;
  std::vector<float> scores;
  for (std::int64_t s = 0; s < P; s += o.points_per_batch) {
    check_interrupted();
    const auto b = std::min<std::int64_t>(o.points_per_batch, P - s);
    m::SamPromptTensors t;
    t.points = grid.narrow(0, s, b).view({1, b, 1, 2});
    t.labels = torch::ones({1, b, 1}, torch::kInt64);
    const double td = now_ms();
    auto out = impl_->model->decode(d.embeddings, t, /*multimask=*/true);
    t_dec += now_ms() - td;
    auto iou = out.iou_scores[0].to(torch::kCPU);  // [b, 3]
    auto masks = out.pred_masks[0];                // [b, 3, lr, lr]
    const auto M = iou.size(1);
    // Predicted-IoU filter first (cheap), then upscale only the survivors.
    auto pass = torch::nonzero(iou.reshape({-1}) > o.pred_iou_thresh).flatten();
    const auto chunk = static_cast<std::int64_t>(masks_per_chunk(d.sizes));
    for (std::int64_t c0 = 0; c0 < pass.numel(); c0 += chunk) {
      auto idx = pass.narrow(0, c0, std::min<std::int64_t>(chunk, pass.numel() - c0));
      auto low = masks.reshape({-1, masks.size(2), masks.size(3)}).index_select(0, idx.to(masks.device()));
      auto logits = impl_->upscale(low, d.sizes)[0];  // [k, H, W]
      for (std::int64_t j = 0; j < idx.size(0); ++j) {
        const auto flat = idx[j].item<std::int64_t>();
        const auto p = flat / M, k = flat % M;
        m::SamMaskStats st;
        auto r = make_mask(logits[j], low[j], iou[p][k].item<float>(), o.stability_score_offset, &st);
        if (!(st.stability() > o.stability_score_thresh)) continue;
        r.prompt_index = static_cast<int>(s + p);
        r.mask_token = static_cast<int>(k) + 1;
        // Box as the reference's _batched_mask_to_box (inclusive max indices; zeros when empty).
        boxes.push_back(st.area > 0 ? cv::Vec4d(st.x0, st.y0, st.x1, st.y1) : cv::Vec4d(0, 0, 0, 0));
        scores.push_back(r.score);
        kept.push_back(std::move(r));
      }
    }
  }
  auto keep = sam_box_nms(boxes, scores, o.box_nms_thresh);
  if (o.max_masks > 0 && static_cast<int>(keep.size()) > o.max_masks) keep.resize(static_cast<std::size_t>(o.max_masks));
  std::vector<SamMask> result;
  result.reserve(keep.size());
  for (int i : keep) result.push_back(std::move(kept[static_cast<std::size_t>(i)]));
  impl_->timings.decoder_ms = t_dec;
  impl_->timings.postprocess_ms = now_ms() - t0 - t_dec;
  return result;
}

cv::Mat SamSegmenter::stroke_mask_prompt(const SamEmbedding& e, const std::vector<Stroke>& strokes, float positive_logit,
                                         float negative_logit, float background) const {
  const auto& d = e.impl();
  const int lr = low_res_size();
  const auto scale = m::sam_coord_scale(d.sizes.original_h, d.sizes.original_w, impl_->pc);
  // Original pixel -> resized frame -> low-res frame (lr pixels span the padded S x S input).
  const double fx = scale.sx * lr / static_cast<double>(impl_->pc.pad_width);
  const double fy = scale.sy * lr / static_cast<double>(impl_->pc.pad_height);
  cv::Mat out(lr, lr, CV_32FC1, cv::Scalar(background));
  constexpr int shift = 4;  // sub-pixel drawing precision (1/16 px)
  auto pt = [&](const XY& p) {
    return cv::Point(static_cast<int>(std::lround(((p.x + 0.5) * fx - 0.5) * (1 << shift))),
                     static_cast<int>(std::lround(((p.y + 0.5) * fy - 0.5) * (1 << shift))));
  };
  for (const auto& st : strokes) {
    if (st.points.empty()) continue;
    const cv::Scalar v(st.positive ? positive_logit : negative_logit);
    const int thick = std::max(1, static_cast<int>(std::lround(st.width * std::max(fx, fy))));
    if (st.points.size() == 1) {
      cv::circle(out, pt(st.points[0]), std::max(1, thick / 2) << shift, v, cv::FILLED, cv::LINE_8, shift);
      continue;
    }
    std::vector<cv::Point> poly;
    for (const auto& p : st.points) poly.push_back(pt(p));
    cv::polylines(out, poly, /*isClosed=*/false, v, thick, cv::LINE_8, shift);
  }
  return out;
}

}  // namespace lli::pipelines
