// LLaVA-1.5 parity with the llava-tiny-a golden fixture (transformers 4.45.1, fp32), Pillow
// resize parity (tests/fixtures/pil-resize, made by its make.py with Pillow 9.4.0), config
// defaults, KV-cache decoding, greedy generation, and the bf16 drift (reported, not asserted).
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "io/pil_resize.h"
#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/llava.h"
#include "models/llava_preprocess.h"
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

fs::path llava_dir() { return fixtures_dir() / "llava-tiny-a"; }
std::map<std::string, torch::Tensor> load_golden() { return lli::test::load_golden(llava_dir() / "golden.safetensors"); }

torch::Tensor mat_to_tensor(const cv::Mat& img) {  // [H, W, C] uint8
  cv::Mat c = img.isContinuous() ? img : img.clone();
  return torch::from_blob(c.data, {c.rows, c.cols, c.channels()}, torch::kUInt8).clone();
}

// Full fp32 pipeline state for the fixture, shared by several cases.
struct Fp32Run {
  std::map<std::string, torch::Tensor> g = load_golden();
  m::Llava model = m::load_llava(llava_dir());
};

}  // namespace

// ---- Pillow resize, centre crop ----------------------------------------------------------

TEST_CASE("pil_resize reproduces Pillow 9.4 Image.resize for every filter, up and down, RGB and L") {
  const fs::path dir = fixtures_dir() / "pil-resize";
  std::ifstream cases(dir / "cases.txt");
  REQUIRE(cases.good());
  std::string line;
  int n = 0, exact = 0;
  while (std::getline(cases, line)) {
    if (line.empty()) continue;
    std::istringstream ss(line);
    std::string src_name, out_name;
    int code = 0, w = 0, h = 0;
    ss >> src_name >> code >> w >> h >> out_name;
    cv::Mat src = cv::imread((dir / src_name).string(), cv::IMREAD_UNCHANGED);
    cv::Mat want = cv::imread((dir / out_name).string(), cv::IMREAD_UNCHANGED);
    REQUIRE(!src.empty());
    REQUIRE(!want.empty());
    cv::Mat got = lli::pil_resize(src, w, h, lli::pil_resample_from_code(code, "test"));
    REQUIRE(got.size() == want.size());
    REQUIRE(got.type() == want.type());
    cv::Mat diff;
    cv::absdiff(got, want, diff);
    double mx = 0;
    cv::minMaxLoc(diff.reshape(1), nullptr, &mx);
    INFO(line << " max diff " << mx);
    CHECK(mx == 0);
    ++n;
    exact += mx == 0;
  }
  MESSAGE("pil_resize: " << exact << "/" << n << " cases bit-exact vs Pillow");
  CHECK(n >= 100);
}

TEST_CASE("pil_resize rejects bad sizes and resample codes") {
  cv::Mat img(4, 4, CV_8UC3, cv::Scalar(1, 2, 3));
  CHECK_THROWS_AS(lli::pil_resize(img, 0, 3, lli::PilResample::bicubic), lli::InputError);
  CHECK(has(error_of<lli::ModelError>([] { lli::pil_resample_from_code(7, "preprocessor_config.json: resample"); }),
            "preprocessor_config.json: resample: unknown PIL resample code 7"));
  cv::Mat same = lli::pil_resize(img, 4, 4, lli::PilResample::lanczos);
  CHECK(cv::norm(same, img, cv::NORM_INF) == 0);
}

TEST_CASE("center_crop uses floor offsets and zero-pads centred like transformers") {
  cv::Mat img(5, 7, CV_8UC1);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 7; ++x) img.at<std::uint8_t>(y, x) = static_cast<std::uint8_t>(10 * y + x + 1);
  cv::Mat c = lli::center_crop(img, 2, 4);  // top = 3 // 2 = 1, left = 3 // 2 = 1
  CHECK(c.rows == 2);
  CHECK(c.cols == 4);
  CHECK(c.at<std::uint8_t>(0, 0) == 12);
  CHECK(c.at<std::uint8_t>(1, 3) == 25);
  // Crop larger than the image: 5 -> 8 rows: pad ceil(3/2) = 2 above; 7 -> 6 cols: left = 1 // 2 = 0.
  cv::Mat p = lli::center_crop(img, 8, 6);
  CHECK(p.rows == 8);
  CHECK(p.cols == 6);
  CHECK(p.at<std::uint8_t>(0, 0) == 0);
  CHECK(p.at<std::uint8_t>(1, 5) == 0);
  CHECK(p.at<std::uint8_t>(2, 0) == 1);
  CHECK(p.at<std::uint8_t>(6, 5) == 46);
  CHECK(p.at<std::uint8_t>(7, 0) == 0);
}

