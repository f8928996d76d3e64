// Segment Anything parity with the sam-tiny-a golden fixture (transformers 4.45.1 SamModel /
// SamProcessor, fp32 CPU): preprocessing, vision hidden states, image embeddings, positional
// encoding, prompt embeddings, decoder outputs (multimask on/off), post-processed masks; the bf16
// encoder drift (reported); config defaults and strict loading; attention chunking.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/sam.h"
#include "models/sam_preprocess.h"
#include "nn/attention.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using lli::test::fixtures_dir;
using lli::test::TempDir;

fs::path sam_dir() { return fixtures_dir() / "sam-tiny-a"; }

std::map<std::string, torch::Tensor> load_golden() {
  auto f = lli::st::File::open(sam_dir() / "golden.safetensors");
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : f.tensors()) out[t.name] = lli::to_torch(t).clone();
  return out;
}

nlohmann::json load_case() {
  std::ifstream in(sam_dir() / "case.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  if (a.numel() == 0) return 0;
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).abs().max().item<double>();
}

cv::Mat read_rgb(const fs::path& p) {
  cv::Mat bgr = cv::imread(p.string(), cv::IMREAD_COLOR);
  REQUIRE(!bgr.empty());
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no error>";
}

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

struct Recorder {
  std::map<std::string, std::vector<torch::Tensor>> seen;
  lli::nn::Tap tap() {
    return [this](const std::string& name, std::int64_t index, const torch::Tensor& t) {
      auto& v = seen[name];
      if (index < 0) {
        v.push_back(t.detach().clone());
      } else {
        if (static_cast<std::int64_t>(v.size()) <= index) v.resize(static_cast<std::size_t>(index + 1));
        v[static_cast<std::size_t>(index)] = t.detach().clone();
      }
    };
  }
};

// Prompt tensors of one case from case.json (original pixel coordinates), scaled like SamProcessor.
m::SamPromptTensors case_prompts(const nlohmann::json& p, const m::SamCoordScale& s) {
  m::SamPromptTensors t;
  if (p.contains("input_points")) {
    std::vector<double> xy;
    for (const auto& pt : p["input_points"][0]) {
      xy.push_back(pt[0].get<double>());
      xy.push_back(pt[1].get<double>());
    }
    const auto n = static_cast<std::int64_t>(xy.size() / 2);
    t.points = m::sam_scale_points(torch::tensor(xy, torch::kFloat64).view({1, 1, n, 2}), s);
    std::vector<std::int64_t> labels;
    for (const auto& l : p["input_labels"][0]) labels.push_back(l.get<std::int64_t>());
    t.labels = torch::tensor(labels, torch::kInt64).view({1, 1, n});
  }
  if (p.contains("input_boxes")) {
    std::vector<double> b;
    for (const auto& box : p["input_boxes"][0])
      for (const auto& v : box) b.push_back(v.get<double>());
    const auto nb = static_cast<std::int64_t>(b.size() / 4);
    t.boxes = m::sam_scale_boxes(torch::tensor(b, torch::kFloat64).view({1, nb, 4}), s);
  }
  return t;
}

}  // namespace

TEST_CASE("sam-tiny-a: preprocessing of image.png matches SamProcessor (pixel values, sizes)") {
  auto g = load_golden();
  auto pc = m::load_sam_image_processor_config(sam_dir());
  CHECK(pc.longest_edge == 64);
  CHECK(pc.pad_height == 64);
  CHECK(pc.resample == lli::PilResample::bilinear);
  cv::Mat rgb = read_rgb(sam_dir() / "image.png");
  auto img = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
  CHECK(torch::equal(img, g["image_uint8"]));
  auto in = m::sam_preprocess_rgb(rgb, pc);
  const double d = max_abs_diff(in.pixel_values, g["pixel_values"]);
  MESSAGE("pixel_values max |diff| = " << d);
  CHECK(d <= 1e-6);
  CHECK(in.original_h == g["original_sizes"][0][0].item<std::int64_t>());
  CHECK(in.original_w == g["original_sizes"][0][1].item<std::int64_t>());
  CHECK(in.reshaped_h == g["reshaped_input_sizes"][0][0].item<std::int64_t>());
  CHECK(in.reshaped_w == g["reshaped_input_sizes"][0][1].item<std::int64_t>());
  // _get_preprocess_shape rounding: int(x * S / max + 0.5)
  CHECK(m::sam_preprocess_shape(40, 50, 64) == std::make_pair(51, 64));
  CHECK(m::sam_preprocess_shape(480, 640, 1024) == std::make_pair(768, 1024));
  CHECK(m::sam_preprocess_shape(333, 1000, 1024) == std::make_pair(341, 1024));
}

