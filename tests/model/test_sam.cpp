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
#include "model_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using lli::test::fixtures_dir;
using lli::test::TempDir;
using lli::test::error_of;
using lli::test::has;
using lli::test::max_abs_diff;
using lli::test::read_rgb;
using lli::test::Recorder;

fs::path sam_dir() { return fixtures_dir() / "sam-tiny-a"; }
std::map<std::string, torch::Tensor> load_golden() { return lli::test::load_golden(sam_dir() / "golden.safetensors"); }

nlohmann::json load_case() {
  std::ifstream in(sam_dir() / "case.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

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

  // SlimSAM-77 (nielsr/slimsam-77-uniform config.json): only the vision width and MLP change.
  auto slim = m::parse_sam_config(
      nlohmann::json::parse(R"({"architectures": ["SamModel"], "mask_decoder_config": {"model_type": ""},
        "model_type": "sam", "prompt_encoder_config": {"model_type": ""},
        "vision_config": {"hidden_size": 168, "mlp_dim": 696, "model_type": ""}})"),
      "config.json");
  m::SamModel slim_model(slim);
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& p : slim_model->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  CHECK(shapes["vision_encoder.layers.0.attn.qkv.weight"] == std::vector<std::int64_t>{504, 168});
  CHECK(shapes["vision_encoder.layers.0.attn.rel_pos_h"] == std::vector<std::int64_t>{27, 14});
  CHECK(shapes["vision_encoder.layers.2.attn.rel_pos_w"] == std::vector<std::int64_t>{127, 14});
  CHECK(shapes["vision_encoder.layers.11.mlp.lin1.weight"] == std::vector<std::int64_t>{696, 168});
  CHECK(shapes["vision_encoder.neck.conv1.weight"] == std::vector<std::int64_t>{256, 168, 1, 1});
  CHECK(shapes["mask_decoder.transformer.layers.0.mlp.lin1.weight"] == std::vector<std::int64_t>{2048, 256});

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
  // Few keys, many queries (transposed softmax path), with a broadcast query batch.
  auto q1 = torch::randn({1, H, 100, D}), k7 = torch::randn({B, H, 7, D}), v7 = torch::randn({B, H, 7, 5});
  lli::nn::AttentionOptions d;
  d.scale_mode = lli::nn::AttentionScale::divide_scores;
  d.scale = 2.0;
  auto got = lli::nn::attention(q1, k7, v7, torch::Tensor(), d);
  auto want = torch::matmul(torch::softmax(torch::matmul(q1, k7.transpose(-2, -1)) / 2.0, -1), v7);
  REQUIRE(got.sizes() == want.sizes());
  CHECK(max_abs_diff(got, want) < 1e-5);
}

TEST_CASE("sam_mask_stats: binary mask, area, box and stability counts in one pass") {
  auto l = torch::tensor({-2.0f, -0.5f, 0.0f, 0.5f, 1.5f, -1.0f, 2.0f, 0.25f, -3.0f}).view({3, 3});
  std::vector<std::uint8_t> bin(9);
  auto st = m::sam_mask_stats(l.t(), 0.0, 1.0, bin.data());  // strided input
  // l.t() = [[-2, 0.5, 2], [-0.5, 1.5, 0.25], [0, -1, -3]]
  CHECK(st.area == 4);
  CHECK(st.above_hi == 2);
  CHECK(st.above_lo == 6);  // > -1: 0.5 2 -0.5 1.5 0.25 0
  CHECK(st.stability() == doctest::Approx(2.0 / 6.0));
  CHECK(st.x0 == 1);
  CHECK(st.x1 == 2);
  CHECK(st.y0 == 0);
  CHECK(st.y1 == 1);
  CHECK(bin == std::vector<std::uint8_t>{0, 255, 255, 0, 255, 255, 0, 0, 0});
  auto empty = m::sam_mask_stats(torch::full({2, 2}, -5.0f), 0.0, 1.0, nullptr);
  CHECK(empty.area == 0);
  CHECK(empty.x0 == -1);
  CHECK(empty.stability() == 0);
}

// ---- pipeline (lib/pipelines/segment_sam.h) ------------------------------------------------

#include "lli/fs.h"
#include "pipelines/segment_sam.h"

