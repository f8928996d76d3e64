// demo-gligen (issue 13): a small Stable Diffusion + GLIGEN pipeline in the diffusers layout
// (model_index.json, text_encoder/ CLIPTextModel, tokenizer/ the real CLIP BPE tokenizer, unet/
// UNet2DConditionModel with attention_type "gated" + position_net, vae/ AutoencoderKL, scheduler/
// PNDM as SD-1.4's) trained by lli itself on the shapes world (lib/world) with libtorch autograd
// through the lib/models modules (fp32; no second model definition), and its evaluation on held-out
// layouts through the pipeline lli-generate runs, judged by demo-sam. Torch-free header.
//
// Training, in two stages:
//   1. the VAE alone (`vae_steps`): scenes in [-1, 1] -> encode -> posterior sample -> decode;
//      loss L1 + MSE of the reconstruction + kl_weight x KL (SD's autoencoder without its
//      perceptual and adversarial terms). Afterwards scaling_factor = 1 / std of the posterior means
//      over held-out training scenes, as SD's 0.18215 was derived.
//   2. the UNet with its GLIGEN fuser and position net and the text encoder (`steps`), VAE frozen:
//      latents = posterior sample x scaling_factor, epsilon prediction at one timestep per image
//      drawn uniformly from SD's 1,000-step scaled-linear schedule (the scheduler config's). The
//      caption (world::caption) conditions the cross-attention (77 tokens, padded as the pipeline
//      pads); every object's phrase ("red circle", pooled text feature) and box (xyxy in 0..1) make
//      the grounding tokens, padded to the pipeline's 30 slots. Dropped at random: the caption
//      (-> "", for classifier-free guidance; then also the grounding with probability 1/2), the
//      grounding of one image (masks 0 -> the null tokens the unconditional half gets), and the
//      fuser for a whole step (the UNet must also denoise without it: GLIGEN's scheduled sampling
//      turns it off after the first beta of the steps). With `min_snr` > 0 each image's loss is
//      weighted by min(SNR(t), min_snr) / SNR(t) (with v-prediction / (SNR(t) + 1); Min-SNR-gamma: less weight on the nearly clean
//      timesteps, whose detail the VAE blurs anyway; the layout is decided at the noisy ones). The
//      saved weights are an exponential moving average of the trained ones (decay `ema`).
//      `init_vae` takes the VAE of an earlier demo-gligen pipeline (stage 1 skipped; for trials of
//      stage 2).
// Scenes: square, `size` px, 1-3 objects that do not overlap, plain or gradient backgrounds
// (gligen_scene_config; in a first trial with all four backgrounds, 1,500 steps, the noise and
// stripes took the model's capacity: blotchy textures everywhere).
// Ref: Li et al., "GLIGEN: Open-Set Grounded Text-to-Image Generation" (2023); Rombach et al., "High-
//      Resolution Image Synthesis with Latent Diffusion Models" (2022); Ho et al., DDPM (2020); Hang et
//      al., "Efficient Diffusion Training via Min-SNR Weighting Strategy" (2023);
//      diffusers train_text_to_image.py (noise, timesteps, EMA) and pipeline_stable_diffusion_gligen.py.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lli/device.h"
#include "train/train_report.h"
#include "world/shapes_world.h"

