// OWLv2 / OWL-ViT CPU benchmark (lli-segment --text's detector path through pipelines/ground_owl.h).
//
//   bench_owl make-random DIR --variant owlv2|owlvit --tokenizer FIXTURE_DIR [--seed S]
//       a random-weight checkpoint with google/owlv2-base-patch16-ensemble's (960 px, patch 16,
//       3,600 boxes) or google/owlvit-base-patch32's (768 px, patch 32, 576 boxes) shapes and
//       configs; the CLIP tokenizer files are copied from FIXTURE_DIR; for benchmarks only
//   bench_owl run DIR [--dtype f32|bf16] [--threads N] [--repeat R] [--image PHOTO]
//
// `run` measures: model load; image features of PHOTO (preprocessing, vision tower, heads: first
// call and the median of the next R); one phrase and three phrases against the cached features
// (text tower + logits; median of R); the features' serialisation round trip (the session
// cache). Output: one "name: value unit" line per metric.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "lli/device.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/tensor_io.h"
#include "models/owl.h"
#include "pipelines/ground_owl.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
namespace pl = lli::pipelines;
using namespace lli::bench;

nlohmann::json base_config(const std::string& variant) {
  const bool v2 = variant == "owlv2";
  nlohmann::json c = {{"architectures", {v2 ? "Owlv2ForObjectDetection" : "OwlViTForObjectDetection"}},
                      {"model_type", variant},
                      {"projection_dim", 512},
                      {"logit_scale_init_value", 2.6592},
                      {"text_config", {{"model_type", variant + "_text_model"}}},
                      {"vision_config",
                       {{"model_type", variant + "_vision_model"}, {"image_size", v2 ? 960 : 768}, {"patch_size", v2 ? 16 : 32}}},
                      {"torch_dtype", "float32"}};
  return c;
}

nlohmann::json preprocessor(const std::string& variant) {
  const nlohmann::json mean = {0.48145466, 0.4578275, 0.40821073}, stdv = {0.26862954, 0.26130258, 0.27577711};
  if (variant == "owlv2")
    return {{"do_normalize", true}, {"do_pad", true}, {"do_rescale", true}, {"do_resize", true},
            {"image_mean", mean}, {"image_std", stdv}, {"image_processor_type", "Owlv2ImageProcessor"},
            {"resample", 2}, {"rescale_factor", 1.0 / 255.0}, {"size", {{"height", 960}, {"width", 960}}}};
  return {{"do_center_crop", true}, {"do_normalize", true}, {"do_rescale", true}, {"do_resize", true},
          {"image_mean", mean}, {"image_std", stdv}, {"image_processor_type", "OwlViTImageProcessor"},
          {"resample", 3}, {"rescale_factor", 1.0 / 255.0}, {"size", {{"height", 768}, {"width", 768}}},
          {"crop_size", {{"height", 768}, {"width", 768}}}};
}

int make_random(const fs::path& dir, const std::string& variant, const fs::path& tokenizer, std::uint64_t seed) {
  if (variant != "owlv2" && variant != "owlvit") throw lli::UsageError("--variant owlv2 | owlvit");
  fs::create_directories(dir);
  auto cfg_json = base_config(variant);
  lli::write_file_atomic((dir / "config.json").string(), cfg_json.dump(2) + "\n");
  lli::write_file_atomic((dir / "preprocessor_config.json").string(), preprocessor(variant).dump(2) + "\n");
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(tokenizer / f, dir / f, fs::copy_options::overwrite_existing);
  auto cfg = m::parse_owl_config(m::ConfigReader(cfg_json, "config.json"));
  m::OwlModel model(cfg);
  auto gen = at::detail::createCPUGenerator(seed);
  lli::TensorMap tensors;
  std::int64_t n = 0;
  for (const auto& p : model->named_parameters(true)) {
    const auto& name = p.key();
    const auto last = name.substr(name.rfind('.') + 1);
    const bool norm = name.find("norm") != std::string::npos;
    torch::Tensor t = norm && last == "weight" ? torch::ones(p.value().sizes())
                      : last == "bias"         ? torch::zeros(p.value().sizes())
                                               : torch::randn(p.value().sizes(), gen) * 0.02;
    n += t.numel();
    tensors[name] = t.to(torch::kFloat32).contiguous();
  }
  lli::save_tensors(dir / "model.safetensors", tensors);
  std::printf("wrote %s: %s, %.1f M parameters\n", dir.string().c_str(), variant.c_str(), n / 1e6);
  return 0;
}