TEST_CASE("shortest_edge_size and expand_to_square follow transformers and LLaVA-1.5") {
  CHECK(m::shortest_edge_size(43, 57, 32) == std::make_pair(32, 42));   // int(32 * 57 / 43) = 42
  CHECK(m::shortest_edge_size(57, 43, 32) == std::make_pair(42, 32));
  CHECK(m::shortest_edge_size(480, 640, 336) == std::make_pair(336, 448));
  CHECK(m::shortest_edge_size(333, 500, 224) == std::make_pair(224, 336));  // 336.336... -> 336
  cv::Mat img(2, 4, CV_8UC3, cv::Scalar(9, 9, 9));
  cv::Mat sq = m::expand_to_square(img, {0.48145466, 0.4578275, 0.40821073});
  REQUIRE(sq.rows == 4);
  REQUIRE(sq.cols == 4);
  CHECK(sq.at<cv::Vec3b>(0, 0) == cv::Vec3b(122, 116, 104));  // int(m * 255)
  CHECK(sq.at<cv::Vec3b>(1, 0) == cv::Vec3b(9, 9, 9));        // pasted at (4 - 2) // 2 = 1
  CHECK(sq.at<cv::Vec3b>(3, 3) == cv::Vec3b(122, 116, 104));
  CHECK(m::parse_image_aspect("pad") == m::ImageAspect::pad_square);
  CHECK_THROWS_AS(m::parse_image_aspect("stretch"), lli::UsageError);
}

// ---- configs ------------------------------------------------------------------------------

TEST_CASE("LlavaConfig takes transformers' defaults for absent keys") {
  auto c = m::parse_llava_config(nlohmann::json::object(), "config.json");
  // vision_config absent: LlavaConfig's CLIP ViT-L/14-336.
  CHECK(c.vision.hidden_size == 1024);
  CHECK(c.vision.intermediate_size == 4096);
  CHECK(c.vision.num_hidden_layers == 24);
  CHECK(c.vision.num_attention_heads == 16);
  CHECK(c.vision.patch_size == 14);
  CHECK(c.vision.image_size == 336);
  CHECK(c.vision.hidden_act == lli::nn::Activation::quick_gelu);
  // text_config absent: LlamaConfig() = LLaMA-7B.
  CHECK(c.text.vocab_size == 32000);
  CHECK(c.text.hidden_size == 4096);
  CHECK(c.text.intermediate_size == 11008);
  CHECK(c.text.num_hidden_layers == 32);
  CHECK(c.text.num_attention_heads == 32);
  CHECK(c.text.num_key_value_heads == 32);
  CHECK(c.text.head_dim == 128);
  CHECK(c.text.rms_norm_eps == doctest::Approx(1e-6));
  CHECK(c.text.max_position_embeddings == 2048);
  CHECK(c.text.rope_theta == 10000.0);
  CHECK(c.text.rope_type == m::RopeType::none);
  CHECK(!c.text.tie_word_embeddings);
  CHECK(!c.text.attention_bias);
  CHECK(c.text.hidden_act == lli::nn::Activation::silu);
  CHECK(c.image_token_index == 32000);
  CHECK(c.projector_hidden_act == lli::nn::Activation::gelu);
  CHECK(c.select_strategy == m::VisionSelect::drop_cls);
  CHECK(c.vision_feature_layers == std::vector<std::int64_t>{-2});
  CHECK(c.feature_layer_indices() == std::vector<std::int64_t>{23});
  CHECK(c.tokens_per_image() == 576);

  // A present vision_config starts from CLIPVisionConfig() (ViT-B/32).
  auto j = nlohmann::json::parse(R"({"vision_config": {"hidden_size": 96},
      "text_config": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                      "rope_scaling": {"type": "linear", "factor": 2.0}, "attention_bias": true,
                      "tie_word_embeddings": true},
      "vision_feature_select_strategy": "full", "vision_feature_layer": -1})");
  auto d = m::parse_llava_config(j, "config.json");
  CHECK(d.vision.patch_size == 32);
  CHECK(d.vision.image_size == 224);
  CHECK(d.vision.num_hidden_layers == 12);
  CHECK(d.vision.intermediate_size == 3072);
  CHECK(d.text.head_dim == 16);
  CHECK(d.text.num_key_value_heads == 2);
  CHECK(d.text.rope_type == m::RopeType::linear);
  CHECK(d.text.rope_factor == 2.0);
  CHECK(d.text.attention_bias);
  CHECK(d.text.tie_word_embeddings);
  CHECK(d.tokens_per_image() == 50);
  CHECK(d.feature_layer_indices() == std::vector<std::int64_t>{12});
}