TEST_CASE("sam-tiny-a fp32: vision hidden states, image embeddings and positional encoding match SamModel") {
  auto g = load_golden();
  auto model = m::load_sam(sam_dir());
  Recorder rec;
  auto emb = model->get_image_embeddings(g["pixel_values"], rec.tap());
  auto& hs = rec.seen["vision.hidden_state"];
  auto gh = g["vision_hidden_states"];
  REQUIRE(static_cast<std::int64_t>(hs.size()) == gh.size(0));
  double dmax = 0;
  for (std::size_t i = 0; i < hs.size(); ++i) {
    const double d = max_abs_diff(hs[i].squeeze(0), gh[static_cast<std::int64_t>(i)]);
    MESSAGE("vision_hidden_states[" << i << "] max |diff| = " << d);
    CHECK(d <= 1e-4);
    dmax = std::max(dmax, d);
  }
  const double de = max_abs_diff(emb, g["image_embeddings"]);
  MESSAGE("image_embeddings max |diff| = " << de);
  CHECK(de <= 1e-4);
  const double dp = max_abs_diff(model->get_image_wide_positional_embeddings(), g["image_positional_embeddings"]);
  MESSAGE("image_positional_embeddings max |diff| = " << dp);
  CHECK(dp <= 1e-4);
}

TEST_CASE("sam-tiny-a fp32: prompt embeddings, decoder outputs and post-processed masks match for every case") {
  auto g = load_golden();
  auto cj = load_case();
  auto model = m::load_sam(sam_dir());
  auto pc = m::load_sam_image_processor_config(sam_dir());
  auto in = m::sam_preprocess_rgb(read_rgb(sam_dir() / "image.png"), pc);
  auto emb = model->get_image_embeddings(in.pixel_values);
  const auto scale = m::sam_coord_scale(in.original_h, in.original_w, pc);

  for (const char* name : {"points", "box", "box_point"}) {
    const std::string n = name;
    CAPTURE(n);
    auto prompts = case_prompts(cj["prompts_in_original_pixel_coordinates"][n], scale);
    if (prompts.points.defined()) {
      CHECK(max_abs_diff(prompts.points, g[n + ".input_points"]) == 0);
      CHECK(torch::equal(prompts.labels, g[n + ".input_labels"]));
    }
    if (prompts.boxes.defined()) CHECK(max_abs_diff(prompts.boxes, g[n + ".input_boxes"]) == 0);

    auto pe = model->embed_prompts(prompts);
    const double ds = max_abs_diff(pe.sparse, g[n + ".sparse_embeddings"]);
    const double dd = max_abs_diff(pe.dense, g[n + ".dense_embeddings"]);
    MESSAGE(n << ": sparse_embeddings max |diff| = " << ds << ", dense_embeddings " << dd);
    CHECK(ds <= 1e-4);
    CHECK(dd <= 1e-4);

    for (bool multi : {true, false}) {
      const std::string k = n + (multi ? ".multimask" : ".single");
      CAPTURE(k);
      auto out = model->decode(emb, prompts, multi);
      const double di = max_abs_diff(out.iou_scores, g[k + ".iou_scores"]);
      const double dm = max_abs_diff(out.pred_masks, g[k + ".pred_masks"]);
      auto logits = m::sam_post_process_masks(out.pred_masks[0], in, static_cast<int>(pc.pad_height),
                                              static_cast<int>(pc.pad_width));
      auto glog = g[k + ".masks_logits_original_size"];
      const double dl = max_abs_diff(logits, glog);
      auto binary = logits > 0;
      auto gbin = g[k + ".masks_original_size"];
      REQUIRE(binary.sizes() == gbin.sizes());
      auto differ = binary.ne(gbin);
      auto near_zero = glog.abs() < 1e-4;
      const auto n_differ = differ.sum().item<std::int64_t>();
      const auto n_bad = (differ & ~near_zero).sum().item<std::int64_t>();
      MESSAGE(k << ": iou_scores max |diff| = " << di << ", pred_masks " << dm << ", masks_logits_original_size " << dl
                << ", binary pixels differing " << n_differ << " (outside |logit| < 1e-4: " << n_bad << ")");
      CHECK(di <= 1e-4);
      CHECK(dm <= 1e-4);
      CHECK(dl <= 1e-4);
      CHECK(n_bad == 0);
    }
  }
}