namespace {

namespace pl = lli::pipelines;

pl::SamSegmenter fixture_segmenter() {
  pl::SamOptions o;
  o.dtype = lli::DTypeChoice::f32;
  return pl::SamSegmenter(sam_dir(), o);
}

cv::Mat read_bgr(const fs::path& p) {
  cv::Mat bgr = cv::imread(p.string(), cv::IMREAD_COLOR);
  REQUIRE(!bgr.empty());
  return bgr;
}

pl::SamPrompt pipeline_prompt(const nlohmann::json& p, pl::SamMultimask mm) {
  pl::SamPrompt out;
  out.multimask = mm;
  if (p.contains("input_points"))
    for (std::size_t i = 0; i < p["input_points"][0].size(); ++i)
      out.points.push_back({p["input_points"][0][i][0].get<double>(), p["input_points"][0][i][1].get<double>(),
                            p["input_labels"][0][i].get<int>() == 1});
  if (p.contains("input_boxes"))
    for (const auto& b : p["input_boxes"][0])
      out.boxes.push_back({b[0].get<double>(), b[1].get<double>(), b[2].get<double>(), b[3].get<double>()});
  return out;
}

torch::Tensor mat_to_bool(const cv::Mat& m) {
  return torch::from_blob(m.data, {m.rows, m.cols}, torch::kUInt8).clone() > 0;
}

}  // namespace

TEST_CASE("segment_sam pipeline: masks and scores at the original size equal the golden for every case and mode") {
  auto g = load_golden();
  auto cj = load_case();
  auto seg = fixture_segmenter();
  auto emb = seg.compute_embedding(read_bgr(sam_dir() / "image.png"));
  CHECK(emb.image_width() == 50);
  CHECK(emb.image_height() == 40);
  CHECK(seg.low_res_size() == 32);
  for (const char* name : {"points", "box", "box_point"}) {
    const std::string n = name;
    CAPTURE(n);
    const auto& pj = cj["prompts_in_original_pixel_coordinates"][n];
    for (auto mm : {pl::SamMultimask::all, pl::SamMultimask::off, pl::SamMultimask::best}) {
      CAPTURE(pl::sam_multimask_name(mm));
      auto masks = seg.segment(emb, pipeline_prompt(pj, mm));
      const std::string k = n + (mm == pl::SamMultimask::off ? ".single" : ".multimask");
      auto giou = g[k + ".iou_scores"][0][0];
      auto gbin = g[k + ".masks_original_size"][0];
      auto glog = g[k + ".masks_logits_original_size"][0];
      std::vector<std::int64_t> tokens;
      if (mm == pl::SamMultimask::best)
        tokens.push_back(giou.argmax().item<std::int64_t>());
      else
        for (std::int64_t i = 0; i < giou.size(0); ++i) tokens.push_back(i);
      REQUIRE(masks.size() == tokens.size());
      for (std::size_t i = 0; i < masks.size(); ++i) {
        const auto t = tokens[i];
        CHECK(masks[i].mask_token == (mm == pl::SamMultimask::off ? 0 : t + 1));
        CHECK(std::abs(masks[i].score - giou[t].item<float>()) < 1e-4);
        auto bin = mat_to_bool(masks[i].mask);
        auto bad = (bin.ne(gbin[t]) & ~(glog[t].abs() < 1e-4)).sum().item<std::int64_t>();
        CHECK(bad == 0);
        CHECK(masks[i].area == gbin[t].sum().item<std::int64_t>());
        // Stability from the golden logits.
        const double inter = (glog[t] > 1).sum().item<double>(), uni = (glog[t] > -1).sum().item<double>();
        CHECK(std::abs(masks[i].stability - (uni > 0 ? inter / uni : 0)) < 1e-6);
        CHECK(masks[i].low_res_logits.rows == 32);
        CHECK(masks[i].low_res_logits.type() == CV_32FC1);
      }
    }
  }
}

