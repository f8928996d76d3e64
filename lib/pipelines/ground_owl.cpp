// Ref: transformers/models/owlvit/processing_owlvit.py (text padding), image_processing_owlvit.py /
// image_processing_owlv2.py post_process_object_detection (v4.45). See ground_owl.h.
#include "pipelines/ground_owl.h"

#include <torch/torch.h>

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/torch_device.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "models/owl.h"
#include "models/owl_preprocess.h"
#include "pipelines/feature_cache.h"
#include "text/clip_tokenizer.h"

namespace lli::pipelines {

namespace m = lli::models;

namespace {

constexpr const char* kFeaturesFormat = "lli-owl-features";
constexpr const char* kFeaturesVersion = "1";

float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

OwlDetection make_detection(const OwlQueryResult& r, int box, int phrase) {
  OwlDetection d;
  d.box_index = box;
  d.phrase = phrase;
  d.logit = r.logit(box, phrase);
  d.score = sigmoid(d.logit);
  d.box = r.boxes[static_cast<std::size_t>(box)];
  d.objectness = r.objectness.empty() ? 0.f : r.objectness[static_cast<std::size_t>(box)];
  return d;
}

}  // namespace

double owl_box_iou(const OwlBox& a, const OwlBox& b) {
  const double iw = std::max(0.0, std::min(a.x1, b.x1) - std::max(a.x0, b.x0));
  const double ih = std::max(0.0, std::min(a.y1, b.y1) - std::max(a.y0, b.y0));
  const double inter = iw * ih;
  const double uni = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return uni > 0 ? inter / uni : 0.0;
}

// ---- post-processing (plain C++ over the query result) -----------------------------------------

std::vector<OwlDetection> owl_post_process(const OwlQueryResult& r, double threshold) {
  std::vector<OwlDetection> out;
  for (int b = 0; b < r.num_boxes; ++b) {
    int best = 0;  // torch.max: the first maximal index
    for (int q = 1; q < r.num_phrases; ++q)
      if (r.logit(b, q) > r.logit(b, best)) best = q;
    OwlDetection d = make_detection(r, b, best);
    if (d.score > threshold) out.push_back(d);
  }
  return out;
}

OwlDetection owl_best_for_phrase(const OwlQueryResult& r, int phrase) {
  if (phrase < 0 || phrase >= r.num_phrases || r.num_boxes < 1)
    throw RuntimeError("owl_best_for_phrase: phrase " + std::to_string(phrase) + " of " + std::to_string(r.num_phrases));
  int best = 0;
  for (int b = 1; b < r.num_boxes; ++b)
    if (r.logit(b, phrase) > r.logit(best, phrase)) best = b;
  return make_detection(r, best, phrase);
}

std::vector<OwlDetection> owl_instances_for_phrase(const OwlQueryResult& r, int phrase, double threshold,
                                                   double nms_iou) {
  std::vector<OwlDetection> cand;
  for (const auto& d : owl_post_process(r, threshold))
    if (d.phrase == phrase) cand.push_back(d);
  std::stable_sort(cand.begin(), cand.end(), [](const OwlDetection& a, const OwlDetection& b) { return a.score > b.score; });
  std::vector<OwlDetection> kept;
  for (const auto& d : cand) {
    bool suppressed = false;
    for (const auto& k : kept)
      if (owl_box_iou(d.box, k.box) > nms_iou) {
        suppressed = true;
        break;
      }
    if (!suppressed) kept.push_back(d);
  }
  return kept;
}

// ---- features -----------------------------------------------------------------------------------

struct OwlImageFeatures::Impl {
  m::OwlHeads heads;  // B = 1, fp32 on the model's device
  int original_h = 0, original_w = 0;
  std::string fingerprint;
};

int OwlImageFeatures::image_width() const { return impl().original_w; }
int OwlImageFeatures::image_height() const { return impl().original_h; }
const OwlImageFeatures::Impl& OwlImageFeatures::impl() const {
  if (!impl_) throw RuntimeError("OWL: empty image features (image_features first)");
  return *impl_;
}

// ---- detector -----------------------------------------------------------------------------------

struct OwlDetector::Impl {
  m::OwlModel model{nullptr};
  m::OwlImageProcessorConfig pc;
  text::CLIPTokenizer tokenizer;
  std::int64_t max_length = 16;
  torch::Device device = torch::kCPU;
  DTypeChoice dtype = DTypeChoice::f32;
  std::string fingerprint, dir;
  OwlTimings timings;
};

OwlDetector::OwlDetector(const std::filesystem::path& dir, const OwlOptions& opts) : impl_(std::make_unique<Impl>()) {
  check_device_available(opts.device);
  impl_->dtype = resolve_dtype(opts.dtype, opts.device);
  impl_->device = opts.device.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(opts.device.index))
                                   : torch::Device(torch::kCPU);
  impl_->dir = dir.string();
  m::OwlLoadOptions lo;
  lo.dtype = to_torch_dtype(impl_->dtype);
  lo.device = impl_->device;
  impl_->model = m::load_owl(dir, lo);
  const auto& cfg = impl_->model->cfg;
  impl_->pc = m::load_owl_image_processor_config(dir, cfg.variant);
  if (impl_->pc.output_side() != cfg.vision.image_size)
    throw ModelError((dir / "preprocessor_config.json").string() + ": the image processor gives " +
                     std::to_string(impl_->pc.output_side()) + "x" + std::to_string(impl_->pc.output_side()) +
                     " pixels, the vision tower expects " + std::to_string(cfg.vision.image_size));
  impl_->tokenizer = text::CLIPTokenizer::load(dir);
  if (impl_->tokenizer.pad_id() < 0)
    throw ModelError((dir / "tokenizer_config.json").string() + ": no pad token (OWL queries are padded)");
  const auto mml = impl_->tokenizer.model_max_length();
  impl_->max_length = mml > 0 ? std::min(mml, cfg.text.max_position_embeddings) : cfg.text.max_position_embeddings;
  if (impl_->tokenizer.vocab_size() > cfg.text.vocab_size)
    throw ModelError(dir.string() + ": the tokenizer has " + std::to_string(impl_->tokenizer.vocab_size()) +
                     " tokens, the text tower's vocab_size is " + std::to_string(cfg.text.vocab_size));
  impl_->fingerprint = model_fingerprint(dir / "config.json", {impl_->model->class_head->logit_shift->weight,
                                                                impl_->model->box_head->dense2->bias,
                                                                impl_->model->owl->vision_model->embeddings->class_embedding});
}

