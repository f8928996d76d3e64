// Text (+ layout boxes with phrases) -> image: Stable Diffusion 1.x with GLIGEN grounding, as
// diffusers' StableDiffusionGLIGENPipeline (and StableDiffusionPipeline for a UNet without the
// GLIGEN fuser / position net). Orchestration only: tokenizer (text/clip_tokenizer.h), text
// encoder (models/clip_text.h), UNet + position net (models/unet.h), VAE (models/vae.h) and
// schedulers (schedulers/scheduler.h) hold the math. Torch-free header (plain structs and cv::Mat).
//
// Checkpoint: a diffusers pipeline directory (model_index.json, unet/, vae/, text_encoder/,
// tokenizer/, scheduler/), e.g. masterful/gligen-1-4-generation-text-box or a plain SD-1.x repo.
//
// One call of generate(), in the reference's order:
//   1. prompt ids: tokenizer(prompt, padding max_length, truncation) -> text encoder (no attention
//      mask) -> last hidden state; with guidance > 1 the negative prompt ("" when absent) likewise,
//      padded to the same length; both repeated num_images times, batch [negative..., positive...].
//   2. timesteps: scheduler.set_timesteps(steps) (PNDM with skip_prk_steps repeats one timestep).
//   3. latents: randn([num_images, 4, H/f, W/f]) from torch's CPU generator seeded with `seed`, in
//      fp32 (bit-identical to torch.Generator().manual_seed(seed)), times init_noise_sigma; or the
//      given init_noise.
//   4. GLIGEN (boxes given and the UNet has a position net): phrases tokenized together padded to
//      the longest (truncated to model_max_length), pooled text features; boxes/features/masks
//      zero-padded to max_objs (30; more boxes are an error); the unconditional half gets masks 0.
//      The grounding tokens are used for the first int(beta * len(timesteps)) UNet calls, then the
//      fuser is off (GLIGEN scheduled sampling).
//   5. loop: scale_model_input, UNet on the CFG batch, guidance uncond + g * (text - uncond),
//      scheduler.step (stochastic schedulers draw from the same generator, after the latents).
//   6. VAE decode of latents / scaling_factor (tiled above a pixel budget or when asked),
//      (x / 2 + 0.5).clamp(0, 1) * 255, rounded to uint8.
// Without boxes a GLIGEN checkpoint runs with the fuser off (plain text-to-image). Boxes with a
// checkpoint that has no position net are a UsageError.
//
// Inpainting (a UNet with in_channels = 2 * latent channels + 1, e.g. masterful/gligen-1-4-
// inpainting-text-box), as the reference's gligen_inpaint_image path: the image (centre-cropped to a
// square and LANCZOS-resized to the VAE's sample_size when it is not already that size) is encoded
// and its posterior SAMPLED (mean + std * randn) times scaling_factor; the mask on the latent grid is
// 1 (keep) with 0 inside each box (int() truncation of box * size); the UNet input is the scaled
// noisy latent (C) + the masked image latent (C) + the mask (1). The generator-drawn initial latent
// has the UNet's in_channels and is discarded at the first step for randn_like(latents[:, :C]); every
// step re-noises the known region with fresh noise (scheduler.add_noise) and blends
// noisy_known * mask + latents * (1 - mask) before the UNet. The reference draws these (posterior
// sample, first latent, per-step noise, in that order) from torch's GLOBAL generator: here they come
// from a second CPU generator seeded with `noise_seed` (default: `seed`), in the reference's memory
// layouts (its per-step noise fills a channels-last tensor), so a diffusers run made after
// torch.manual_seed(noise_seed) with generator=torch.Generator().manual_seed(seed) is reproduced
// exactly.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lli/device.h"

namespace at {
class Tensor;
}

namespace lli::pipelines {

struct GenerateOptions {
  DeviceChoice device;                         // cpu (default) or cuda[:N]
  DTypeChoice dtype = DTypeChoice::automatic;  // UNet, text encoder and VAE compute dtype (resolve_dtype)
};

struct GroundingBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // normalised to 0..1 of the output width / height
  std::string phrase;                     // non-empty
};

enum class VAETilingMode { automatic, on, off };

