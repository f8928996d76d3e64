// OWLv2 / OWL-ViT parity with the owlv2-tiny-a and owlvit-tiny-a goldens (transformers 4.45.1,
// fp32): processor outputs (pixel values, token ids), both towers, the detector's image grid, the
// class / box / objectness heads, logits and post-processed detections; the pipeline's cached
// features round trip; config checks.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/tensor_io.h"
#include "model_test_util.h"
#include "models/owl.h"
#include "models/owl_preprocess.h"
#include "pipelines/ground_owl.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
namespace p = lli::pipelines;
using lli::test::error_of;
using lli::test::fixtures_dir;
using lli::test::has;
using lli::test::max_abs_diff;
using lli::test::Recorder;
using lli::test::TempDir;

struct OwlCase {
  fs::path dir;
  std::map<std::string, torch::Tensor> g;
  nlohmann::json c;
  std::vector<std::string> queries;
  cv::Mat rgb;  // the golden's image_uint8

  explicit OwlCase(const std::string& name) : dir(fixtures_dir() / name) {
    g = lli::test::load_golden(dir / "golden.safetensors");
    c = m::read_json_file(dir / "case.json");
    queries = c["queries"].get<std::vector<std::string>>();
    auto img = g["image_uint8"].contiguous();
    rgb = cv::Mat(static_cast<int>(img.size(0)), static_cast<int>(img.size(1)), CV_8UC3, img.data_ptr()).clone();
  }
  cv::Mat bgr() const {
    cv::Mat out;
    cv::cvtColor(rgb, out, cv::COLOR_RGB2BGR);
    return out;
  }
};

torch::Tensor ids_tensor(const std::vector<std::vector<std::int64_t>>& rows) {
  auto t = torch::empty({static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows[0].size())}, torch::kInt64);
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < rows[i].size(); ++j) t[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(j)] = rows[i][j];
  return t;
}

void check_close(const char* what, const torch::Tensor& a, const torch::Tensor& b, double tol) {
  const double d = max_abs_diff(a, b);
  MESSAGE(std::string(what) << " max |diff| = " << d << " (tolerance " << tol << ")");
  CHECK(d <= tol);
}