namespace lli::train {

struct DemoGligenOptions {
  std::filesystem::path out_dir;        // the pipeline directory (model_index.json, unet/, ...)
  std::filesystem::path tokenizer_dir;  // a CLIP tokenizer (vocab.json, merges.txt, ...): copied into out/tokenizer
  int size = 64;                        // image side in pixels (unet sample_size = size / VAE factor)
  std::int64_t vae_steps = 1000;
  std::int64_t steps = 6500;
  int images_per_step = 16;
  std::uint64_t seed = 1;
  double vae_lr = 1e-3, lr = 3e-4, weight_decay = 0.0;
  std::int64_t warmup = 200;
  double kl_weight = 1e-6;
  // dropped at random: the caption of an image (then also its grounding with probability 1/2), the
  // grounding of an image, the fuser for a whole step
  double caption_drop = 0.1, grounding_drop = 0.1, fuser_off = 0.15;
  double ema = 0.999;
  // > 0: Min-SNR-gamma loss weighting (Hang et al. 2023): each image's epsilon loss x min(SNR, gamma) / SNR
  double min_snr = 0;
  std::filesystem::path init_vae;  // when set: the VAE of this demo-gligen pipeline, stage 1 skipped
  // the GLIGEN fuser's gates (alpha_attn, alpha_dense) at the start: GLIGEN's 0 protects a
  // pretrained UNet; here, trained from nothing, a closed gate stays closed (|alpha_attn| <= 0.08
  // after 3,400 steps), and an open one did not make the boxes place the objects (MODEL_CARD.md)
  double gate_init = 0;
  // v-prediction (Salimans & Ho 2022): the UNet predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 and
  // the scheduler config says prediction_type "v_prediction"; Min-SNR then weighs by
  // min(SNR, gamma) / (SNR + 1). At high noise v is mostly -x0, so placing the objects weighs in the
  // loss where the epsilon target barely sees it.
  bool v_prediction = false;
  // > 0: an auxiliary loss (x this weight) that makes the UNet's features know where they are:
  // throw-away linear heads (not saved) on feature maps the fusers read (the outputs of down levels
  // max(attention_from - 1, 0) .. n - 2 and of the mid block) predict each position's coordinates
  // and their sines and cosines. A trial of whether the boxes go unused for want of position in the
  // features: the features learnt it, the boxes stayed unused (MODEL_CARD.md).
  double position_aux = 0;
  // > 0: an auxiliary loss (x this weight) on every fuser's attention (the "fuser.scores" tap): a
  // visual token whose cell centre lies in a requested box must put its attention (averaged over
  // the heads) on that box's grounding token, one outside every box on anything but the real
  // grounding tokens (-log of those masses). Teaches the fuser to select by box directly. While it
  // is on, the phrases' pooled text features enter the grounding tokens detached (through them the
  // loss taught the shared text encoder to drop the words: MODEL_CARD.md, docs/demo-gligen-trials.md).
  double attention_aux = 0;
  // the share of that loss whose gradient reaches the UNet's features (the rest is computed on them
  // detached, "fuser.scores_fixed_features"): 1 = all of it
  double attention_aux_features = 1;
  // at most this many objects per stage-2 training scene (1..3; the evaluation keeps 1-3)
  int max_objects = 3;
  // the training timesteps are drawn uniformly from [t_min, 1000): > 0 trains only the noisier ones
  std::int64_t t_min = 0;
  std::vector<std::int64_t> vae_channels = {16, 32, 64};  // VAE block_out_channels (factor 2^(n-1))
  std::vector<std::int64_t> unet_channels = {32, 64};     // UNet block_out_channels
  int unet_layers = 1;                                    // layers_per_block
  int attention_from = 1;  // the first UNet level with cross-attention and the GLIGEN fuser (0 = all)
  int text_hidden = 64, text_layers = 2, text_heads = 4;  // CLIPTextModel sizes
  bool fp16 = true;  // store the weights as F16 (the loaders convert)
  int log_every = 50;
  double max_minutes = 0;  // > 0: stop stage 2 (and save) after this much training time
};

// The scenes demo-gligen is trained and evaluated on: square, `size` px, 1-3 objects, no overlaps,
// plain or gradient backgrounds.
world::SceneConfig gligen_scene_config(int size);

// Trains and writes the pipeline into out_dir (each file atomically). Progress on stderr.
TrainReport train_demo_gligen(const DemoGligenOptions& o);

// The judge's reading of one found object (a SAM mask, CV_8UC1): the kind whose axis-aligned outline
// (world::shape_mask fitted to the mask's box) overlaps the mask best (IoU), and the colour
// (world::colour_bgr) nearest to the per-channel median of the mask's pixels in `image` (BGR).
world::Shape classify_shape(const cv::Mat& mask);
world::Colour classify_colour(const cv::Mat& image, const cv::Mat& mask);

// Does a trained pipeline use its boxes? The UNet's epsilon-prediction MSE on the held-out scenes
// seed0 .. seed0 + scenes - 1 (the training's scene settings; the VAE's posterior means; one fixed
// noise per scene) at each timestep of `timesteps`, given (a) the scenes' true boxes, (b) the same
// boxes mirrored left-right (x -> 1 - x; the phrases and the caption unchanged) and (c) no
// grounding (every object masked, GLIGEN's null input). A model that places objects by their
// boxes predicts better with (a) than with (b) at high noise.
struct GligenBoxProbe {
  std::vector<int> timesteps;
  std::vector<double> mse_true, mse_mirrored, mse_none;  // per timestep, mean over the scenes
  // how far the UNet's prediction moves: ||pred(mirrored) - pred(true)|| / ||pred(true)||, and the
  // same for no grounding; per timestep
  std::vector<double> moved_mirrored, moved_none;
  // the same for the grounding tokens themselves (the position net's output)
  double tokens_moved_mirrored = 0, tokens_moved_none = 0;
  int scenes = 0;
};
GligenBoxProbe probe_gligen_boxes(const std::filesystem::path& model_dir, int scenes, const std::vector<int>& timesteps,
                                  std::uint64_t seed0 = 1);

struct GligenEvalResult {
  int layouts = 0, layouts_ok = 0;  // a layout is ok when every one of its boxes is
  // requested boxes; found: SAM's mask from the box has a box of IoU >= 0.5 with it; ok: found with
  // the requested colour and kind
  int boxes = 0, boxes_found = 0, colour_ok = 0, kind_ok = 0, boxes_ok = 0;
  double seconds = 0;
};

struct GligenEvalOptions {
  std::filesystem::path model_dir;  // the demo-gligen pipeline
  std::filesystem::path sam_dir;    // the judge (demo-sam)
  int layouts = 50;
  std::uint64_t seed0 = 1;  // held-out layouts: the scenes of seeds seed0 .. seed0 + layouts - 1
  int steps = 25;           // diffusion steps per image (the pipeline's scheduler)
  double guidance = 7.5;
  double beta = 1.0;  // grounded at every step: demo-gligen's default in configs/models.yaml
  DTypeChoice dtype = DTypeChoice::automatic;
  // when set: each generated image written there as layout-N.png, and layout-N-judged.png (4x, the
  // requested boxes green when right, yellow when found with the wrong colour or kind, red when not
  // found; SAM's mask box white), layout-N.json (the request as lli-generate's --layout file; the
  // image's --seed is N) and judged.tsv (per box: found, the colour and kind the judge read)
  std::filesystem::path images_dir;
};

// Generates each held-out layout (caption + boxes with phrases of a gligen_scene_config scene)
// through pipelines::GLIGENGenerator (seed = layout index) and judges every requested box.
GligenEvalResult evaluate_demo_gligen(const GligenEvalOptions& o);

}  // namespace lli::train