TEST_CASE("LlavaConfig rejects invalid values with the JSON path") {
  auto bad = [](const char* text) {
    return error_of<lli::ModelError>([&] { m::parse_llava_config(nlohmann::json::parse(text), "config.json"); });
  };
  CHECK(has(bad(R"({"vision_feature_select_strategy": "cls"})"), "config.json: vision_feature_select_strategy"));
  CHECK(has(bad(R"({"vision_feature_layer": -30})"), "config.json: vision_feature_layer: layer -30 is out of range"));
  CHECK(has(bad(R"({"text_config": {"num_key_value_heads": 5}})"), "config.json: text_config.num_key_value_heads"));
  CHECK(has(bad(R"({"text_config": {"hidden_size": "big"}})"), "config.json: text_config.hidden_size: expected an integer"));
  CHECK(has(bad(R"({"text_config": {"rope_scaling": {"type": "yarn", "factor": 4}}})"), "unsupported rope scaling \"yarn\""));
  CHECK(has(bad(R"({"projector_hidden_act": "tanh"})"), "config.json: projector_hidden_act: unsupported activation"));
  CHECK(has(bad(R"({"text_config": {"model_type": "mistral"}})"), "text_config.model_type"));
  TempDir tmp;
  CHECK(has(error_of<lli::ModelError>([&] { m::load_llava(tmp.path); }), "config.json: cannot open"));
}

TEST_CASE("image processor config: image_mean / image_std as 3 numbers or one, bad values named") {
  auto parse = [](const char* text) {
    auto j = nlohmann::json::parse(text);
    return m::parse_image_processor_config(m::ConfigReader(j, "preprocessor_config.json"));
  };
  auto c = parse(R"({"image_mean": [0.5, 0.25, 0.125], "image_std": 0.5})");
  CHECK((c.image_mean == std::vector<double>{0.5, 0.25, 0.125}));
  CHECK((c.image_std == std::vector<double>{0.5, 0.5, 0.5}));
  CHECK((parse("{}").image_mean == m::ImageProcessorConfig{}.image_mean));  // absent: CLIP's defaults
  auto bad = [&](const char* text) { return error_of<lli::ModelError>([&] { parse(text); }); };
  CHECK(has(bad(R"({"image_mean": [0.5, 0.5]})"), "preprocessor_config.json: image_mean: expected 3 numbers"));
  CHECK(has(bad(R"({"image_std": [0.5, "x", 0.5]})"), "preprocessor_config.json: image_std: expected 3 numbers"));
  CHECK(has(bad(R"({"image_std": "wide"})"), "image_std: expected 3 numbers, got \"wide\""));
}

// ---- attention building blocks --------------------------------------------------------------

TEST_CASE("attention: grouped-query heads equal repeated key/value heads, and causal offset") {
  torch::manual_seed(0);
  auto q = torch::randn({1, 4, 5, 8});
  auto k = torch::randn({1, 2, 7, 8});
  auto v = torch::randn({1, 2, 7, 8});
  lli::nn::AttentionOptions o;
  o.scale_mode = lli::nn::AttentionScale::divide_scores;
  o.scale = std::sqrt(8.0);
  o.softmax_fp32 = true;
  o.causal = true;
  o.causal_offset = 2;
  auto got = lli::nn::attention(q, k, v, {}, o);
  auto kr = k.repeat_interleave(2, 1), vr = v.repeat_interleave(2, 1);
  auto scores = torch::matmul(q, kr.transpose(-2, -1)) / std::sqrt(8.0);
  auto mask = torch::ones({5, 7}, torch::kBool).triu(1 + 2);
  auto want = torch::matmul(torch::softmax(scores.masked_fill(mask, -INFINITY), -1), vr);
  CHECK(max_abs_diff(got, want) < 1e-6);
}

