// Ref: see demo_owl.h.
#include "train/demo_owl.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/config_json.h"
#include "models/owl.h"
#include "models/owl_preprocess.h"
#include "nn/grad_mode.h"
#include "pipelines/ground_owl.h"
#include "text/clip_tokenizer.h"
#include "train/train_util.h"
#include "world/shapes_world.h"

namespace lli::train {

namespace m = lli::models;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kMinCover = 0.25;  // a patch belongs to the object covering at least this share of it
constexpr double kFocalAlpha = 0.25, kFocalGamma = 2.0;
constexpr double kBoxL1Weight = 5.0, kGiouWeight = 2.0, kObjectnessWeight = 1.0;
constexpr int kTextMaxLength = 16;
constexpr double kPriorLogit = -4.0;  // OWL's text max_position_embeddings and the tokenizer's model_max_length

json demo_owl_config(const DemoOwlOptions& o, std::int64_t vocab) {
  json text = {{"model_type", "owlv2_text_model"},
               {"vocab_size", vocab},
               {"hidden_size", o.text_hidden},
               {"intermediate_size", 4 * o.text_hidden},
               {"num_hidden_layers", o.text_layers},
               {"num_attention_heads", o.text_heads},
               {"max_position_embeddings", kTextMaxLength},
               {"hidden_act", "quick_gelu"},
               {"layer_norm_eps", 1e-5},
               {"pad_token_id", 0},
               {"bos_token_id", 49406},
               {"eos_token_id", 49407}};
  json vision = {{"model_type", "owlv2_vision_model"},
                 {"hidden_size", o.vision_hidden},
                 {"intermediate_size", 4 * o.vision_hidden},
                 {"num_hidden_layers", o.vision_layers},
                 {"num_attention_heads", o.vision_heads},
                 {"image_size", o.image_size},
                 {"patch_size", o.patch_size},
                 {"num_channels", 3},
                 {"hidden_act", "quick_gelu"},
                 {"layer_norm_eps", 1e-5}};
  return {{"architectures", {"Owlv2ForObjectDetection"}},
          {"model_type", "owlv2"},
          {"projection_dim", o.text_hidden},
          {"logit_scale_init_value", 2.6592},
          {"initializer_factor", 1.0},
          {"torch_dtype", o.fp16 ? "float16" : "float32"},
          {"text_config", text},
          {"vision_config", vision},
          {"lli_demo", "demo-owl: trained by lli on the shapes world only (scripts/train-demo-models.sh)"}};
}

json demo_owl_preprocessor(int side) {
  return {{"do_normalize", true},
          {"do_pad", true},
          {"do_rescale", true},
          {"do_resize", true},
          {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
          {"image_std", {0.26862954, 0.26130258, 0.27577711}},
          {"image_processor_type", "Owlv2ImageProcessor"},
          {"processor_class", "Owlv2Processor"},
          {"resample", 2},
          {"rescale_factor", 1.0 / 255.0},
          {"size", {{"height", side}, {"width", side}}}};
}

// transformers' Owlv2PreTrainedModel._init_weights for the towers (factor 1): token and position
// embeddings N(0, 0.02), class embedding N(0, D^-1/2), patch embedding N(0, 0.02), projections
// N(0, D^-1/2); the heads get PyTorch's default (they are plain nn.Linear there); biases 0, layer
// norms 1 and 0; logit_scale = logit_scale_init_value.
void init_weights(m::OwlModelImpl& model, std::uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  init_layers_pytorch_default(model);
  const auto& c = model.cfg;
  for (auto& p : model.named_parameters(true)) {
    const std::string& n = p.key();
    auto& t = p.value();
    const bool tower = n.rfind(std::string(c.prefix()) + ".", 0) == 0;
    if (ends_with(n, "logit_scale") && t.dim() == 0)
      t.fill_(2.6592);
    else if (ends_with(n, "bias"))
      t.zero_();
    else if (t.dim() == 1 && ends_with(n, "class_embedding"))
      t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(c.vision.hidden_size)));
    else if (t.dim() == 1)
      t.fill_(1.0);  // layer norms
    else if (tower && (ends_with(n, "token_embedding.weight") || ends_with(n, "position_embedding.weight") ||
                       ends_with(n, "patch_embedding.weight")))
      t.normal_(0.0, 0.02);
    else if (tower && (ends_with(n, "text_projection.weight") || ends_with(n, "visual_projection.weight")))
      t.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(t.size(1))));
    else if (tower && t.dim() == 2) {  // attention and MLP of the towers
      const bool text = n.find(".text_model.") != std::string::npos;
      const double D = static_cast<double>(text ? c.text.hidden_size : c.vision.hidden_size);
      const double L = static_cast<double>(text ? c.text.num_hidden_layers : c.vision.num_hidden_layers);
      double std = std::pow(D, -0.5) * std::pow(2.0 * L, -0.5);              // q, k, v, out_proj, fc2 (in_proj_std)
      if (ends_with(n, "fc1.weight")) std = std::pow(2.0 * D, -0.5);          // fc_std
      if (ends_with(n, "self_attn.out_proj.weight")) std = std::pow(D, -0.5) * std::pow(2.0 * L, -0.5);
      t.normal_(0.0, std);
    }
  }
  // the class logits start at the prior of a rare positive (RetinaNet's and DETR's focal-loss
  // init): logit_shift's bias so that (cos + shift) * scale ~ -4 (scale = elu(0) + 1 = 1)
  model.class_head->logit_shift->bias.fill_(kPriorLogit);
}