OwlDetector::~OwlDetector() = default;
OwlDetector::OwlDetector(OwlDetector&&) noexcept = default;
OwlDetector& OwlDetector::operator=(OwlDetector&&) noexcept = default;

const char* OwlDetector::variant() const { return m::owl_variant_name(impl_->model->cfg.variant); }
const std::string& OwlDetector::fingerprint() const { return impl_->fingerprint; }
const OwlTimings& OwlDetector::timings() const { return impl_->timings; }

std::string OwlDetector::describe() const {
  const auto& c = impl_->model->cfg;
  return std::string(variant()) + " " + impl_->dir + ": ViT D" + std::to_string(c.vision.hidden_size) + " L" +
         std::to_string(c.vision.num_hidden_layers) + " " + std::to_string(c.vision.image_size) + "px/" +
         std::to_string(c.vision.patch_size) + " (" + std::to_string(c.num_boxes()) + " boxes), text D" +
         std::to_string(c.text.hidden_size) + " L" + std::to_string(c.text.num_hidden_layers) + ", device " +
         impl_->device.str() + ", towers " + dtype_choice_name(impl_->dtype);
}

OwlImageFeatures OwlDetector::image_features(const cv::Mat& bgr) const {
  torch::NoGradGuard no_grad;
  if (bgr.empty() || bgr.type() != CV_8UC3) throw InputError("OWL: expected a non-empty 8-bit 3-channel image");
  const double t0 = now_ms();
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  const auto S = impl_->pc.output_side();
  std::vector<float> px = m::owl_preprocess_rgb(rgb, impl_->pc);
  auto pixel_values = torch::from_blob(px.data(), {1, 3, S, S}, torch::kFloat32).to(impl_->device);
  const double t1 = now_ms();
  auto feats = impl_->model->image_features(pixel_values);  // [1, N, Dv] fp32
  if (feats.is_cuda()) torch::cuda::synchronize();
  const double t2 = now_ms();
  auto e = std::make_shared<OwlImageFeatures::Impl>();
  e->heads = impl_->model->heads(feats);
  if (feats.is_cuda()) torch::cuda::synchronize();
  impl_->timings.preprocess_ms = t1 - t0;
  impl_->timings.vision_ms = t2 - t1;
  impl_->timings.heads_ms = now_ms() - t2;
  e->original_h = bgr.rows;
  e->original_w = bgr.cols;
  e->fingerprint = impl_->fingerprint;
  return OwlImageFeatures(e);
}