// ---- llava-tiny-a parity (fp32) -------------------------------------------------------------

TEST_CASE("llava-tiny-a: preprocessing of image.png matches CLIPImageProcessor") {
  auto g = load_golden();
  cv::Mat rgb = read_rgb(llava_dir() / "image.png");
  CHECK(max_abs_diff(mat_to_tensor(rgb), g.at("image_uint8")) == 0);
  auto pcfg = m::load_image_processor_config(llava_dir());
  CHECK(pcfg.resample == lli::PilResample::bicubic);
  auto px = m::pixel_values_from_rgb(rgb, pcfg, m::ImageAspect::resize_crop);
  double d = max_abs_diff(px, g.at("pixel_values"));
  MESSAGE("pixel_values max |diff| = " << d);
  CHECK(d <= 1e-6);
  // BGR entry point gives the same.
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  CHECK(max_abs_diff(m::pixel_values_from_bgr(bgr, pcfg, m::ImageAspect::resize_crop), px) == 0);
  // The pad-to-square variant makes a square crop of the same size from a different picture.
  auto pad = m::pixel_values_from_rgb(rgb, pcfg, m::ImageAspect::pad_square);
  CHECK(pad.sizes() == px.sizes());
  CHECK(max_abs_diff(pad, px) > 0.1);
}

TEST_CASE("llava-tiny-a fp32: vision tower, projector, merge, decoder and logits match transformers") {
  Fp32Run run;
  auto& g = run.g;
  auto& model = run.model;
  Recorder rec;
  auto feats = model->image_features(g.at("pixel_values"), rec.tap());

  // Every vision hidden state up to the selected layer (-2 of 3 layers: states 0..2).
  const auto& vh = g.at("vision_hidden_states");  // [n+1, T, Dv]
  const auto& states = rec.seen["vision.hidden_state"];
  const auto upto = model->cfg.feature_layer_indices()[0];
  REQUIRE(static_cast<std::int64_t>(states.size()) == upto + 1);
  double dv = 0;
  for (std::int64_t i = 0; i <= upto; ++i) dv = std::max(dv, max_abs_diff(states[static_cast<std::size_t>(i)][0], vh[i]));
  // The last layer too (computed on demand).
  auto all = model->vision_tower->hidden_states(g.at("pixel_values"));
  REQUIRE(static_cast<std::int64_t>(all.size()) == vh.size(0));
  for (std::int64_t i = 0; i < vh.size(0); ++i) dv = std::max(dv, max_abs_diff(all[static_cast<std::size_t>(i)][0], vh[i]));
  MESSAGE("vision_hidden_states (all " << vh.size(0) << ") max |diff| = " << dv);
  CHECK(dv < 2e-5);

  double d_layer = max_abs_diff(rec.seen["vision.selected_layer"].at(0), g.at("vision_selected_layer"));
  double d_sel = max_abs_diff(rec.seen["vision.selected_features"].at(0), g.at("vision_selected_features"));
  double d_ph = max_abs_diff(rec.seen["projector.hidden"].at(0), g.at("projector_hidden"));
  double d_po = max_abs_diff(feats, g.at("projector_output"));
  MESSAGE("vision_selected_layer " << d_layer << ", vision_selected_features " << d_sel << ", projector_hidden "
                                   << d_ph << ", projector_output " << d_po);
  CHECK(d_layer < 2e-5);
  CHECK(d_sel < 2e-5);
  CHECK(d_ph < 2e-5);
  CHECK(d_po < 2e-5);

  auto emb = model->embed_inputs(g.at("input_ids"), feats);
  double d_emb = max_abs_diff(emb, g.at("inputs_embeds"));
  MESSAGE("inputs_embeds max |diff| = " << d_emb);
  CHECK(d_emb < 2e-5);

  Recorder trec;
  auto logits = model->logits(emb, nullptr, false, trec.tap());
  const auto& th = g.at("text_hidden_states");  // [n+1, L, Dt]
  const auto& ts = trec.seen["text.hidden_state"];
  REQUIRE(static_cast<std::int64_t>(ts.size()) == th.size(0));
  double dt = 0;
  for (std::int64_t i = 0; i < th.size(0); ++i) dt = std::max(dt, max_abs_diff(ts[static_cast<std::size_t>(i)][0], th[i]));
  MESSAGE("text_hidden_states max |diff| = " << dt);
  CHECK(dt < 2e-5);
  double dl = max_abs_diff(logits, g.at("logits"));
  MESSAGE("logits max |diff| = " << dl);
  CHECK(dl < 3e-5);

  // The whole path from image.png (our preprocessing) gives the same logits.
  auto px = m::pixel_values_from_rgb(read_rgb(llava_dir() / "image.png"), m::load_image_processor_config(llava_dir()),
                                     m::ImageAspect::resize_crop);
  auto logits2 = model->logits(model->embed_inputs(g.at("input_ids"), model->image_features(px)));
  double dl2 = max_abs_diff(logits2, g.at("logits"));
  MESSAGE("logits from image.png max |diff| = " << dl2);
  CHECK(dl2 < 3e-5);
}