TEST_CASE("sam-tiny-a bf16: image encoder drift vs the fp32 golden (reported)") {
  auto g = load_golden();
  m::SamLoadOptions o;
  o.dtype = torch::kBFloat16;
  auto model = m::load_sam(sam_dir(), o);
  CHECK((model->encoder_dtype() == torch::kBFloat16));
  CHECK((model->shared_image_embedding->positional_embedding.scalar_type() == torch::kFloat32));
  CHECK((model->mask_decoder->iou_token->weight.scalar_type() == torch::kFloat32));
  auto emb = model->get_image_embeddings(g["pixel_values"]);
  CHECK((emb.scalar_type() == torch::kFloat32));
  const double d = max_abs_diff(emb, g["image_embeddings"]);
  const double scale = g["image_embeddings"].abs().max().item<double>();
  MESSAGE("bf16 image_embeddings max |diff| = " << d << " (max |value| " << scale << ")");
  CHECK(std::isfinite(d));
  CHECK(d < 0.25 * scale);
  // The decoder still runs (fp32) on the bf16 embedding.
  m::SamPromptTensors p;
  p.boxes = torch::tensor({8.0, 6.0, 40.0, 30.0}, torch::kFloat64).view({1, 1, 4});
  auto out = model->decode(emb, p, true);
  CHECK((out.pred_masks.sizes() == torch::IntArrayRef({1, 1, 3, 32, 32})));
  const double dm = max_abs_diff(out.iou_scores, model->decode(g["image_embeddings"], p, true).iou_scores);
  MESSAGE("bf16 encoder -> box iou_scores max |diff| vs fp32 embedding = " << dm);
}

TEST_CASE("SamConfig: transformers defaults for absent keys, derived sizes, cross-checks") {
  auto c = m::parse_sam_config(nlohmann::json::object(), "config.json");
  CHECK(c.vision.hidden_size == 768);
  CHECK(c.vision.num_hidden_layers == 12);
  CHECK(c.vision.global_attn_indexes == std::vector<std::int64_t>{2, 5, 8, 11});
  CHECK(c.vision.mlp_dim == 3072);
  CHECK(c.vision.window_size == 14);
  CHECK(c.vision.layer_norm_eps == 1e-6);
  CHECK(c.prompt_encoder.image_embedding_size() == 64);
  CHECK(c.prompt_encoder.mask_input_channels == 16);
  CHECK(c.mask_decoder.mlp_dim == 2048);
  CHECK(c.mask_decoder.num_attention_heads == 8);
  CHECK(c.mask_decoder.hidden_act == lli::nn::Activation::relu);
  CHECK(c.low_res_size() == 256);

  // mlp_dim derives from mlp_ratio when absent; global layers from the list.
  auto j = nlohmann::json::parse(R"({"vision_config": {"hidden_size": 1024, "mlp_ratio": 2.0, "num_attention_heads": 16,
      "num_hidden_layers": 4, "global_attn_indexes": [3]}})");
  auto c2 = m::parse_sam_config(j, "config.json");
  CHECK(c2.vision.mlp_dim == 2048);
  CHECK(c2.vision.is_global(3));
  CHECK(!c2.vision.is_global(2));

  // The fixture's config: image_embedding_size is derived, vision/prompt grids agree.
  auto c3 = m::load_sam_config(sam_dir());
  CHECK(c3.grid() == 8);
  CHECK(c3.vision.mlp_dim == 192);
  CHECK(c3.mask_decoder.iou_head_depth == 3);

  CHECK(has(error_of<lli::ModelError>([] {
              m::parse_sam_config(nlohmann::json::parse(R"({"vision_config": {"output_channels": 128}})"), "config.json");
            }),
            "config.json: vision_config.output_channels = 128 but mask_decoder_config.hidden_size = 256"));
  CHECK(has(error_of<lli::ModelError>([] {
              m::parse_sam_config(nlohmann::json::parse(R"({"vision_config": {"global_attn_indexes": [2, 12]}})"),
                                  "config.json");
            }),
            "config.json: vision_config.global_attn_indexes: layer 12 is out of range (0..11)"));
  CHECK(has(error_of<lli::ModelError>([] {
              m::parse_sam_config(nlohmann::json::parse(R"({"mask_decoder_config": {"hidden_act": "swoosh"}})"),
                                  "config.json");
            }),
            "config.json: mask_decoder_config.hidden_act: unsupported activation \"swoosh\""));
  CHECK(has(error_of<lli::ModelError>([] {
              m::parse_sam_config(nlohmann::json::parse(R"({"model_type": "llava"})"), "config.json");
            }),
            "is not a Segment Anything model"));
}