// Copies the tensors of `from` whose names start with `src_prefix` into the parameters of `dst`
// named `dst_prefix` + the rest ("pre_layrnorm" renamed as `pre_ln`); every parameter of `dst`
// under dst_prefix must be found with the same shape (position tables may be longer in `from`:
// their first rows are taken). UsageError naming the file otherwise.
void copy_tower(torch::nn::Module& dst, const std::string& dst_prefix, const fs::path& from, const std::string& src_prefix,
                const std::string& pre_ln) {
  torch::NoGradGuard ng;
  auto ckpt = st::Checkpoint::open(from);
  const TensorMap src = load_tensors(ckpt, src_prefix);
  int copied = 0;
  for (auto& p : dst.named_parameters(true)) {
    if (p.key().rfind(dst_prefix, 0) != 0) continue;
    std::string rest = p.key().substr(dst_prefix.size());
    if (rest.rfind(pre_ln + ".", 0) == 0) rest = "pre_layrnorm" + rest.substr(pre_ln.size());
    const auto it = src.find(rest);
    if (it == src.end())
      throw UsageError("demo-owl: " + ckpt.source() + " has no tensor " + src_prefix + rest + " (for " + p.key() + ")");
    auto t = it->second.to(torch::kFloat32);
    auto& d = p.value();
    if (ends_with(rest, "position_embedding.weight") && t.dim() == 2 && t.size(0) > d.size(0) && t.size(1) == d.size(1))
      t = t.narrow(0, 0, d.size(0));
    if (t.sizes() != d.sizes())
      throw UsageError("demo-owl: " + ckpt.source() + ": " + src_prefix + rest + " has shape " + c10::str(t.sizes()) +
                       ", the model's " + p.key() + " " + c10::str(d.sizes()) + " (pass matching sizes)");
    d.copy_(t);
    ++copied;
  }
  log_info("demo-owl: {} tensors of {} copied from {}", copied, dst_prefix, ckpt.source());
}

struct Query {
  std::string text;
  int shape = -1, colour = -1;  // colour -1: the shape alone
};

// The 49 names and 7 shapes, each in one of three renderings.
std::vector<Query> make_queries(world::Rng& rng) {
  std::vector<Query> q;
  auto render = [&](const std::string& s) {
    const int r = rng.below(3);
    return r == 0 ? s : (r == 1 ? "a " + s : "the " + s);
  };
  for (int s = 0; s < world::kShapeCount; ++s) {
    for (int c = 0; c < world::kColourCount; ++c)
      q.push_back({render(std::string(world::colour_name(static_cast<world::Colour>(c))) + " " +
                          world::shape_name(static_cast<world::Shape>(s))),
                   s, c});
    q.push_back({render(world::shape_name(static_cast<world::Shape>(s))), s, -1});
  }
  return q;
}