TEST_CASE("llava-tiny-a: image token count mismatch and out-of-vocabulary ids are clear errors") {
  Fp32Run run;
  auto feats = run.model->image_features(run.g.at("pixel_values"));
  auto unexpanded = run.g.at("input_ids_prompt");  // one <image> token, 16 features
  auto msg = error_of<lli::InputError>([&] { run.model->embed_inputs(unexpanded, feats); });
  CHECK(has(msg, "the prompt has 1 image tokens (id 32000) but there are 16 image features"));
  auto expanded = m::expand_image_tokens(unexpanded, 32000, run.model->cfg.tokens_per_image());
  CHECK(max_abs_diff(expanded, run.g.at("input_ids")) == 0);
  CHECK(has(error_of<lli::InputError>([&] { run.model->embed_inputs(run.g.at("input_ids"), torch::Tensor()); }),
            "(no image)"));
  auto oov = torch::tensor({{1, 40000}}, torch::kInt64);
  CHECK(has(error_of<lli::InputError>([&] { run.model->embed_inputs(oov, torch::Tensor()); }), "outside the vocabulary"));
}

TEST_CASE("llava-tiny-a: KV-cache prefill + single steps equal the full forward, and greedy ids match") {
  Fp32Run run;
  auto& g = run.g;
  auto& model = run.model;
  auto emb = model->embed_inputs(g.at("input_ids"), model->image_features(g.at("pixel_values")));
  const auto L = emb.size(1);
  auto full = model->logits(emb);  // [1, L, V]

  // Prefill all but the last 6 positions in one call, then one position at a time.
  auto cache = model->make_cache(L + 20);
  const auto split = L - 6;
  auto pre = model->logits(emb.narrow(1, 0, split), &cache);
  CHECK(cache.n_past == split);
  double d = max_abs_diff(pre, full.narrow(1, 0, split));
  for (auto i = split; i < L; ++i) {
    auto step = model->logits(emb.narrow(1, i, 1), &cache, /*last_only=*/true);
    d = std::max(d, max_abs_diff(step, full.narrow(1, i, 1)));
  }
  CHECK(cache.n_past == L);
  MESSAGE("KV-cache step logits vs full forward max |diff| = " << d);
  CHECK(d < 1e-5);

  // Chunked prefill (2 chunks) + truncate/replay.
  cache.truncate(10);
  auto rest = model->logits(emb.narrow(1, 10, L - 10), &cache);
  CHECK(max_abs_diff(rest, full.narrow(1, 10, L - 10)) < 1e-5);
  CHECK_THROWS_AS(model->logits(emb, &cache), lli::RuntimeError);  // L + L > L + 20

  // Greedy decoding with the cache: 16 tokens identical to transformers' generate().
  cache.clear();
  auto ids = m::generate_greedy(*model, emb, cache, 16);
  auto want = g.at("generated_ids").reshape({-1});
  REQUIRE(static_cast<std::int64_t>(ids.size()) == want.size(0));
  int same = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) same += ids[i] == want[static_cast<std::int64_t>(i)].item<std::int64_t>();
  MESSAGE("greedy fp32: " << same << "/16 tokens equal generated_ids");
  CHECK(same == 16);
  CHECK(cache.n_past == L + 15);

  // Top-5 logits of each step (from full forwards over the generated sequence).
  auto seq = g.at("generated_sequence");
  auto seq_logits = model->logits(model->embed_inputs(seq, model->image_features(g.at("pixel_values"))));
  auto steps = seq_logits[0].narrow(0, L - 1, 16);  // [16, V]
  auto top = steps.topk(5, -1);
  CHECK(max_abs_diff(std::get<1>(top), g.at("generation_top5_ids")) == 0);
  double dtop = max_abs_diff(std::get<0>(top), g.at("generation_top5_logits"));
  MESSAGE("generation top-5 logits max |diff| = " << dtop);
  CHECK(dtop < 3e-5);

  // Stop ids end generation after the stop token.
  cache.clear();
  auto stopped = m::generate_greedy(*model, emb, cache, 16, {want[2].item<std::int64_t>()});
  CHECK(stopped.size() == 3);
}