void check_case(const std::string& name) {
  OwlCase k(name);
  auto& g = k.g;
  INFO(name);

  // Processor: pixel values and token ids.
  auto model = m::load_owl(k.dir);
  const auto& cfg = model->cfg;
  auto pc = m::load_owl_image_processor_config(k.dir, cfg.variant);
  REQUIRE(pc.output_side() == cfg.vision.image_size);
  auto px = m::owl_preprocess_rgb(k.rgb, pc);
  const auto S = cfg.vision.image_size;
  auto pixel_values = torch::from_blob(px.data(), {1, 3, S, S}, torch::kFloat32).clone();
  check_close("pixel_values", pixel_values, g["pixel_values"], 1e-6);

  p::OwlDetector det(k.dir, p::OwlOptions{{}, lli::DTypeChoice::f32});
  std::vector<std::vector<std::int64_t>> mask;
  auto ids = det.tokenize(k.queries, &mask);
  CHECK(max_abs_diff(ids_tensor(ids), g["input_ids"]) == 0);
  CHECK(max_abs_diff(ids_tensor(mask), g["attention_mask"]) == 0);

  // Vision tower and the detector's grid.
  Recorder rec;
  auto feats = model->image_features(g["pixel_values"], rec.tap());
  const auto& hs = rec.seen["vision.hidden_state"];
  REQUIRE(static_cast<std::int64_t>(hs.size()) == cfg.vision.num_hidden_layers + 1);
  for (std::size_t i = 0; i < hs.size(); ++i)
    check_close("vision_hidden_states[i]", hs[i], g["vision_hidden_states"][static_cast<std::int64_t>(i)], 2e-5);
  check_close("vision_post_layernorm", rec.seen["owl.post_layernorm"].at(0), g["vision_post_layernorm"], 2e-5);
  const auto N = cfg.num_boxes();
  check_close("image_embeds", feats, g["image_embeds"].reshape({1, N, -1}), 2e-5);

  // Text tower.
  Recorder trec;
  auto q = model->query_embeds(g["input_ids"], g["attention_mask"], trec.tap());
  check_close("text_last_hidden_state", trec.seen["text.last_hidden_state"].at(0), g["text_last_hidden_state"], 2e-5);
  check_close("text_features", trec.seen["owl.text_features"].at(0), g["text_features"], 2e-5);
  check_close("text_embeds", q, g["text_embeds"].squeeze(0), 2e-5);

  // Heads and logits.
  check_close("box_bias", model->box_bias(), g["box_bias"], 1e-6);
  auto h = model->heads(feats);
  check_close("class_embeds", h.class_embeds, g["class_embeds"], 2e-5);
  check_close("class_logit_shift", h.logit_shift, g["class_logit_shift"], 1e-5);
  check_close("class_logit_scale", h.logit_scale, g["class_logit_scale"], 1e-5);
  check_close("pred_boxes", h.pred_boxes, g["pred_boxes"], 2e-6);
  if (cfg.variant == m::OwlVariant::owlv2)
    check_close("objectness_logits", h.objectness, g["objectness_logits"], 1e-5);
  else
    CHECK(!h.objectness.defined());
  check_close("logits", m::OwlModelImpl::class_logits(h, q), g["logits"], 1e-5);

  // The pipeline end to end from the BGR image: post-processed detections.
  auto f = det.image_features(k.bgr());
  auto r = det.query(f, k.queries);
  REQUIRE(r.num_boxes == N);
  REQUIRE(r.num_phrases == static_cast<int>(k.queries.size()));
  auto logits = torch::from_blob(r.logits.data(), {1, N, r.num_phrases}, torch::kFloat32).clone();
  check_close("pipeline logits", logits, g["logits"], 1e-5);
  const double scale = m::owl_box_scale(cfg.variant, k.rgb.rows, k.rgb.cols)[0];
  auto check_dets = [&](const std::vector<p::OwlDetection>& dets, const std::string& key) {
    auto scores = g[key + ".scores"], labels = g[key + ".labels"], boxes = g[key + ".boxes"];
    REQUIRE(static_cast<std::int64_t>(dets.size()) == scores.size(0));
    auto s = torch::empty({scores.size(0)}), b = torch::empty({scores.size(0), 4});
    auto l = torch::empty({scores.size(0)}, torch::kInt64);
    for (std::size_t i = 0; i < dets.size(); ++i) {
      const auto j = static_cast<std::int64_t>(i);
      s[j] = dets[i].score;
      l[j] = dets[i].phrase;
      b[j][0] = dets[i].box.x0;
      b[j][1] = dets[i].box.y0;
      b[j][2] = dets[i].box.x1;
      b[j][3] = dets[i].box.y1;
    }
    check_close((key + ".scores").c_str(), s, scores, 3e-6);
    CHECK(max_abs_diff(l, labels) == 0);
    check_close((key + ".boxes").c_str(), b, boxes, 2e-6 * scale);
  };
  check_dets(p::owl_post_process(r, 0.0), "det_all");
  check_dets(p::owl_post_process(r, k.c["threshold_for_det_thr"].get<double>()), "det_thr");

  // Best box per phrase = the argmax of that phrase's logits (case.json self_checks).
  const auto& best = k.c["self_checks"]["per_query_best_box (argmax over boxes of logits[0,:,q])"];
  for (int qi = 0; qi < r.num_phrases; ++qi)
    CHECK(p::owl_best_for_phrase(r, qi).box_index == best[static_cast<std::size_t>(qi)]["best_box"].get<int>());

  // Cached features give the same answers; another model's features are refused.
  auto bytes = det.features_to_bytes(f);
  auto f2 = det.features_from_bytes(bytes, "cache.safetensors");
  auto r2 = det.query(f2, k.queries);
  CHECK(r2.logits == r.logits);
  CHECK(f2.image_width() == k.rgb.cols);
  CHECK(has(error_of<lli::InputError>([&] { det.features_from_bytes(bytes.substr(0, bytes.size() - 4), "cut.bin"); }),
            "cut.bin: not a usable OWL image features"));
}

}  // namespace