TEST_CASE("segment_sam pipeline: several boxes give one mask each, and points join every box, and mask prompts feed back") {
  auto seg = fixture_segmenter();
  auto emb = seg.compute_embedding(read_bgr(sam_dir() / "image.png"));
  pl::SamPrompt p;
  p.multimask = pl::SamMultimask::off;
  p.boxes = {{8, 6, 36, 30}, {20, 12, 46, 38}};
  auto two = seg.segment(emb, p);
  REQUIRE(two.size() == 2);
  CHECK(two[0].prompt_index == 0);
  CHECK(two[1].prompt_index == 1);
  // Each box alone gives the same mask as in the batch.
  pl::SamPrompt one = p;
  one.boxes = {p.boxes[1]};
  auto single = seg.segment(emb, one);
  REQUIRE(single.size() == 1);
  CHECK(std::abs(single[0].score - two[1].score) < 1e-5);
  CHECK(cv::norm(single[0].low_res_logits, two[1].low_res_logits, cv::NORM_INF) < 1e-4);
  // More boxes than one decoder batch (4): same masks as one by one.
  pl::SamPrompt many;
  many.multimask = pl::SamMultimask::off;
  for (int i = 0; i < 20; ++i) many.boxes.push_back({1.0 + i, 2.0 + i / 2.0, 30.0 + i, 35.0});
  auto all = seg.segment(emb, many);
  REQUIRE(all.size() == 20);
  CHECK(all[19].prompt_index == 19);
  pl::SamPrompt last = many;
  last.boxes = {many.boxes[18]};
  CHECK(cv::norm(seg.segment(emb, last)[0].low_res_logits, all[18].low_res_logits, cv::NORM_INF) < 1e-4);
  // Box + point: equals the golden box_point case when the point goes with the second box.
  pl::SamPrompt bp;
  bp.multimask = pl::SamMultimask::off;
  bp.boxes = {{20, 12, 46, 38}};
  bp.points = {{33, 24, true}};
  auto ref = seg.segment(emb, bp);
  bp.boxes.insert(bp.boxes.begin(), pl::SamBox{8, 6, 36, 30});
  auto both = seg.segment(emb, bp);
  REQUIRE(both.size() == 2);
  CHECK(cv::norm(ref[0].low_res_logits, both[1].low_res_logits, cv::NORM_INF) < 1e-4);
  // A previous low-res result as the only prompt, and with a point.
  pl::SamPrompt mp;
  mp.mask_prompt = ref[0].low_res_logits;
  auto from_mask = seg.segment(emb, mp);
  REQUIRE(from_mask.size() == 1);
  CHECK(from_mask[0].mask.rows == 40);
  mp.points = {{33, 24, true}};
  CHECK(seg.segment(emb, mp).size() == 1);
  // Errors.
  CHECK_THROWS_AS(seg.segment(emb, pl::SamPrompt{}), lli::InputError);
  pl::SamPrompt badbox;
  badbox.boxes = {{30, 6, 10, 30}};
  CHECK_THROWS_AS(seg.segment(emb, badbox), lli::InputError);
  pl::SamPrompt badmask;
  badmask.mask_prompt = cv::Mat(16, 16, CV_32FC1, cv::Scalar(0));
  CHECK_THROWS_AS(seg.segment(emb, badmask), lli::InputError);
  CHECK_THROWS_AS(seg.segment(pl::SamEmbedding(), bp), lli::RuntimeError);
}