TEST_CASE("llava-tiny-a bf16: logits drift and greedy agreement vs fp32 (reported)") {
  auto g = load_golden();
  m::LlavaLoadOptions o;
  o.dtype = torch::kBFloat16;
  auto model = m::load_llava(llava_dir(), o);
  CHECK((model->dtype() == torch::kBFloat16));
  auto emb = model->embed_inputs(g.at("input_ids"), model->image_features(g.at("pixel_values")));
  CHECK((emb.scalar_type() == torch::kBFloat16));
  auto logits = model->logits(emb);
  CHECK((logits.scalar_type() == torch::kFloat32));
  CHECK(torch::isfinite(logits).all().item<bool>());
  double d = max_abs_diff(logits, g.at("logits"));
  double scale = g.at("logits").abs().max().item<double>();
  auto cache = model->make_cache(emb.size(1) + 16);
  auto ids = m::generate_greedy(*model, emb, cache, 16);
  auto want = g.at("generated_ids").reshape({-1});
  int same = 0, prefix = 0;
  bool still = true;
  for (std::size_t i = 0; i < ids.size() && i < 16; ++i) {
    bool eq = ids[i] == want[static_cast<std::int64_t>(i)].item<std::int64_t>();
    same += eq;
    still = still && eq;
    prefix += still;
  }
  MESSAGE("bf16: logits max |diff| vs fp32 golden = " << d << " (max |logit| " << scale << "); greedy " << same
                                                      << "/16 tokens equal, first " << prefix << " in a row");
  CHECK(d < 0.25 * scale + 1.0);  // sanity only: a broken bf16 path is far off
}

TEST_CASE("llava loader: tied word embeddings, position_ids buffer, strict key errors") {
  auto g = load_golden();
  TempDir tmp;
  auto cfg_json = m::read_json_file(llava_dir() / "config.json");
  auto tensors = lli::load_tensors(lli::st::Checkpoint::open(llava_dir()));

  // Tied: only embed_tokens stored -> logits use embed_tokens as the output matrix.
  cfg_json["text_config"]["tie_word_embeddings"] = true;
  {
    std::ofstream(tmp / "config.json") << cfg_json.dump(2);
  }
  auto tied = tensors;
  tied.erase("language_model.lm_head.weight");
  tied["vision_tower.vision_model.embeddings.position_ids"] = torch::arange(17, torch::kInt64).unsqueeze(0);
  lli::save_tensors(tmp / "model.safetensors", tied);
  auto model = m::load_llava(tmp.path);
  CHECK(!model->language_model->lm_head);
  Recorder rec;
  auto emb = model->embed_inputs(g.at("input_ids"), model->image_features(g.at("pixel_values")));
  auto logits = model->logits(emb, nullptr, false, rec.tap());
  auto h = rec.seen["text.hidden_state"].back();
  auto want = torch::matmul(h, model->language_model->model->embed_tokens->weight.t());
  CHECK(max_abs_diff(logits, want) < 1e-4);

  // Tied with only lm_head stored (what save_pretrained may keep instead).
  auto tied2 = tensors;
  tied2["language_model.lm_head.weight"] = tensors.at("language_model.model.embed_tokens.weight");
  tied2.erase("language_model.model.embed_tokens.weight");
  lli::save_tensors(tmp / "model.safetensors", tied2);
  auto model2 = m::load_llava(tmp.path);
  CHECK(max_abs_diff(model2->language_model->model->embed_tokens->weight,
                     model->language_model->model->embed_tokens->weight) == 0);

  // text_config untied, no lm_head stored, top-level tie_word_embeddings absent (= true): tied.
  cfg_json["text_config"].erase("tie_word_embeddings");
  cfg_json.erase("tie_word_embeddings");
  {
    std::ofstream(tmp / "config.json") << cfg_json.dump(2);
  }
  lli::save_tensors(tmp / "model.safetensors", tied);
  auto model3 = m::load_llava(tmp.path);
  CHECK(!model3->language_model->lm_head);

  // Untied everywhere but lm_head missing: a ModelError naming the key.
  cfg_json["tie_word_embeddings"] = false;
  {
    std::ofstream(tmp / "config.json") << cfg_json.dump(2);
  }
  CHECK(has(error_of<lli::ModelError>([&] { m::load_llava(tmp.path); }), "language_model.lm_head.weight"));
}