TEST_CASE("load_sam: a checkpoint missing a key and with a wrong shape gives one ModelError listing both") {
  TempDir tmp;
  fs::copy_file(sam_dir() / "config.json", tmp / "config.json");
  auto ckpt = lli::st::Checkpoint::open(sam_dir());
  auto t = lli::load_tensors(ckpt);
  t.erase("mask_decoder.iou_token.weight");
  t["vision_encoder.layers.1.attn.rel_pos_h"] = torch::zeros({7, 16});
  t["prompt_encoder.extra.weight"] = torch::zeros({3});
  lli::save_tensors(tmp / "model.safetensors", t);
  const auto msg = error_of<lli::ModelError>([&] { m::load_sam(tmp.path); });
  INFO(msg);
  CHECK(has(msg, "checkpoint does not match the model"));
  CHECK(has(msg, "mask_decoder.iou_token.weight"));
  CHECK(has(msg, "vision_encoder.layers.1.attn.rel_pos_h: checkpoint [7,16] vs model [15,16]"));
  CHECK(has(msg, "prompt_encoder.extra.weight"));
  CHECK(msg.find('\n') == std::string::npos);

  // A stored tied copy of the positional embedding is accepted.
  auto t2 = lli::load_tensors(ckpt);
  t2["prompt_encoder.shared_embedding.positional_embedding"] = t2["shared_image_embedding.positional_embedding"];
  TempDir tmp2;
  fs::copy_file(sam_dir() / "config.json", tmp2 / "config.json");
  lli::save_tensors(tmp2 / "model.safetensors", t2);
  CHECK_NOTHROW(m::load_sam(tmp2.path));
}

TEST_CASE("attention: query chunking and the decomposed relative-position bias equal the direct computation") {
  torch::manual_seed(3);
  const std::int64_t B = 2, H = 3, kh = 4, kw = 5, L = kh * kw, D = 8;
  auto q = torch::randn({B, H, L, D}), k = torch::randn({B, H, L, D}), v = torch::randn({B, H, L, D});
  auto rh = torch::randn({B, H, L, kh}), rw = torch::randn({B, H, L, kw});
  lli::nn::AttentionOptions o;
  o.scale = 0.3;
  o.softmax_fp32 = true;
  o.rel_h = rh;
  o.rel_w = rw;
  auto full = lli::nn::attention(q, k, v, torch::Tensor(), o);
  auto bias = (rh.unsqueeze(-1) + rw.unsqueeze(-2)).reshape({B, H, L, L});
  auto ref = torch::matmul(torch::softmax(torch::matmul(q * 0.3, k.transpose(-2, -1)) + bias, -1), v);
  CHECK(max_abs_diff(full, ref) < 1e-5);
  o.q_chunk = 7;
  auto chunked = lli::nn::attention(q, k, v, torch::Tensor(), o);
  CHECK(max_abs_diff(chunked, full) < 1e-6);
  // Chunked causal attention with an offset and a per-row mask equals the unchunked one.
  lli::nn::AttentionOptions c;
  c.causal = true;
  c.causal_offset = 3;
  auto mask = torch::randn({L, L + 3});
  auto kk = torch::randn({B, H, L + 3, D}), vv = torch::randn({B, H, L + 3, D});
  auto a = lli::nn::attention(q, kk, vv, mask, c);
  c.q_chunk = 6;
  auto b = lli::nn::attention(q, kk, vv, mask, c);
  CHECK(max_abs_diff(a, b) < 1e-6);
}