// [Q, T] ids and attention mask as OwlDetector::tokenize makes them.
std::pair<torch::Tensor, torch::Tensor> tokenize(const text::CLIPTokenizer& tok, const std::vector<Query>& qs) {
  std::vector<std::string> texts;
  for (const auto& q : qs) texts.push_back(q.text);
  const auto b = tok.encode_batch(texts, text::CLIPTokenizer::Padding::max_length, kTextMaxLength, true);
  const auto Q = static_cast<std::int64_t>(texts.size());
  auto ids = torch::empty({Q, kTextMaxLength}, torch::kInt64), mask = torch::empty({Q, kTextMaxLength}, torch::kInt64);
  auto* pi = ids.data_ptr<std::int64_t>();
  auto* pm = mask.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < Q; ++i)
    for (std::int64_t t = 0; t < kTextMaxLength; ++t) {
      pi[i * kTextMaxLength + t] = b.ids[static_cast<std::size_t>(i)][static_cast<std::size_t>(t)];
      pm[i * kTextMaxLength + t] = b.attention_mask[static_cast<std::size_t>(i)][static_cast<std::size_t>(t)];
    }
  return {ids, mask};
}

// One scene's model input and targets.
struct Example {
  torch::Tensor pixels;                  // [3, S, S]
  std::vector<int> owner;                // [g*g] object index per patch, -1 = none
  std::vector<std::array<float, 4>> box; // per object: (cx, cy, w, h) in the padded square, 0..1
};

Example make_example(const world::Scene& sc, const m::OwlImageProcessorConfig& pc, int g) {
  Example e;
  cv::Mat rgb;
  cv::cvtColor(sc.image, rgb, cv::COLOR_BGR2RGB);
  const auto S = pc.output_side();
  auto px = m::owl_preprocess_rgb(rgb, pc);
  e.pixels = torch::from_blob(px.data(), {3, S, S}, torch::kFloat32).clone();
  const int side = std::max(sc.image.rows, sc.image.cols);
  e.owner.assign(static_cast<std::size_t>(g * g), -1);
  std::vector<double> best(static_cast<std::size_t>(g * g), 0.0);
  for (std::size_t k = 0; k < sc.objects.size(); ++k) {
    const auto& ob = sc.objects[k];
    const auto& r = ob.box;
    e.box.push_back({static_cast<float>((r.x + 0.5 * r.width) / side), static_cast<float>((r.y + 0.5 * r.height) / side),
                     static_cast<float>(static_cast<double>(r.width) / side),
                     static_cast<float>(static_cast<double>(r.height) / side)});
    // coverage of each patch: the mask in the padded square, area-averaged to g x g
    cv::Mat sq = cv::Mat::zeros(side, side, CV_8UC1);
    ob.mask.copyTo(sq(cv::Rect(0, 0, ob.mask.cols, ob.mask.rows)));
    cv::Mat cover;
    cv::resize(sq, cover, cv::Size(g, g), 0, 0, cv::INTER_AREA);
    double top = -1;
    int top_i = 0;
    for (int i = 0; i < g * g; ++i) {
      const double v = cover.at<std::uint8_t>(i / g, i % g) / 255.0;
      if (v > top) top = v, top_i = i;
      if (v >= kMinCover && v > best[static_cast<std::size_t>(i)]) {
        best[static_cast<std::size_t>(i)] = v;
        e.owner[static_cast<std::size_t>(i)] = static_cast<int>(k);
      }
    }
    if (top > best[static_cast<std::size_t>(top_i)] || e.owner[static_cast<std::size_t>(top_i)] < 0) {
      best[static_cast<std::size_t>(top_i)] = std::max(top, best[static_cast<std::size_t>(top_i)]);
      e.owner[static_cast<std::size_t>(top_i)] = static_cast<int>(k);
    }
  }
  return e;
}

torch::Tensor cxcywh_to_xyxy(const torch::Tensor& b) {
  auto cx = b.select(-1, 0), cy = b.select(-1, 1), w = b.select(-1, 2), h = b.select(-1, 3);
  return torch::stack({cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h}, -1);
}

// IoU and generalised IoU of matching rows of a and b ([n, 4] xyxy).
std::pair<torch::Tensor, torch::Tensor> iou_giou(const torch::Tensor& a, const torch::Tensor& b) {
  auto area = [](const torch::Tensor& x) {
    return (x.select(1, 2) - x.select(1, 0)).clamp_min(0) * (x.select(1, 3) - x.select(1, 1)).clamp_min(0);
  };
  const auto lt = torch::max(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), rb = torch::min(a.narrow(1, 2, 2), b.narrow(1, 2, 2));
  const auto wh = (rb - lt).clamp_min(0);
  const auto inter = wh.select(1, 0) * wh.select(1, 1);
  const auto uni = area(a) + area(b) - inter;
  const auto iou = inter / uni.clamp_min(1e-9);
  const auto elt = torch::min(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), erb = torch::max(a.narrow(1, 2, 2), b.narrow(1, 2, 2));
  const auto ewh = (erb - elt).clamp_min(0);
  const auto enclose = (ewh.select(1, 0) * ewh.select(1, 1)).clamp_min(1e-9);
  return {iou, iou - (enclose - uni) / enclose};
}

