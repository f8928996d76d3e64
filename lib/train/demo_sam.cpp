// Ref: see demo_sam.h.
#include "train/demo_sam.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "models/sam.h"
#include "models/sam_preprocess.h"
#include "nn/grad_mode.h"
#include "nn/layers.h"
#include "pipelines/segment_sam.h"
#include "train/train_util.h"
#include "world/shapes_world.h"

namespace lli::train {

namespace m = lli::models;
using json = nlohmann::json;

namespace {

// The demo model's sizes (a small ViT: 16 x 16 tokens of 8 px at 128 px input).
json demo_sam_config(int image_size) {
  const int patch = 8, hidden = 96, out = 64;
  json vision = {{"hidden_size", hidden},
                 {"output_channels", out},
                 {"num_hidden_layers", 4},
                 {"num_attention_heads", 4},
                 {"image_size", image_size},
                 {"patch_size", patch},
                 {"mlp_dim", 4 * hidden},
                 {"window_size", 8},
                 {"global_attn_indexes", {1, 3}},
                 {"num_pos_feats", out / 2},
                 {"model_type", ""}};
  json prompt = {{"hidden_size", out},
                 {"image_size", image_size},
                 {"patch_size", patch},
                 {"image_embedding_size", image_size / patch},
                 {"mask_input_channels", 16},
                 {"model_type", ""}};
  json decoder = {{"hidden_size", out},
                  {"mlp_dim", 4 * out},
                  {"num_attention_heads", 4},
                  {"attention_downsample_rate", 1},
                  {"iou_head_hidden_dim", out},
                  {"model_type", ""}};
  return {{"architectures", {"SamModel"}},
          {"model_type", "sam"},
          {"initializer_range", 0.02},
          {"torch_dtype", "float32"},
          {"vision_config", vision},
          {"prompt_encoder_config", prompt},
          {"mask_decoder_config", decoder},
          {"lli_demo", "demo-sam: trained by lli on the shapes world only (scripts/train-demo-models.sh)"}};
}

json demo_sam_preprocessor(int image_size) {
  return {{"do_convert_rgb", true},
          {"do_normalize", true},
          {"do_pad", true},
          {"do_rescale", true},
          {"do_resize", true},
          {"image_mean", {0.485, 0.456, 0.406}},
          {"image_std", {0.229, 0.224, 0.225}},
          {"image_processor_type", "SamImageProcessor"},
          {"mask_pad_size", {{"height", image_size / 4}, {"width", image_size / 4}}},
          {"mask_size", {{"longest_edge", image_size / 4}}},
          {"pad_size", {{"height", image_size}, {"width", image_size}}},
          {"processor_class", "SamProcessor"},
          {"resample", 2},
          {"rescale_factor", 1.0 / 255.0},
          {"size", {{"longest_edge", image_size}}}};
}

// PyTorch's default initialisation, as the original SAM modules get it: linear and convolution
// weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)), zero biases
// (PyTorch draws them from the same range), embeddings N(0, 1), norms 1 and 0, zero absolute and
// relative position tables (SAM's); the random Fourier matrix N(0, kFourierScale^2); the mask
// decoder's key projections equal to its query projections. What the trials measured (one thread,
// 8 images x 4 prompts per step, held-out IoU on 20 scenes): with transformers' N(0, 0.02) the
// decoder's gradients were tiny (~1e-7 on its first q_proj) and the model learned to segment every
// object whatever the prompt (IoU 0.297 for points, boxes and strokes alike after 400 steps; 0.315
// with scale 1); with PyTorch's init and Fourier scale 6 the same (0.362 after 400 steps; in a
// longer run the training IoU stayed at the "every object" level, 0.44-0.46, from step 650 to 900);
// 2 to 4 objects per training scene, 2 decoder heads and scale 3 did not change it (0.35 after
// 1,000 steps); with tied query/key projections, no attention downsampling and scale 3 the prompts
// took over after ~450 steps (held-out IoU 0.667 point, 0.652 box, 0.657 stroke after 1,000
// steps; "every object" scored 0.33 in training).
constexpr double kFourierScale = 3.0;

void init_weights(torch::nn::Module& model, std::uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (auto& p : model.named_parameters(true)) {
    const std::string& n = p.key();
    auto& t = p.value();
    if (ends_with(n, "pos_embed") || ends_with(n, "rel_pos_h") || ends_with(n, "rel_pos_w") || ends_with(n, "bias"))
      t.zero_();
    else if (t.dim() == 1)
      t.fill_(1.0);
    else
      t.normal_(0.0, 1.0);  // embeddings; the layers' weights are redrawn below
  }
  init_layers_pytorch_default(model);
  // The mask decoder's attentions start with k_proj = q_proj, so that a query and a key carrying
  // the same positional encoding already match (q . k = pe^T W^T W pe' peaks at pe = pe').
  auto params = model.named_parameters(true);
  for (auto& p : params) {
    const std::string& n = p.key();
    if (n.rfind("mask_decoder.", 0) == 0 && ends_with(n, "k_proj.weight")) {
      const std::string q = n.substr(0, n.size() - std::string("k_proj.weight").size()) + "q_proj.weight";
      if (auto* qt = params.find(q)) p.value().copy_(*qt);
    }
  }
  for (auto& b : model.named_buffers(true)) {
    if (ends_with(b.key(), "positional_embedding"))
      b.value().normal_(0.0, kFourierScale);
    else
      throw RuntimeError("demo-sam: no initialisation rule for the buffer " + b.key());
  }
}

// A pixel of `mask` (CV_8UC1): near the most interior one with probability `interior`, else any.
cv::Point sample_inside(const cv::Mat& mask, const cv::Mat& dist, world::Rng& rng, double interior) {
  double maxd = 0;
  cv::minMaxLoc(dist, nullptr, &maxd);
  const float lo = rng.uniform() < interior ? static_cast<float>(0.5 * maxd) : 0.5f;
  std::vector<cv::Point> cand;
  for (int y = 0; y < mask.rows; ++y) {
    const auto* mr = mask.ptr<std::uint8_t>(y);
    const auto* dr = dist.ptr<float>(y);
    for (int x = 0; x < mask.cols; ++x)
      if (mr[x] && dr[x] >= lo) cand.emplace_back(x, y);
  }
  if (cand.empty()) cv::findNonZero(mask, cand);
  return cand[static_cast<std::size_t>(rng.below(static_cast<int>(cand.size())))];
}

// A straight segment through `p` in direction (dx, dy), as far as it stays on pixels with
// dist >= margin, shortened by `keep` around its middle.
std::vector<XY> segment_inside(const cv::Mat& dist, cv::Point p, double dx, double dy, float margin, double keep) {
  auto inside = [&](double x, double y) {
    const int xi = static_cast<int>(std::lround(x)), yi = static_cast<int>(std::lround(y));
    return xi >= 0 && yi >= 0 && xi < dist.cols && yi < dist.rows && dist.at<float>(yi, xi) >= margin;
  };
  double t0 = 0, t1 = 0;
  while (inside(p.x + (t1 + 1) * dx, p.y + (t1 + 1) * dy)) t1 += 1;
  while (inside(p.x + (t0 - 1) * dx, p.y + (t0 - 1) * dy)) t0 -= 1;
  const double mid = 0.5 * (t0 + t1), half = 0.5 * (t1 - t0) * keep;
  return {{p.x + (mid - half) * dx, p.y + (mid - half) * dy}, {p.x + (mid + half) * dx, p.y + (mid + half) * dy}};
}

cv::Mat distance_inside(const cv::Mat& mask) {
  cv::Mat dist;
  cv::distanceTransform(mask, dist, cv::DIST_L2, 3);
  return dist;
}

double mask_iou(const cv::Mat& a, const cv::Mat& b) {
  const double inter = cv::countNonZero(a & b), uni = cv::countNonZero(a | b);
  return uni > 0 ? inter / uni : 1.0;
}

// The object's coverage (0..1) of each pixel of the padded model input: the mask resized as the
// image was (reshaped size, area average) at the top-left of a pad_h x pad_w frame of zeros.
cv::Mat coverage_in_frame(const cv::Mat& mask, const m::SamImageInputs& in, int pad_h, int pad_w) {
  cv::Mat cover;
  cv::resize(mask, cover, cv::Size(in.reshaped_w, in.reshaped_h), 0, 0, cv::INTER_AREA);
  cv::Mat frame = cv::Mat::zeros(pad_h, pad_w, CV_32FC1);
  cover.convertTo(frame(cv::Rect(0, 0, in.reshaped_w, in.reshaped_h)), CV_32FC1, 1.0 / 255.0);
  return frame;
}

enum class PromptKind { box, point, stroke };

struct Row {
  int image = 0;
  PromptKind kind = PromptKind::box;
  std::vector<double> xy;      // resized-frame coordinates: box x0 y0 x1 y1, or points x y ...
  std::vector<std::int64_t> labels;
  torch::Tensor target;        // [S, S] coverage of the object in the padded frame
  torch::Tensor valid;         // [S, S] 1 inside the resized image
};

struct Batch {
  torch::Tensor pixels;  // [B, 3, S, S]
  std::vector<Row> rows;
};

Batch make_batch(const DemoSamOptions& o, const m::SamImageProcessorConfig& pc, std::int64_t step, world::Rng& rng) {
  const int S = o.image_size;
  Batch b;
  std::vector<torch::Tensor> pix;
  for (int i = 0; i < o.images_per_step; ++i) {
    const auto seed = kTrainSeedBase + static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(o.images_per_step) +
                      static_cast<std::uint64_t>(i);
    world::SceneConfig wc;
    wc.min_objects = 2;  // a prompt always has to pick one object of several
    const world::Scene sc = world::make_scene(seed, wc);
    const m::SamImageInputs in = m::sam_preprocess_bgr(sc.image, pc);
    pix.push_back(in.pixel_values);
    const m::SamCoordScale cs = m::sam_coord_scale(sc.image.rows, sc.image.cols, pc);
    auto valid = torch::zeros({S, S});
    valid.narrow(0, 0, in.reshaped_h).narrow(1, 0, in.reshaped_w).fill_(1.0);
    for (int k = 0; k < o.prompts_per_image; ++k) {
      const auto& ob = sc.objects[static_cast<std::size_t>(rng.below(static_cast<int>(sc.objects.size())))];
      Row r;
      r.image = i;
      r.valid = valid;
      const cv::Mat frame = coverage_in_frame(ob.mask, in, S, S);
      r.target = torch::from_blob(frame.data, {S, S}, torch::kFloat32).clone();
      const double u = rng.uniform();
      if (u < 0.4) {
        r.kind = PromptKind::box;
        const cv::Rect bx = ob.box;
        const double w = bx.width, h = bx.height;
        auto jit = [&](double side) { return rng.uniform(-0.08, 0.08) * side; };
        const double x0 = bx.x + jit(w), y0 = bx.y + jit(h), x1 = bx.x + bx.width + jit(w), y1 = bx.y + bx.height + jit(h);
        r.xy = {std::min(x0, x1 - 1) * cs.sx, std::min(y0, y1 - 1) * cs.sy, x1 * cs.sx, y1 * cs.sy};
      } else {
        const cv::Mat dist = distance_inside(ob.mask);
        std::vector<pipelines::SamPoint> pts;
        if (u < 0.7) {
          r.kind = PromptKind::point;
          const cv::Point p = sample_inside(ob.mask, dist, rng, 0.5);
          pts.push_back({static_cast<double>(p.x), static_cast<double>(p.y), true});
        } else {
          r.kind = PromptKind::stroke;
          const cv::Point p = sample_inside(ob.mask, dist, rng, 0.7);
          const double a = rng.uniform(0.0, 2 * M_PI);
          const auto line = segment_inside(dist, p, std::cos(a), std::sin(a), 1.5f, rng.uniform(0.3, 0.9));
          pts = pipelines::sample_stroke_points(line, rng.uniform(4.0, 16.0), true);
        }
        if (rng.uniform() < 0.15) {
          cv::Mat outside = ob.mask == 0;
          const cv::Point q = sample_inside(outside, distance_inside(outside), rng, 0.0);
          pts.push_back({static_cast<double>(q.x), static_cast<double>(q.y), false});
        }
        for (const auto& p : pts) {
          r.xy.push_back(p.x * cs.sx);
          r.xy.push_back(p.y * cs.sy);
          r.labels.push_back(p.positive ? m::sam_label_positive : m::sam_label_negative);
        }
      }
      b.rows.push_back(std::move(r));
    }
  }
  b.pixels = torch::cat(pix, 0);
  return b;
}

struct GroupLoss {
  torch::Tensor loss;   // scalar
  double iou_sum = 0;   // of the single-mask output, for the log
  int rows = 0;
};

// BCE + dice per output [R, m] at the padded resolution; inputs low-res logits [R, m, 4g, 4g].
std::pair<torch::Tensor, torch::Tensor> mask_losses(const torch::Tensor& lowres, const torch::Tensor& target,
                                                    const torch::Tensor& valid, int S) {
  const auto R = lowres.size(0), M = lowres.size(1);
  auto up = torch::nn::functional::interpolate(
      lowres, torch::nn::functional::InterpolateFuncOptions().size(std::vector<std::int64_t>{S, S}).mode(torch::kBilinear).align_corners(false));
  auto t = target.unsqueeze(1).expand({R, M, S, S});
  auto v = valid.unsqueeze(1).expand({R, M, S, S});
  auto bce = torch::binary_cross_entropy_with_logits(up, t, {}, {}, at::Reduction::None);
  const auto nv = v.sum({2, 3}).clamp_min(1.0);
  auto l_bce = (bce * v).sum({2, 3}) / nv;  // [R, M]
  auto p = torch::sigmoid(up) * v;
  auto l_dice = 1.0 - (2.0 * (p * t).sum({2, 3}) + 1.0) / (p.sum({2, 3}) + (t * v).sum({2, 3}) + 1.0);
  // true IoU of logits > 0 against coverage > 0.5, inside the image
  torch::Tensor iou;
  {
    torch::NoGradGuard ng;
    auto pm = (up > 0).to(torch::kFloat32) * v, tm = (t > 0.5).to(torch::kFloat32) * v;
    auto inter = (pm * tm).sum({2, 3}), uni = (pm + tm).clamp_max(1.0).sum({2, 3});
    iou = torch::where(uni > 0, inter / uni.clamp_min(1.0), torch::ones_like(uni));
  }
  return {l_bce + l_dice, iou};
}

GroupLoss group_loss(m::SamModelImpl& model, const torch::Tensor& emb, const std::vector<const Row*>& rows, bool boxes,
                     int S) {
  GroupLoss g;
  if (rows.empty()) return g;
  const auto R = static_cast<std::int64_t>(rows.size());
  std::vector<std::int64_t> idx;
  std::vector<torch::Tensor> targets, valids;
  for (const Row* r : rows) {
    idx.push_back(r->image);
    targets.push_back(r->target);
    valids.push_back(r->valid);
  }
  m::SamPromptTensors pt;
  if (boxes) {
    auto bx = torch::empty({R, 1, 4}, torch::kFloat64);
    for (std::int64_t i = 0; i < R; ++i)
      for (int c = 0; c < 4; ++c) bx[i][0][c] = rows[static_cast<std::size_t>(i)]->xy[static_cast<std::size_t>(c)];
    pt.boxes = bx;
  } else {
    std::size_t n = 0;
    for (const Row* r : rows) n = std::max(n, r->labels.size());
    auto p = torch::zeros({R, 1, static_cast<std::int64_t>(n), 2}, torch::kFloat64);
    auto l = torch::full({R, 1, static_cast<std::int64_t>(n)}, static_cast<std::int64_t>(m::sam_label_pad), torch::kInt64);
    for (std::int64_t i = 0; i < R; ++i) {
      const Row* r = rows[static_cast<std::size_t>(i)];
      for (std::size_t j = 0; j < r->labels.size(); ++j) {
        p[i][0][static_cast<std::int64_t>(j)][0] = r->xy[2 * j];
        p[i][0][static_cast<std::int64_t>(j)][1] = r->xy[2 * j + 1];
        l[i][0][static_cast<std::int64_t>(j)] = r->labels[j];
      }
    }
    pt.points = p;
    pt.labels = l;
  }
  auto e = emb.index_select(0, torch::tensor(idx, torch::kInt64));  // [R, C, g, g]
  const m::SamPromptEmbeddings pe = model.embed_prompts(pt);
  const auto image_pe = model.get_image_wide_positional_embeddings();
  // one decoder pass for both outputs: mask token 0 is the single mask, tokens 1.. the multimask ones
  const auto out = model.mask_decoder->forward_all(e, image_pe, pe.sparse, pe.dense);
  const auto target = torch::stack(targets), valid = torch::stack(valids);  // [R, S, S]
  auto [l, iou_true] = mask_losses(out.masks.select(1, 0), target, valid, S);  // [R, M] each
  const auto M = l.size(1);
  g.loss = (l.select(1, 0) + std::get<0>(l.narrow(1, 1, M - 1).min(1))).mean() +
           torch::mse_loss(out.iou_scores.select(1, 0), iou_true);
  g.iou_sum = iou_true.select(1, 0).sum().item<double>();
  g.rows = static_cast<int>(R);
  return g;
}

}  // namespace

TrainReport train_demo_sam(const DemoSamOptions& o) {
  if (o.out_dir.empty()) throw UsageError("demo-sam: no output directory");
  if (o.steps < 1 || o.images_per_step < 1 || o.prompts_per_image < 1) throw UsageError("demo-sam: steps, images and prompts must be >= 1");
  if (o.image_size < 32 || o.image_size % 32 != 0) throw UsageError("demo-sam: --image-size must be a multiple of 32");
  std::filesystem::create_directories(o.out_dir);
  const json cfg_json = demo_sam_config(o.image_size), pre_json = demo_sam_preprocessor(o.image_size);
  const m::SamConfig cfg = m::parse_sam_config(cfg_json, "demo-sam config");
  const m::SamImageProcessorConfig pc =
      m::parse_sam_image_processor_config(m::ConfigReader(pre_json, "demo-sam preprocessor_config.json"));

  nn::TrainingScope training;
  m::SamModel model(cfg);
  init_weights(*model, o.seed);
  TrainReport rep;
  auto opt = make_trainable_adamw(
      *model, [](const std::string& name, const torch::Tensor& t) { return t.dim() >= 2 && !ends_with(name, "pos_embed"); },
      o.lr, o.weight_decay, rep.parameters);
  log_info("demo-sam: {} parameters, {} steps of {} images x {} prompts at {} px", rep.parameters, o.steps,
           o.images_per_step, o.prompts_per_image, o.image_size);

  const std::filesystem::path log_path = o.out_dir / "train-log.tsv";
  std::string log_text = "step\tseconds\tlr\tloss\tiou_box\tiou_point\tiou_stroke\n";
  world::Rng rng(o.seed * 0x9E3779B97F4A7C15ull + 17);
  StepLoop loop("training demo-sam", o.steps, o.log_every, o.max_minutes);
  double acc_loss = 0, acc_iou[3] = {0, 0, 0};
  int acc_n = 0, acc_rows[3] = {0, 0, 0};
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, o.steps, o.warmup);
    set_lr(*opt, lr);