std::vector<std::vector<std::int64_t>> OwlDetector::tokenize(const std::vector<std::string>& phrases,
                                                             std::vector<std::vector<std::int64_t>>* attention_mask) const {
  const auto L = impl_->max_length;
  std::vector<std::vector<std::int64_t>> ids;
  for (const auto& p : phrases) {
    auto full = impl_->tokenizer.encode(p);
    if (static_cast<std::int64_t>(full.size()) > L)
      log_info("OWL: the phrase \"{}\" has {} tokens; only the first {} are used (the model's limit)",
               p.size() > 60 ? p.substr(0, 57) + "..." : p, full.size() - 2, L - 2);
  }
  auto batch = impl_->tokenizer.encode_batch(phrases, text::CLIPTokenizer::Padding::max_length, L, /*truncation=*/true);
  for (const auto& row : batch.ids) ids.emplace_back(row.begin(), row.end());
  if (attention_mask) *attention_mask = batch.attention_mask;
  return ids;
}

OwlQueryResult OwlDetector::query(const OwlImageFeatures& f, const std::vector<std::string>& phrases) const {
  torch::NoGradGuard no_grad;
  const auto& d = f.impl();
  if (d.fingerprint != impl_->fingerprint) throw InputError("OWL: the image features were computed by another model");
  if (phrases.empty()) throw InputError("OWL: no phrase to look for");
  for (const auto& p : phrases)
    if (p.find_first_not_of(" \t\r\n") == std::string::npos) throw InputError("OWL: an empty phrase");
  const double t0 = now_ms();
  std::vector<std::vector<std::int64_t>> mask;
  const auto ids = tokenize(phrases, &mask);
  const auto Q = static_cast<std::int64_t>(ids.size()), T = static_cast<std::int64_t>(ids[0].size());
  auto ids_t = torch::empty({Q, T}, torch::kInt64), mask_t = torch::empty({Q, T}, torch::kInt64);
  for (std::int64_t q = 0; q < Q; ++q)
    for (std::int64_t t = 0; t < T; ++t) {
      ids_t[q][t] = ids[static_cast<std::size_t>(q)][static_cast<std::size_t>(t)];
      mask_t[q][t] = mask[static_cast<std::size_t>(q)][static_cast<std::size_t>(t)];
    }
  auto queries = impl_->model->query_embeds(ids_t, mask_t);  // [Q, Dp]
  const double t1 = now_ms();
  auto logits = m::OwlModelImpl::class_logits(d.heads, queries).select(0, 0).to(torch::kCPU).contiguous();  // [N, Q]
  // Boxes: centre -> corners, scaled as the variant's post-processing (float32, as the reference).
  auto pb = d.heads.pred_boxes.select(0, 0).to(torch::kCPU);  // [N, 4]
  auto cx = pb.select(1, 0), cy = pb.select(1, 1), w = pb.select(1, 2), h = pb.select(1, 3);
  auto corners = torch::stack({cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h}, 1);
  const auto sc = m::owl_box_scale(impl_->model->cfg.variant, d.original_h, d.original_w);
  corners = (corners * torch::tensor({sc[0], sc[1], sc[2], sc[3]}, torch::kFloat32)).contiguous();
  OwlQueryResult r;
  r.num_boxes = static_cast<int>(logits.size(0));
  r.num_phrases = static_cast<int>(Q);
  r.logits.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  const float* c = corners.data_ptr<float>();
  for (int b = 0; b < r.num_boxes; ++b) r.boxes.push_back({c[b * 4], c[b * 4 + 1], c[b * 4 + 2], c[b * 4 + 3]});
  if (d.heads.objectness.defined()) {
    auto ob = d.heads.objectness.select(0, 0).to(torch::kCPU).contiguous();
    r.objectness.assign(ob.data_ptr<float>(), ob.data_ptr<float>() + ob.numel());
  }
  impl_->timings.text_ms = t1 - t0;
  impl_->timings.logits_ms = now_ms() - t1;
  return r;
}