TEST_CASE("segment_sam pipeline: embeddings round-trip through bytes, and foreign or damaged bytes are refused") {
  auto seg = fixture_segmenter();
  auto emb = seg.compute_embedding(read_bgr(sam_dir() / "image.png"));
  const auto bytes = seg.embedding_to_bytes(emb);
  auto back = seg.embedding_from_bytes(bytes, "cache.bin");
  CHECK(back.image_width() == 50);
  CHECK(back.image_height() == 40);
  pl::SamPrompt p;
  p.points = {{12, 10, true}, {30, 25, true}, {40, 33, false}};
  p.multimask = pl::SamMultimask::all;
  auto a = seg.segment(emb, p), b = seg.segment(back, p);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].score == b[i].score);
    CHECK(cv::norm(a[i].mask, b[i].mask, cv::NORM_INF) == 0);
  }
  // The bytes are a valid safetensors file.
  TempDir tmp;
  lli::write_file_atomic((tmp / "e.safetensors").string(), bytes);
  auto f = lli::st::File::open(tmp / "e.safetensors");
  REQUIRE(f.tensors().size() == 1);
  CHECK(f.tensors()[0].name == "image_embeddings");
  CHECK(f.metadata().at("format") == "lli-sam-embedding");

  CHECK(has(error_of<lli::InputError>([&] { seg.embedding_from_bytes(bytes.substr(0, bytes.size() - 4), "c.bin"); }),
            "c.bin: not a usable SAM embedding: data size does not match the shape"));
  CHECK(has(error_of<lli::InputError>([&] { seg.embedding_from_bytes("abc", "c.bin"); }), "too short"));
  std::string wrong = bytes;
  auto pos = wrong.find("\"fingerprint\":\"");
  REQUIRE(pos != std::string::npos);
  pos += 15;
  wrong[pos] = wrong[pos] == 'a' ? 'b' : 'a';
  CHECK(has(error_of<lli::InputError>([&] { seg.embedding_from_bytes(wrong, "c.bin"); }), "another model"));

  // Another model (one weight changed) has another fingerprint.
  TempDir other;
  fs::copy_file(sam_dir() / "config.json", other / "config.json");
  fs::copy_file(sam_dir() / "preprocessor_config.json", other / "preprocessor_config.json");
  auto t = lli::load_tensors(lli::st::Checkpoint::open(sam_dir()));
  t["mask_decoder.iou_token.weight"] = t["mask_decoder.iou_token.weight"] + 1;
  lli::save_tensors(other / "model.safetensors", t);
  pl::SamOptions o;
  o.dtype = lli::DTypeChoice::f32;
  pl::SamSegmenter seg2(other.path, o);
  CHECK(seg2.fingerprint() != seg.fingerprint());
  CHECK_THROWS_AS(seg2.embedding_from_bytes(bytes, "c.bin"), lli::InputError);
  CHECK_THROWS_AS(seg2.segment(emb, p), lli::InputError);
}

TEST_CASE("sample_stroke_points: spacing max(8, width) along the arc, end point kept, even cap") {
  std::vector<lli::XY> line{{0, 0}, {20, 0}, {20, 10}};  // length 30
  auto pts = pl::sample_stroke_points(line, 4, true);   // spacing 8: 0, 8, 16, (20,4), end (20,10)
  REQUIRE(pts.size() == 5);
  CHECK(pts[1].x == doctest::Approx(8));
  CHECK(pts[2].x == doctest::Approx(16));
  CHECK(pts[3].x == doctest::Approx(20));
  CHECK(pts[3].y == doctest::Approx(4));
  CHECK(pts[4].y == doctest::Approx(10));
  CHECK(pts[0].positive);
  auto wide = pl::sample_stroke_points(line, 20, false);  // spacing 20: 0, (20, 0), end
  REQUIRE(wide.size() == 3);
  CHECK(!wide[0].positive);
  CHECK(pl::sample_stroke_points({{5, 6}}, 8, true).size() == 1);
  std::vector<lli::XY> longline{{0, 0}, {1000, 0}};
  auto capped = pl::sample_stroke_points(longline, 1, true, 1, 32);
  REQUIRE(capped.size() == 32);
  CHECK(capped.front().x == 0);
  CHECK(capped.back().x == 1000);
  CHECK(pl::sample_stroke_points(longline, 1, true, 100, 0).size() == 11);

  // sam_prompt_from: explicit points first, then stroke points, total cap 64 with a share each.
  lli::Prompt pr;
  pr.points.push_back({1, 2, false, ""});
  lli::Stroke a, b;
  a.points = {{0, 0}, {1000, 0}};
  a.width = 1;
  b.points = {{0, 5}, {10, 5}};
  b.width = 2;
  pr.strokes = {a, b};
  pl::SamStrokeSampling s;
  s.spacing = 1;
  s.per_stroke_cap = 1000;
  auto sp = pl::sam_prompt_from(pr, pl::SamMultimask::off, s);
  CHECK(sp.multimask == pl::SamMultimask::off);
  REQUIRE(sp.points.size() == 1 + 64);
  CHECK(!sp.points[0].positive);
  CHECK(sp.points.back().y == 5);  // the short stroke keeps its share
}

TEST_CASE("sam_box_nms suppresses IoU > threshold in score order like torchvision") {
  std::vector<cv::Vec4d> b{{0, 0, 10, 10}, {1, 1, 10, 10}, {20, 20, 30, 30}, {0, 0, 10, 10}, {5, 5, 5, 5}};
  std::vector<float> s{0.5f, 0.9f, 0.7f, 0.4f, 0.8f};
  auto keep = pl::sam_box_nms(b, s, 0.7);
  // 1 (0.9) kept; 4 (empty box, IoU 0) kept; 2 kept; 0 has IoU 0.81 with 1 -> removed; 3 same.
  CHECK(keep == std::vector<int>{1, 4, 2});
  CHECK(pl::sam_box_nms(b, s, 0.9) == std::vector<int>{1, 4, 2, 0});
}