    const Batch b = make_batch(o, pc, step, rng);
    auto emb = model->get_image_embeddings(b.pixels);  // [B, C, g, g]
    std::vector<const Row*> by_kind[3];
    for (const auto& r : b.rows) by_kind[static_cast<int>(r.kind)].push_back(&r);
    torch::Tensor loss = torch::zeros({});
    double total_rows = 0;
    GroupLoss gl[3];
    for (int k = 0; k < 3; ++k) {
      gl[k] = group_loss(*model, emb, by_kind[k], k == 0, o.image_size);
      if (gl[k].rows) {
        loss = loss + gl[k].loss * static_cast<double>(gl[k].rows);
        total_rows += gl[k].rows;
      }
    }
    loss = loss / std::max(1.0, total_rows);
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();

    acc_loss += loss.item<double>();
    ++acc_n;
    for (int k = 0; k < 3; ++k) {
      acc_iou[k] += gl[k].iou_sum;
      acc_rows[k] += gl[k].rows;
    }
    if (loop.end_step()) {
      rep.final_loss = acc_loss / acc_n;
      auto mean = [&](int k) { return acc_rows[k] ? acc_iou[k] / acc_rows[k] : 0.0; };
      log_text += fmt::format("{}\t{:.1f}\t{:.3g}\t{:.4f}\t{:.3f}\t{:.3f}\t{:.3f}\n", step + 1, loop.seconds(), lr,
                              rep.final_loss, mean(0), mean(1), mean(2));
      log_info("demo-sam: step {} loss {:.4f} train IoU box {:.3f} point {:.3f} stroke {:.3f} ({:.0f} s)", step + 1,
               rep.final_loss, mean(0), mean(1), mean(2), loop.seconds());
      write_file_atomic(log_path.string(), log_text);
      acc_loss = 0;
      acc_n = 0;
      for (int k = 0; k < 3; ++k) acc_iou[k] = acc_rows[k] = 0;
    }
  }
  rep.steps = loop.steps_run();
  rep.seconds = loop.seconds();

  save_hf_checkpoint(o.out_dir, *model, o.fp16, "demo-sam", rep.steps, o.seed, cfg_json, pre_json);
  log_info("demo-sam: {} steps in {:.0f} s, written to {}", rep.steps, rep.seconds, o.out_dir.string());
  return rep;
}