double box_iou(const pipelines::OwlBox& a, const cv::Rect& r) {
  return pipelines::owl_box_iou(a, {double(r.x), double(r.y), double(r.x + r.width), double(r.y + r.height)});
}

}  // namespace

TrainReport train_demo_owl(const DemoOwlOptions& o) {
  if (o.patch_size < 1 || o.image_size % o.patch_size != 0)
    throw UsageError(fmt::format("demo-owl: --image-size {} is not a multiple of --patch {}", o.image_size, o.patch_size));
  if (o.images_per_step < 1 || o.steps < 1) throw UsageError("demo-owl: --images and --steps must be at least 1");
  if (o.vision_hidden % o.vision_heads != 0 || o.text_hidden % o.text_heads != 0)
    throw UsageError("demo-owl: the widths must be multiples of the heads");
  torch::manual_seed(o.seed);
  const auto tok = text::CLIPTokenizer::load(o.tokenizer_dir);
  if (tok.pad_id() != 0)
    throw UsageError("demo-owl: " + (o.tokenizer_dir / "tokenizer_config.json").string() +
                     ": the pad token must be \"!\" (id 0), as OWL's processors pad");
  const json cfg_j = demo_owl_config(o, tok.vocab_size());
  const json pre_j = demo_owl_preprocessor(o.image_size);
  const m::OwlConfig cfg = m::parse_owl_config(m::ConfigReader(cfg_j, "demo-owl config"));
  const auto pc = m::parse_owl_image_processor_config(m::ConfigReader(pre_j, "demo-owl preprocessor"), cfg.variant);
  const int g = static_cast<int>(cfg.grid());

  m::OwlModel model(cfg);
  init_weights(*model, o.seed);
  const std::string pre = std::string(cfg.prefix()) + ".";
  if (!o.init_vision.empty())
    copy_tower(*model, pre + "vision_model.", o.init_vision, "vision_tower.vision_model.", cfg.vision.pre_layernorm_key);
  if (!o.init_text.empty()) copy_tower(*model, pre + "text_model.", o.init_text, "text_model.", "-");

  nn::TrainingScope training;
  model->train();
  std::int64_t n_param = 0;
  auto opt = make_trainable_adamw(
      *model,
      [](const std::string& n, const torch::Tensor& t) { return t.dim() >= 2 && !ends_with(n, "embedding.weight"); },
      o.lr, o.weight_decay, n_param);
  TrainReport rep;
  rep.parameters = n_param;
  log_info("demo-owl: OWLv2 with {} parameters ({} x {} patches of {} px), {} steps of {} scenes", n_param, g, g,
           o.patch_size, o.steps, o.images_per_step);

  fs::create_directories(o.out_dir);
  const fs::path log_path = o.out_dir / "train-log.tsv";
  std::string log_text = "step\tseconds\tlr\tloss\tclass\tbox_l1\tgiou\tobjectness\tfound\n";
  const std::vector<torch::Tensor> params = model->parameters();
  world::Rng rng(o.seed * 0x9E3779B97F4A7C15ull + 7);
  StepLoop loop("demo-owl", o.steps, o.log_every, o.max_minutes);
  double acc[5] = {0, 0, 0, 0, 0};
  int acc_n = 0, found = 0, asked = 0;
  const int B = o.images_per_step;
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, o.steps, o.warmup);
    set_lr(*opt, lr);
    std::vector<world::Scene> scenes;
    std::vector<Example> ex;
    std::vector<torch::Tensor> px;
    for (int i = 0; i < B; ++i) {
      scenes.push_back(world::make_scene(kTrainSeedBase + static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(B) +
                                         static_cast<std::uint64_t>(i)));
      ex.push_back(make_example(scenes.back(), pc, g));
      px.push_back(ex.back().pixels);
    }
    const auto queries = make_queries(rng);
    const auto Q = static_cast<std::int64_t>(queries.size()), N = static_cast<std::int64_t>(g) * g;
    // targets
    auto cls_t = torch::zeros({B, N, Q});
    auto obj_t = torch::zeros({B, N});
    std::vector<std::int64_t> sel;   // assigned (b * N + n)
    std::vector<float> box_t;        // their target boxes
    auto* pc_t = cls_t.data_ptr<float>();
    for (int b = 0; b < B; ++b)
      for (std::int64_t n = 0; n < N; ++n) {
        const int k = ex[static_cast<std::size_t>(b)].owner[static_cast<std::size_t>(n)];
        if (k < 0) continue;
        const auto& ob = scenes[static_cast<std::size_t>(b)].objects[static_cast<std::size_t>(k)];
        obj_t[b][n] = 1.0;
        for (std::int64_t q = 0; q < Q; ++q) {
          const auto& qq = queries[static_cast<std::size_t>(q)];
          if (qq.shape == static_cast<int>(ob.shape) && (qq.colour < 0 || qq.colour == static_cast<int>(ob.colour)))
            pc_t[(b * N + n) * Q + q] = 1.0f;
        }
        sel.push_back(b * N + n);
        const auto& bx = ex[static_cast<std::size_t>(b)].box[static_cast<std::size_t>(k)];
        box_t.insert(box_t.end(), bx.begin(), bx.end());
      }
    const auto n_pos = static_cast<std::int64_t>(sel.size());
    const auto sel_t = torch::tensor(sel, torch::kInt64);
    const auto box_tt = torch::from_blob(box_t.data(), {n_pos, 4}, torch::kFloat32).clone();

    const auto feats = model->image_features(torch::stack(px));  // [B, N, Dv]
    const auto heads = model->heads(feats);
    const auto [ids, mask] = tokenize(tok, queries);
    const auto q_emb = model->query_embeds(ids, mask);                    // [Q, Dp]
    const auto logits = m::OwlModelImpl::class_logits(heads, q_emb);      // [B, N, Q]

    const auto pred = heads.pred_boxes.reshape({B * N, 4}).index_select(0, sel_t);  // [n_pos, 4]
    const auto [iou, gi] = iou_giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(box_tt));     // [n_pos]
    const auto l_l1 = torch::l1_loss(pred, box_tt, at::Reduction::Sum) / std::max<std::int64_t>(1, n_pos);
    const auto l_giou = (1 - gi).sum() / std::max<std::int64_t>(1, n_pos);
    torch::Tensor l_cls;
    if (o.quality_targets) {
      // quality focal loss: a positive's target is its box's IoU (no gradient through it)
      auto q = torch::zeros({B * N});
      q.index_put_({sel_t}, iou.detach().clamp_min(0));
      const auto y = cls_t * q.view({B, N, 1});
      const auto ce = torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::None);
      l_cls = (ce * (y - torch::sigmoid(logits)).abs().pow(kFocalGamma)).sum() / std::max<std::int64_t>(1, n_pos);
    } else {
      const auto ce = torch::binary_cross_entropy_with_logits(logits, cls_t, {}, {}, at::Reduction::None);
      const auto p = torch::sigmoid(logits);
      const auto p_t = p * cls_t + (1 - p) * (1 - cls_t);
      const auto alpha_t = kFocalAlpha * cls_t + (1 - kFocalAlpha) * (1 - cls_t);
      l_cls = (alpha_t * ce * (1 - p_t).pow(kFocalGamma)).sum() / std::max<std::int64_t>(1, n_pos);
    }
    const auto l_obj = torch::binary_cross_entropy_with_logits(heads.objectness, obj_t);
    const auto loss = l_cls + kBoxL1Weight * l_l1 + kGiouWeight * l_giou + kObjectnessWeight * l_obj;
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt->step();

    acc[0] += loss.item<double>();
    acc[1] += l_cls.item<double>();
    acc[2] += l_l1.item<double>();
    acc[3] += l_giou.item<double>();
    acc[4] += l_obj.item<double>();
    ++acc_n;
    {  // each object's name: its best patch's box right (IoU >= 0.5 with an object of that name)?
      torch::NoGradGuard ng;
      const auto boxes = cxcywh_to_xyxy(heads.pred_boxes.detach());  // [B, N, 4]
      const auto lg = logits.detach();
      for (int b = 0; b < B; ++b) {
        const auto& sc = scenes[static_cast<std::size_t>(b)];
        const int side = std::max(sc.image.rows, sc.image.cols);
        for (const auto& ob : sc.objects) {
          const std::int64_t q = static_cast<std::int64_t>(ob.shape) * (world::kColourCount + 1) + static_cast<std::int64_t>(ob.colour);
          const auto n = lg[b].select(1, q).argmax().item<std::int64_t>();
          const auto bb = boxes[b][n];
          const pipelines::OwlBox pb{bb[0].item<double>() * side, bb[1].item<double>() * side, bb[2].item<double>() * side,
                                     bb[3].item<double>() * side};
          bool ok = false;
          for (const auto& o2 : sc.objects)
            if (o2.shape == ob.shape && o2.colour == ob.colour && box_iou(pb, o2.box) >= 0.5) ok = true;
          found += ok;
          ++asked;
        }
      }
    }
    if (loop.end_step()) {
      for (auto& a : acc) a /= acc_n;
      rep.final_loss = acc[0];
      const double fr = asked > 0 ? static_cast<double>(found) / asked : 0.0;
      log_text += fmt::format("{}\t{:.1f}\t{:.3g}\t{:.5f}\t{:.5f}\t{:.5f}\t{:.5f}\t{:.5f}\t{:.3f}\n", step + 1, loop.seconds(),
                              lr, acc[0], acc[1], acc[2], acc[3], acc[4], fr);
      log_info("demo-owl: step {} loss {:.4f} (class {:.4f}, L1 {:.4f}, GIoU {:.4f}, objectness {:.4f}), names found {:.3f} ({:.0f} s)",
               step + 1, acc[0], acc[1], acc[2], acc[3], acc[4], fr, loop.seconds());
      write_file_atomic(log_path.string(), log_text);
      for (auto& a : acc) a = 0;
      acc_n = found = asked = 0;
    }
  }
  rep.steps = loop.steps_run();
  rep.seconds = loop.seconds();
  model->eval();
  save_hf_checkpoint(o.out_dir, *model, o.fp16, "demo-owl", rep.steps, o.seed, cfg_j, pre_j);
  copy_clip_tokenizer(o.tokenizer_dir, o.out_dir, "demo-owl");
  log_info("demo-owl: {} steps in {:.0f} s, written to {}", rep.steps, rep.seconds, o.out_dir.string());
  return rep;
}