TEST_CASE("segment_sam everything: grid prompts filtered by IoU and stability, NMS'd and sorted") {
  auto seg = fixture_segmenter();
  auto emb = seg.compute_embedding(read_bgr(sam_dir() / "image.png"));
  pl::SamEverythingOptions o;
  o.points_per_side = 6;
  o.points_per_batch = 5;
  o.pred_iou_thresh = -10;  // random weights: keep the predicted-IoU filter open
  o.stability_score_offset = 0.05;  // the tiny random model's logits are within +-1
  o.stability_score_thresh = 0.5;
  o.box_nms_thresh = 1.0;  // no suppression
  auto unsuppressed = seg.everything(emb, o);
  o.box_nms_thresh = 0.7;
  auto masks = seg.everything(emb, o);
  MESSAGE("everything on sam-tiny-a: " << unsuppressed.size() << " masks pass the filters, " << masks.size()
                                       << " after NMS");
  CHECK(masks.size() < unsuppressed.size());
  for (std::size_t i = 1; i < unsuppressed.size(); ++i) CHECK(unsuppressed[i - 1].score >= unsuppressed[i].score);
  REQUIRE(!masks.empty());
  std::vector<cv::Vec4d> boxes;
  for (std::size_t i = 0; i < masks.size(); ++i) {
    CHECK(masks[i].stability > 0.5f);
    CHECK(masks[i].area > 0);
    CHECK(masks[i].mask.size() == cv::Size(50, 40));
    CHECK(masks[i].mask_token >= 1);
    CHECK(masks[i].prompt_index < 36);
    if (i > 0) CHECK(masks[i - 1].score >= masks[i].score);
    const auto& r = masks[i].bbox;
    boxes.push_back({double(r.x), double(r.y), double(r.x + r.width - 1), double(r.y + r.height - 1)});
  }
  std::vector<float> sc(masks.size(), 1.f);
  for (std::size_t i = 0; i < sc.size(); ++i) sc[i] = 1.f - 0.001f * static_cast<float>(i);
  CHECK(pl::sam_box_nms(boxes, sc, 0.7).size() == masks.size());  // nothing left to suppress
  // The default thresholds keep a subset; max_masks caps.
  o.max_masks = 2;
  CHECK(seg.everything(emb, o).size() <= 2);
}

TEST_CASE("segment_sam stroke_mask_prompt draws strokes in the low-res frame") {
  auto seg = fixture_segmenter();
  auto emb = seg.compute_embedding(read_bgr(sam_dir() / "image.png"));
  lli::Stroke s;
  s.points = {{10, 10}, {40, 10}};
  s.width = 8;
  auto mp = seg.stroke_mask_prompt(emb, {s});
  REQUIRE(mp.rows == 32);
  REQUIRE(mp.type() == CV_32FC1);
  // (x, y) = (25, 10) original -> resized (32, 12.8) -> low-res (16, 6.4) of 32 per 64 px.
  CHECK(mp.at<float>(6, 16) == 8.f);
  CHECK(mp.at<float>(25, 16) == 0.f);
  pl::SamPrompt p;
  p.mask_prompt = mp;
  CHECK(seg.segment(emb, p).size() == 1);
}

TEST_CASE("sam_linear: the oneDNN 1x1-convolution path equals nn::Linear for fp32 rows (and bf16 passes through)") {
  torch::manual_seed(5);
  lli::nn::Linear lin(48, 20);
  lin->weight.set_data(torch::randn({20, 48}));
  lin->bias.set_data(torch::randn({20}));
  for (std::int64_t rows : {7, 300, 4096}) {
    auto x = torch::randn({2, rows, 48});
    auto a = m::sam_linear(*lin, x), b = lin->forward(x);
    REQUIRE(a.sizes() == b.sizes());
    CHECK(max_abs_diff(a, b) < 1e-4);
    auto xs = torch::randn({rows, 96}).narrow(1, 10, 48);  // strided rows
    CHECK(max_abs_diff(m::sam_linear(*lin, xs), lin->forward(xs)) < 1e-4);
  }
}