struct GenerateRequest {
  std::string prompt;
  std::string negative_prompt;  // "" = the reference's empty unconditional prompt
  std::vector<GroundingBox> boxes;
  std::int64_t width = 0, height = 0;  // 0 = the UNet's sample_size * VAE factor
  std::int64_t steps = 50;
  double guidance = 7.5;  // classifier-free guidance (> 1 enables it)
  double beta = 0.3;      // GLIGEN scheduled sampling: fraction of UNet calls with grounding
  std::int64_t num_images = 1;
  std::uint64_t seed = 0;
  std::string scheduler = "auto";  // auto (the checkpoint's class) | pndm | ddim | euler | euler-a | dpm++2m
  double eta = 0.0;                // DDIM
  std::optional<bool> karras;      // DPM-Solver++ / Euler: Karras sigmas (nullopt = the config's)
  VAETilingMode vae_tiling = VAETilingMode::automatic;
  // Inpainting (an inpainting UNet only): the image to inpaint, BGR CV_8UC3; the boxes mark what is
  // redrawn. The output has width x height (default: the VAE's sample_size, square).
  cv::Mat inpaint_image;
  std::optional<std::uint64_t> noise_seed;  // inpainting's "global" draws (see above); default = seed
  // Optional initial noise [num_images, C, H/f, W/f] in fp32, row-major (before init_noise_sigma):
  // replaces the seeded draw (tests; replaying a reference run).
  std::vector<float> init_noise;
  // Called after each scheduler step: (step index 0-based, number of steps in the loop).
  std::function<void(int, int)> on_step;
  // Every `preview_every` steps (0 = never): the current latents decoded, one BGR image per image.
  int preview_every = 0;
  std::function<void(int, const std::vector<cv::Mat>&)> on_preview;
  // Debug tap (parity tests): "prompt_embeds", "negative_prompt_embeds", "phrase_pooled",
  // "posnet_objs", "unet_sample_in" (index = loop step), "noise_pred_raw", "latents_after_step",
  // "init_noise", "image" (float [N, H, W, 3] in 0..1); inpainting: "inpaint_image_tensor",
  // "inpaint_latent_scaled", "inpaint_mask", "first_latent", "inpaint_step_noise" (per step).
  std::function<void(const std::string&, std::int64_t, const at::Tensor&)> tap;
};

struct GenerateTimings {
  double text_ms = 0, denoise_ms = 0, vae_ms = 0, total_ms = 0;
  double unet_ms_per_call = 0;
  int unet_calls = 0;
};

struct GenerateResult {
  std::vector<cv::Mat> images;  // CV_8UC3 BGR, num_images of them
  std::uint64_t seed = 0;
  std::string scheduler;        // the class that ran, e.g. "PNDMScheduler"
  std::vector<double> timesteps;
  int grounding_calls = 0;      // UNet calls with the fuser on
  bool vae_tiled = false;
  GenerateTimings timings;
};

// What a pipeline directory is, read from its config files only (no weights): for defaults and for
// checking a request before the slow load. ModelError naming the file on problems.
struct PipelineInfo {
  std::string pipeline_class;    // model_index.json _class_name
  std::string scheduler_class;   // scheduler/scheduler_config.json _class_name
  bool grounded = false;         // unet/config.json attention_type "gated" (GLIGEN fuser + position net)
  std::int64_t in_channels = 4;  // UNet input channels (9 = inpainting)
  std::int64_t latent_channels = 4;  // VAE latent channels
  bool inpainting = false;       // in_channels == 2 * latent_channels + 1
  std::int64_t vae_sample_size = 512;  // pixels: the inpainting input size
  std::int64_t vae_scale_factor = 8;
  std::int64_t default_width = 512, default_height = 512;  // sample_size * VAE factor
};
PipelineInfo probe_pipeline(const std::filesystem::path& dir);

// Checks a request against a pipeline (sizes, boxes, steps, scheduler name): UsageError.
void validate_request(const PipelineInfo& info, const GenerateRequest& req);

class GLIGENGenerator {
 public:
  // Loads every component of the pipeline directory. ModelError naming the file on problems.
  GLIGENGenerator(const std::filesystem::path& dir, const GenerateOptions& opts = {});
  ~GLIGENGenerator();
  GLIGENGenerator(const GLIGENGenerator&) = delete;
  GLIGENGenerator& operator=(const GLIGENGenerator&) = delete;

  // validate_request() with this pipeline's info (grounded = the loaded UNet's own keys).
  void validate(const GenerateRequest& req) const;
  GenerateResult generate(const GenerateRequest& req);

  const PipelineInfo& info() const;
  bool grounded() const;                // the UNet has a GLIGEN fuser + position net
  std::int64_t vae_scale_factor() const;
  std::int64_t default_width() const;   // sample_size * VAE factor
  std::int64_t default_height() const;
  std::int64_t max_objects() const;     // 30 (the reference's max_objs)
  std::string describe() const;         // one line: classes, sizes, dtype
  double load_ms() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::pipelines