int run(const fs::path& dir, const std::string& dtype, int threads, int repeat, const std::string& image) {
  lli::configure_threads(threads);
  metric("threads", threads, "");
  pl::OwlOptions oo;
  oo.dtype = lli::parse_dtype(dtype);
  auto t0 = Clock::now();
  pl::OwlDetector det(dir, oo);
  metric("load_ms", ms_since(t0), "ms");
  std::printf("model: %s\n", det.describe().c_str());
  cv::Mat bgr = cv::imread(image, cv::IMREAD_COLOR);
  if (bgr.empty()) throw lli::InputError(image + ": cannot read");
  std::printf("image: %s %dx%d\n", image.c_str(), bgr.cols, bgr.rows);

  std::vector<double> total, pre, vis, heads;
  pl::OwlImageFeatures f;
  for (int i = 0; i <= repeat; ++i) {
    t0 = Clock::now();
    f = det.image_features(bgr);
    const double ms = ms_since(t0);
    if (i == 0) {
      metric("image_features_first_ms", ms, "ms");
      continue;
    }
    total.push_back(ms);
    pre.push_back(det.timings().preprocess_ms);
    vis.push_back(det.timings().vision_ms);
    heads.push_back(det.timings().heads_ms);
  }
  metric("image_features_median_ms", median(total), "ms");
  metric("preprocess_median_ms", median(pre), "ms");
  metric("vision_median_ms", median(vis), "ms");
  metric("heads_median_ms", median(heads), "ms");

  for (const std::vector<std::string>& phrases :
       {std::vector<std::string>{"a ball"}, std::vector<std::string>{"a ball", "the man on the left", "grass"}}) {
    std::vector<double> q, text;
    for (int i = 0; i <= repeat; ++i) {
      t0 = Clock::now();
      auto r = det.query(f, phrases);
      auto dets = pl::owl_post_process(r, 0.1);
      (void)dets;
      if (i == 0) continue;
      q.push_back(ms_since(t0));
      text.push_back(det.timings().text_ms);
    }
    const std::string k = "query_" + std::to_string(phrases.size()) + "_phrases";
    metric(k + "_median_ms", median(q), "ms");
    metric(k + "_text_median_ms", median(text), "ms");
  }
  t0 = Clock::now();
  auto bytes = det.features_to_bytes(f);
  auto f2 = det.features_from_bytes(bytes, "cache");
  metric("features_roundtrip_ms", ms_since(t0), "ms");
  metric("features_bytes", static_cast<double>(bytes.size()) / (1 << 20), "MiB");
  t0 = Clock::now();
  auto r = det.query(f2, {"a ball"});
  metric("second_phrase_cached_ms", ms_since(t0) + 0.0, "ms (query on deserialised features)");
  metric("peak_rss", peak_rss_mib(), "MiB");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"OWLv2 / OWL-ViT benchmark"};
  app.require_subcommand(1);
  std::string dir, variant = "owlv2", tokenizer, dtype = "f32", image;
  std::uint64_t seed = 0;
  int threads = 2, repeat = 3;
  auto* mk = app.add_subcommand("make-random", "random-weight checkpoint at the public shapes");
  mk->add_option("DIR", dir)->required();
  mk->add_option("--variant", variant);
  mk->add_option("--tokenizer", tokenizer, "a directory with the CLIP tokenizer files (e.g. tests/fixtures/owlv2-tiny-a)")
      ->required();
  mk->add_option("--seed", seed);
  auto* rn = app.add_subcommand("run", "measure");
  rn->add_option("DIR", dir)->required();
  rn->add_option("--dtype", dtype);
  rn->add_option("--threads", threads);
  rn->add_option("--repeat", repeat);
  rn->add_option("--image", image)->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*mk) return make_random(dir, variant, tokenizer, seed);
    return run(dir, dtype, threads, repeat, image);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_owl: %s\n", e.what());
    return 1;
  }
}