TEST_CASE("llama: linear rope scaling divides positions by the factor, and GQA model runs with a cache") {
  // A small random LLaMA with 4 query heads over 2 kv heads, attention bias and linear rope.
  auto j = nlohmann::json::parse(R"({"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "attention_bias": true,
      "rope_scaling": {"rope_type": "linear", "factor": 4.0}})");
  auto cfg = m::parse_llama_config(m::ConfigReader(j, "config.json", "text_config"));
  m::LlamaForCausalLM lm(cfg);
  torch::manual_seed(1);
  for (auto& p : lm->named_parameters()) p.value().set_data(torch::randn(p.value().sizes()) * 0.2);
  auto [c4, s4] = lm->rotary(8, 3, torch::kFloat32, torch::kCPU);
  auto cfg1 = cfg;
  cfg1.rope_type = m::RopeType::none;
  m::LlamaForCausalLM lm1(cfg1);
  auto [c1, s1] = lm1->rotary(0, 12, torch::kFloat32, torch::kCPU);
  // positions 8, 9, 10 with factor 4 = positions 2, 2.25, 2.5 unscaled: position 8 -> 2 exactly.
  CHECK(max_abs_diff(c4[0], c1[2]) < 1e-6);
  CHECK(max_abs_diff(s4[0], s1[2]) < 1e-6);

  auto ids = torch::tensor({{1, 5, 7, 9, 11, 13}}, torch::kInt64);
  auto emb = lm->embed(ids);
  auto full = lm->forward(emb);
  auto cache = lm->make_cache(8);
  CHECK(cache.k[0].sizes() == torch::IntArrayRef({1, 2, 8, 8}));
  auto a = lm->forward(emb.narrow(1, 0, 4), &cache);
  auto b = lm->forward(emb.narrow(1, 4, 1), &cache, true);
  auto c = lm->forward(emb.narrow(1, 5, 1), &cache, true);
  CHECK(max_abs_diff(a, full.narrow(1, 0, 4)) < 1e-5);
  CHECK(max_abs_diff(b, full.narrow(1, 4, 1)) < 1e-5);
  CHECK(max_abs_diff(c, full.narrow(1, 5, 1)) < 1e-5);
}

TEST_CASE("llava --weights copy: the same logits as mmap, bit for bit (fp16 checkpoint read as f32 and bf16)") {
  auto g = load_golden();
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    CAPTURE(c10::toString(dtype));
    m::LlavaLoadOptions a, b;
    a.dtype = b.dtype = dtype;
    b.weights = lli::st::Residency::copy;
    std::uint64_t done = 0, total = 0;
    b.progress = [&](std::uint64_t d, std::uint64_t t) {
      done = d;
      total = t;
    };
    auto ma = m::load_llava(llava_dir(), a);
    auto mb = m::load_llava(llava_dir(), b);
    CHECK(done > 0);
    CHECK(total >= done);
    // Every parameter: same dtype and values; the copy lives outside the mapped files.
    auto pa = ma->named_parameters(true), pb = mb->named_parameters(true);
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(pa[i].key() == pb[i].key());
      CHECK((pa[i].value().scalar_type() == dtype));
      CHECK((pb[i].value().scalar_type() == dtype));
      CHECK(torch::equal(pa[i].value(), pb[i].value()));
    }
    auto run = [&](m::LlavaImpl& model) {
      return model.logits(model.embed_inputs(g.at("input_ids"), model.image_features(g.at("pixel_values"))));
    };
    CHECK(torch::equal(run(*ma), run(*mb)));
  }
}