TEST_CASE("owl: owlv2-tiny-a processor, towers, heads, logits and detections match transformers") {
  check_case("owlv2-tiny-a");
}

TEST_CASE("owl: owlvit-tiny-a processor, towers, heads, logits and detections match transformers") {
  check_case("owlvit-tiny-a");
}

TEST_CASE("owl: a phrase's logits do not depend on the other phrases, and bf16 towers stay close") {
  OwlCase k("owlv2-tiny-a");
  p::OwlDetector det(k.dir, p::OwlOptions{{}, lli::DTypeChoice::f32});
  auto f = det.image_features(k.bgr());
  auto all = det.query(f, k.queries);
  for (int qi = 0; qi < all.num_phrases; ++qi) {
    auto one = det.query(f, {k.queries[static_cast<std::size_t>(qi)]});
    double d = 0;
    for (int b = 0; b < all.num_boxes; ++b) d = std::max(d, static_cast<double>(std::abs(one.logit(b, 0) - all.logit(b, qi))));
    CHECK(d <= 1e-5);
  }
  p::OwlDetector bf(k.dir, p::OwlOptions{{}, lli::DTypeChoice::bf16});
  auto rb = bf.query(bf.image_features(k.bgr()), k.queries);
  double d = 0;
  for (std::size_t i = 0; i < rb.logits.size(); ++i) d = std::max(d, static_cast<double>(std::abs(rb.logits[i] - all.logits[i])));
  MESSAGE("bf16 towers: logits max |diff| = " << d);
  CHECK(d <= 0.1);
  // The fingerprint covers the towers' dtype (a bf16-rounded weight): features cached by a bf16
  // run are recomputed by an fp32 one, which then gives the reference's numbers.
  CHECK(has(error_of<lli::InputError>([&] { det.features_from_bytes(bf.features_to_bytes(bf.image_features(k.bgr())), "x"); }),
            "another model"));
}

TEST_CASE("owl: instances per phrase are the labelled boxes above the threshold after NMS") {
  p::OwlQueryResult r;
  r.num_boxes = 4;
  r.num_phrases = 2;
  // box 0 and 1 overlap heavily (phrase 0), box 2 is apart (phrase 0), box 3 belongs to phrase 1.
  r.logits = {2.f, -5.f, 1.f, -5.f, 0.5f, -5.f, -5.f, 3.f};
  r.boxes = {{0, 0, 10, 10}, {1, 1, 10, 10}, {50, 50, 60, 60}, {0, 0, 10, 10}};
  auto inst = p::owl_instances_for_phrase(r, 0, 0.1, 0.5);
  REQUIRE(inst.size() == 2);
  CHECK(inst[0].box_index == 0);
  CHECK(inst[1].box_index == 2);
  CHECK(p::owl_instances_for_phrase(r, 0, 0.8, 0.5).size() == 1);  // sigmoid(1) = 0.73 and 0.62 below 0.8
  CHECK(p::owl_best_for_phrase(r, 1).box_index == 3);
  auto hf = p::owl_post_process(r, 0.0);
  REQUIRE(hf.size() == 4);
  CHECK(hf[3].phrase == 1);
}

TEST_CASE("owl: config checks name the file and key") {
  TempDir d;
  auto j = m::read_json_file(fixtures_dir() / "owlv2-tiny-a" / "config.json");
  auto bad = j;
  bad["model_type"] = "clip";
  CHECK(has(error_of<lli::ModelError>([&] { m::parse_owl_config(m::ConfigReader(bad, "config.json")); }), "config.json: model_type"));
  bad = j;
  bad["projection_dim"] = 32;
  CHECK(has(error_of<lli::ModelError>([&] { m::parse_owl_config(m::ConfigReader(bad, "config.json")); }), "differs from text_config.hidden_size"));
  auto c = m::parse_owl_config(m::ConfigReader(j, "config.json"));
  CHECK(c.vision.patch_size == 16);  // Owlv2VisionConfig's default (absent from the file)
  CHECK(c.text.max_position_embeddings == 16);
  CHECK(c.grid() == 6);
}
