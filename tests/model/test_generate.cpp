// GLIGEN generation pipeline parity with gligen-gen-tiny-a (diffusers 0.31 StableDiffusionGLIGENPipeline,
// fp32 CPU): every stage of the stored run (text embeddings, phrase features, grounding tokens, each
// UNet call's input and raw output, latents after each scheduler step, the decoded image), from the
// seed and from the stored initial latent; plus request validation.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "lli/error.h"
#include "model_test_util.h"
#include "pipelines/generate.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace p = lli::pipelines;
using lli::test::fixtures_dir;
using lli::test::max_abs_diff;

fs::path gen_dir() { return fixtures_dir() / "gligen-gen-tiny-a"; }

nlohmann::json load_case() {
  std::ifstream in(gen_dir() / "case.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// The request of the fixture's pipeline call.
p::GenerateRequest fixture_request(const nlohmann::json& c) {
  const auto& call = c["pipeline_call"];
  p::GenerateRequest r;
  r.prompt = call["prompt"].get<std::string>();
  if (!call["negative_prompt"].is_null()) r.negative_prompt = call["negative_prompt"].get<std::string>();
  const auto& phrases = call["gligen_phrases"];
  const auto& boxes = call["gligen_boxes"];
  for (std::size_t i = 0; i < phrases.size(); ++i)
    r.boxes.push_back({boxes[i][0].get<double>(), boxes[i][1].get<double>(), boxes[i][2].get<double>(),
                       boxes[i][3].get<double>(), phrases[i].get<std::string>()});
  r.steps = call["num_inference_steps"].get<std::int64_t>();
  r.guidance = call["guidance_scale"].get<double>();
  r.beta = call["gligen_scheduled_sampling_beta"].get<double>();
  r.width = call["width"].get<std::int64_t>();
  r.height = call["height"].get<std::int64_t>();
  r.num_images = call["num_images_per_prompt"].get<std::int64_t>();
  r.seed = 42;  // "torch.Generator().manual_seed(42)"
  return r;
}

p::GenerateOptions f32() {
  p::GenerateOptions o;
  o.dtype = lli::DTypeChoice::f32;
  return o;
}

// Checks a tapped tensor against a golden within atol + rtol * |golden|, printing the max difference.
void check_close(const std::string& what, const torch::Tensor& got, const torch::Tensor& want, double atol, double rtol) {
  REQUIRE_MESSAGE(got.defined(), what << " was not tapped");
  auto g = got.to(torch::kCPU, torch::kFloat64).reshape(want.sizes());
  auto w = want.to(torch::kFloat64);
  const double diff = max_abs_diff(g, w);
  const double excess = ((g - w).abs() - (atol + rtol * w.abs())).max().item<double>();
  MESSAGE(what << ": max |diff| " << diff);
  CHECK_MESSAGE(excess <= 0, what << " exceeds atol " << atol << " rtol " << rtol << " (max |diff| " << diff << ")");
}

struct Run {
  std::map<std::string, std::vector<torch::Tensor>> seen;
  p::GenerateResult result;
};

Run run_with_tap(p::GLIGENGenerator& gen, p::GenerateRequest req) {
  Run run;
  req.tap = [&](const std::string& name, std::int64_t i, const at::Tensor& t) {
    auto& v = run.seen[name];
    if (i < 0) i = static_cast<std::int64_t>(v.size());
    if (static_cast<std::int64_t>(v.size()) <= i) v.resize(static_cast<std::size_t>(i + 1));
    v[static_cast<std::size_t>(i)] = t.detach().to(torch::kCPU).clone();
  };
  run.result = gen.generate(req);
  return run;
}

torch::Tensor stacked(const std::vector<torch::Tensor>& v) { return torch::stack(v); }

}  // namespace

TEST_CASE("generate: gligen-gen-tiny-a pipeline from the seed matches diffusers stage by stage") {
  const auto c = load_case();
  auto golden = lli::test::load_golden(gen_dir() / "golden.safetensors");
  p::GLIGENGenerator gen(gen_dir(), f32());
  CHECK(gen.grounded());
  CHECK(gen.vae_scale_factor() == c["derived"]["vae_scale_factor"].get<std::int64_t>());
  Run run = run_with_tap(gen, fixture_request(c));

  // The seeded draw equals torch.Generator().manual_seed(42) (exactly).
  CHECK(max_abs_diff(run.seen["init_noise"][0], golden["pipe_init_noise"]) == 0);
  check_close("prompt_embeds", run.seen["prompt_embeds"][0], golden["prompt_embeds"], 1e-5, 1e-5);
  check_close("negative_prompt_embeds", run.seen["negative_prompt_embeds"][0], golden["negative_prompt_embeds"], 1e-5, 1e-5);
  check_close("phrase_pooled", run.seen["phrase_pooled"][0], golden["phrase_pooled"], 1e-5, 1e-5);
  check_close("posnet_objs", run.seen["posnet_objs"][0], golden["posnet_objs"], 1e-5, 1e-5);

  // Timesteps (PNDM repeats one) and scheduled sampling.
  auto ts = golden["pipe_timesteps"];
  REQUIRE(run.result.timesteps.size() == static_cast<std::size_t>(ts.numel()));
  for (std::int64_t i = 0; i < ts.numel(); ++i)
    CHECK(run.result.timesteps[static_cast<std::size_t>(i)] == static_cast<double>(ts[i].item<std::int64_t>()));
  CHECK(run.result.grounding_calls == c["derived"]["num_grounding_steps"].get<int>());
  CHECK(run.result.timings.unet_calls == c["derived"]["num_timesteps"].get<int>());

  check_close("pipe_unet_sample_in", stacked(run.seen["unet_sample_in"]), golden["pipe_unet_sample_in"], 1e-4, 1e-4);
  check_close("pipe_noise_pred_raw", stacked(run.seen["noise_pred_raw"]), golden["pipe_noise_pred_raw"], 1e-4, 1e-4);
  check_close("pipe_latents_after_step", stacked(run.seen["latents_after_step"]), golden["pipe_latents_after_step"], 1e-4, 1e-4);
  check_close("pipe_image", run.seen["image"][0], golden["pipe_image"], 1e-4, 0);

  // The 8-bit image (BGR here, RGB in the golden): max |diff| <= 1.
  REQUIRE(run.result.images.size() == 1);
  const cv::Mat& bgr = run.result.images[0];
  auto u8 = golden["pipe_image_u8"][0];  // [H, W, 3] RGB
  int worst = 0;
  for (int y = 0; y < bgr.rows; ++y)
    for (int x = 0; x < bgr.cols; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        const int want = u8[y][x][2 - ch].item<std::uint8_t>();
        worst = std::max(worst, std::abs(static_cast<int>(bgr.at<cv::Vec3b>(y, x)[ch]) - want));
      }
  MESSAGE("pipe_image_u8: max |diff| " << worst);
  CHECK(worst <= 1);
}

TEST_CASE("generate: a run from the stored initial latent reproduces the stored latents") {
  const auto c = load_case();
  auto golden = lli::test::load_golden(gen_dir() / "golden.safetensors");
  p::GLIGENGenerator gen(gen_dir(), f32());
  auto req = fixture_request(c);
  req.seed = 12345;  // ignored: the initial noise is given
  auto noise = golden["pipe_init_noise"].contiguous();
  req.init_noise.assign(noise.data_ptr<float>(), noise.data_ptr<float>() + noise.numel());
  Run run = run_with_tap(gen, req);
  check_close("pipe_latents_after_step", stacked(run.seen["latents_after_step"]), golden["pipe_latents_after_step"], 1e-4, 1e-4);
}

TEST_CASE("generate: several images from one noise draw, no guidance, beta 0 and 1") {
  p::GLIGENGenerator gen(gen_dir(), f32());
  auto req = fixture_request(load_case());
  req.steps = 2;
  req.num_images = 2;
  Run two = run_with_tap(gen, req);
  REQUIRE(two.result.images.size() == 2);
  // Image 0 of a set equals the single image of the same seed only in its noise: the draw is one
  // [2, C, h, w] tensor whose first half is the single draw.
  req.num_images = 1;
  Run one = run_with_tap(gen, req);
  CHECK(max_abs_diff(two.seen["init_noise"][0][0], one.seen["init_noise"][0][0]) == 0);
  // (batch 4 vs 2 through the UNet: another GEMM blocking, fp32 rounding only)
  CHECK(max_abs_diff(two.seen["latents_after_step"].back()[0], one.seen["latents_after_step"].back()[0]) < 1e-4);

  req.guidance = 1.0;  // no CFG: the UNet batch is the images alone
  Run nocfg = run_with_tap(gen, req);
  CHECK(nocfg.seen["unet_sample_in"][0].size(0) == 1);
  CHECK(nocfg.seen.count("negative_prompt_embeds") == 0);

  req.guidance = 7.5;
  req.beta = 0.0;
  CHECK(run_with_tap(gen, req).result.grounding_calls == 0);
  req.beta = 1.0;
  CHECK(run_with_tap(gen, req).result.grounding_calls == static_cast<int>(one.result.timesteps.size()));
}

TEST_CASE("generate: request validation names the problem") {
  p::GLIGENGenerator gen(gen_dir(), f32());
  auto base = fixture_request(load_case());
  auto bad = [&](auto mutate, const std::string& needle) {
    auto r = base;
    mutate(r);
    const auto msg = lli::test::error_of<lli::UsageError>([&] { gen.validate(r); });
    CHECK_MESSAGE(lli::test::has(msg, needle), msg);
  };
  bad([](p::GenerateRequest& r) { r.width = 60; }, "multiples of the VAE factor");
  bad([](p::GenerateRequest& r) { r.steps = 0; }, "--steps");
  bad([](p::GenerateRequest& r) { r.beta = 1.5; }, "--beta");
  bad([](p::GenerateRequest& r) { r.scheduler = "heun"; }, "heun");
  bad([](p::GenerateRequest& r) { r.boxes[0].phrase.clear(); }, "phrase");
  bad([](p::GenerateRequest& r) { r.boxes.resize(31, r.boxes[0]); }, "at most 30");
  bad([](p::GenerateRequest& r) { r.boxes[1].x1 = 1.2; }, "not a box");
  bad([](p::GenerateRequest& r) { r.init_noise.assign(5, 0.f); }, "initial noise");
}

TEST_CASE("generate: gligen-inpaint-tiny-a inpainting run from the seeds matches diffusers") {
  const fs::path dir = fixtures_dir() / "gligen-inpaint-tiny-a";
  std::ifstream in(dir / "case.json");
  REQUIRE(in.good());
  const auto c = nlohmann::json::parse(in);
  auto golden = lli::test::load_golden(dir / "golden.safetensors");
  p::GLIGENGenerator gen(dir, f32());
  CHECK(gen.info().inpainting);
  auto req = fixture_request(c);
  req.seed = 43;        // generator=torch.Generator().manual_seed(43): the discarded 9-channel draw
  req.noise_seed = 1234;  // torch.manual_seed(1234) before the call: the global-RNG draws
  req.inpaint_image = cv::imread((dir / "inpaint_input.png").string(), cv::IMREAD_COLOR);
  REQUIRE(!req.inpaint_image.empty());
  Run run = run_with_tap(gen, req);

  CHECK(max_abs_diff(run.seen["init_noise"][0], golden["pipe_init_noise_9ch_unused"]) == 0);
  check_close("inpaint_image_tensor", run.seen["inpaint_image_tensor"][0], golden["inpaint_image_tensor"], 1e-6, 0);
  check_close("inpaint_latent_scaled", run.seen["inpaint_latent_scaled"][0], golden["inpaint_latent_scaled"], 1e-5, 1e-5);
  CHECK(max_abs_diff(run.seen["inpaint_mask"][0], golden["inpaint_mask"]) == 0);
  CHECK(max_abs_diff(run.seen["first_latent"][0], golden["pipe_init_latent_used"]) == 0);
  CHECK(max_abs_diff(stacked(run.seen["inpaint_step_noise"]), golden["inpaint_step_noise"]) == 0);
  check_close("posnet_objs", run.seen["posnet_objs"][0], golden["posnet_objs"], 1e-5, 1e-5);
  check_close("pipe_unet_sample_in", stacked(run.seen["unet_sample_in"]), golden["pipe_unet_sample_in"], 1e-4, 1e-4);
  check_close("pipe_noise_pred_raw", stacked(run.seen["noise_pred_raw"]), golden["pipe_noise_pred_raw"], 1e-4, 1e-4);
  check_close("pipe_latents_after_step", stacked(run.seen["latents_after_step"]), golden["pipe_latents_after_step"], 1e-4, 1e-4);
  check_close("pipe_image", run.seen["image"][0], golden["pipe_image"], 1e-4, 0);

  // The reference's centre crop + LANCZOS resize of a non-square input.
  cv::Mat pre = cv::imread((dir / "preproc_input.png").string(), cv::IMREAD_COLOR);
  REQUIRE(!pre.empty());
  req.inpaint_image = pre;
  req.steps = 1;
  Run run2 = run_with_tap(gen, req);
  auto want = golden["preproc_center_crop_resize_u8"].to(torch::kFloat32).permute({2, 0, 1}).unsqueeze(0) / 255.0 * 2 - 1;
  check_close("preproc_center_crop_resize", run2.seen["inpaint_image_tensor"][0], want, 1e-6, 0);

  // A generation checkpoint refuses an image to inpaint, and the inpainting one needs it.
  req.inpaint_image = cv::Mat();
  CHECK(lli::test::has(lli::test::error_of<lli::UsageError>([&] { gen.validate(req); }), "inpainting checkpoint"));
}