SamEvalResult evaluate_demo_sam(const std::filesystem::path& model_dir, int scenes, std::uint64_t seed0) {
  pipelines::SamOptions so;
  so.dtype = DTypeChoice::f32;
  pipelines::SamSegmenter seg(model_dir, so);
  const m::SamImageProcessorConfig pc = m::load_sam_image_processor_config(model_dir);
  const int lr = seg.low_res_size();
  const int pad_h = static_cast<int>(pc.pad_height), pad_w = static_cast<int>(pc.pad_width);
  SamEvalResult r;
  for (int s = 0; s < scenes; ++s) {
    const world::Scene sc = world::make_scene(seed0 + static_cast<std::uint64_t>(s));
    const auto emb = seg.compute_embedding(sc.image);
    const m::SamImageInputs sizes = m::sam_preprocess_bgr(sc.image, pc);  // the oracle's resize and crop
    for (const auto& ob : sc.objects) {
      const cv::Mat dist = distance_inside(ob.mask);
      cv::Point best;
      cv::minMaxLoc(dist, nullptr, nullptr, nullptr, &best);
      auto iou_of = [&](const pipelines::SamPrompt& p) {
        const auto masks = seg.segment(emb, p);
        return masks.empty() ? 0.0 : mask_iou(masks[0].mask, ob.mask);
      };
      pipelines::SamPrompt point;
      point.points.push_back({static_cast<double>(best.x), static_cast<double>(best.y), true});
      pipelines::SamPrompt box;
      box.boxes.push_back({static_cast<double>(ob.box.x), static_cast<double>(ob.box.y),
                           static_cast<double>(ob.box.x + ob.box.width), static_cast<double>(ob.box.y + ob.box.height)});
      pipelines::SamPrompt stroke;
      stroke.points = pipelines::sample_stroke_points(segment_inside(dist, best, 1.0, 0.0, 2.0f, 0.6), 8.0, true);
      r.iou_point += iou_of(point);
      r.iou_box += iou_of(box);
      r.iou_stroke += iou_of(stroke);
      {
        torch::NoGradGuard ng;
        cv::Mat low;
        cv::resize(coverage_in_frame(ob.mask, sizes, pad_h, pad_w), low, cv::Size(lr, lr), 0, 0, cv::INTER_AREA);
        auto logits = torch::from_blob(low.data, {1, 1, lr, lr}, torch::kFloat32) - 0.5;  // [1, 1, lr, lr]
        auto up = m::sam_post_process_masks(logits, sizes, pad_h, pad_w)[0][0].gt(0).to(torch::kUInt8).mul(255).contiguous();
        const cv::Mat oracle(sc.image.rows, sc.image.cols, CV_8UC1, up.data_ptr());
        r.iou_oracle += mask_iou(oracle, ob.mask);
      }
      ++r.objects;
    }
  }
  if (r.objects) {
    r.iou_point /= r.objects;
    r.iou_box /= r.objects;
    r.iou_stroke /= r.objects;
    r.iou_oracle /= r.objects;
  }
  return r;
}

}  // namespace lli::train