// ---- serialisation ------------------------------------------------------------------------------

std::string OwlDetector::features_to_bytes(const OwlImageFeatures& f) const {
  const auto& d = f.impl();
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"class_embeds", d.heads.class_embeds.select(0, 0)},
      {"logit_shift", d.heads.logit_shift.select(0, 0).select(-1, 0)},
      {"logit_scale", d.heads.logit_scale.select(0, 0).select(-1, 0)},
      {"pred_boxes", d.heads.pred_boxes.select(0, 0)}};
  if (d.heads.objectness.defined()) ts.emplace_back("objectness", d.heads.objectness.select(0, 0));
  return feature_cache_bytes(ts, {{"format", kFeaturesFormat},
                                  {"version", kFeaturesVersion},
                                  {"fingerprint", d.fingerprint},
                                  {"original_h", std::to_string(d.original_h)},
                                  {"original_w", std::to_string(d.original_w)}});
}

OwlImageFeatures OwlDetector::features_from_bytes(std::string_view bytes, const std::string& source) const {
  const auto& cfg = impl_->model->cfg;
  const std::int64_t N = cfg.num_boxes(), D = cfg.text.hidden_size;
  FeatureCacheSpec spec;
  spec.what = "OWL image features";
  spec.format = kFeaturesFormat;
  spec.version = kFeaturesVersion;
  spec.fingerprint = impl_->fingerprint;
  spec.shapes = {{"class_embeds", {N, D}}, {"logit_shift", {N}}, {"logit_scale", {N}}, {"pred_boxes", {N, 4}}};
  if (cfg.variant == m::OwlVariant::owlv2) spec.shapes["objectness"] = {N};
  std::map<std::string, torch::Tensor> t;
  const auto meta = parse_feature_cache(bytes, source, spec, t);
  auto e = std::make_shared<OwlImageFeatures::Impl>();
  const auto dev = impl_->device;
  e->heads.class_embeds = t["class_embeds"].unsqueeze(0).to(dev);
  e->heads.logit_shift = t["logit_shift"].view({1, N, 1}).to(dev);
  e->heads.logit_scale = t["logit_scale"].view({1, N, 1}).to(dev);
  e->heads.pred_boxes = t["pred_boxes"].unsqueeze(0).to(dev);
  if (t.count("objectness")) e->heads.objectness = t["objectness"].unsqueeze(0).to(dev);
  e->original_h = feature_cache_positive_int(meta, "original_h", source, spec.what);
  e->original_w = feature_cache_positive_int(meta, "original_w", source, spec.what);
  e->fingerprint = impl_->fingerprint;
  return OwlImageFeatures(e);
}

}  // namespace lli::pipelines