OwlEvalResult evaluate_demo_owl(const fs::path& model_dir, int scenes, std::uint64_t seed0, DTypeChoice dtype) {
  const double t0 = now_ms();
  pipelines::OwlOptions oo;
  oo.dtype = dtype;
  pipelines::OwlDetector det(model_dir, oo);
  OwlEvalResult r;
  double iou_sum = 0;
  for (int s = 0; s < scenes; ++s) {
    const auto seed = seed0 + static_cast<std::uint64_t>(s);
    const world::Scene sc = world::make_scene(seed);
    std::vector<std::string> names;
    std::set<std::string> present;
    for (const auto& ob : sc.objects) {
      if (present.insert(ob.name()).second) names.push_back(ob.name());
    }
    // one name of the world that the scene lacks, chosen by the seed
    world::Rng rng(seed * 31 + 5);
    std::string absent;
    while (absent.empty() || present.count(absent)) {
      const auto sh = static_cast<world::Shape>(rng.below(world::kShapeCount));
      const auto co = static_cast<world::Colour>(rng.below(world::kColourCount));
      absent = std::string(world::colour_name(co)) + " " + world::shape_name(sh);
    }
    names.push_back(absent);
    const auto f = det.image_features(sc.image);
    const auto res = det.query(f, names);
    for (int q = 0; q + 1 < static_cast<int>(names.size()); ++q) {
      const auto best = pipelines::owl_best_for_phrase(res, q);
      double iou = 0;
      bool on_it = false;
      const double cx = 0.5 * (best.box.x0 + best.box.x1), cy = 0.5 * (best.box.y0 + best.box.y1);
      for (const auto& ob : sc.objects)
        if (ob.name() == names[static_cast<std::size_t>(q)]) {
          iou = std::max(iou, box_iou(best.box, ob.box));
          on_it = on_it || ob.box.contains(cv::Point(static_cast<int>(cx), static_cast<int>(cy)));
        }
      r.located += on_it;
      ++r.objects;
      iou_sum += iou;
      if (iou >= 0.5) {
        ++r.found;
        if (best.score > 0.1) ++r.above_threshold;
      }
    }
    const auto best_absent = pipelines::owl_best_for_phrase(res, static_cast<int>(names.size()) - 1);
    ++r.absent;
    r.absent_rejected += best_absent.score <= 0.1;
  }
  r.mean_iou = r.objects > 0 ? iou_sum / r.objects : 0.0;
  r.seconds = (now_ms() - t0) / 1e3;
  return r;
}

}  // namespace lli::train
