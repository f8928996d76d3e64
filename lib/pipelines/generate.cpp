// Ref: diffusers/pipelines/stable_diffusion_gligen/pipeline_stable_diffusion_gligen.py
// StableDiffusionGLIGENPipeline.__call__ / encode_prompt / prepare_latents, and
// image_processor.py VaeImageProcessor.postprocess (diffusers 0.31).
#include "pipelines/generate.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fmt/format.h>
#include <opencv2/imgproc.hpp>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "models/clip_text.h"
#include "models/config_json.h"
#include "models/unet.h"
#include "models/vae.h"
#include "io/pil_resize.h"
#include "schedulers/scheduler.h"
#include "text/clip_tokenizer.h"

namespace lli::pipelines {

namespace fs = std::filesystem;

namespace {

// The reference's fixed number of grounding slots (pipeline_stable_diffusion_gligen.py max_objs).
constexpr std::int64_t kMaxObjects = 30;
// Above this many output pixels the VAE decodes in tiles (diffusers' enable_vae_tiling), unless
// tiling is forced on or off: keeps 1024^2 and larger within a few GB.
constexpr std::int64_t kVAETilingPixels = 768 * 768;

torch::Dtype to_torch_dtype(DTypeChoice d) {
  switch (d) {
    case DTypeChoice::bf16: return torch::kBFloat16;
    case DTypeChoice::f16: return torch::kHalf;
    default: return torch::kFloat32;
  }
}

// [N, 3, H, W] decoded sample in [-1, 1] -> N BGR uint8 images; `unit` gets (x / 2 + 0.5).clamp(0, 1)
// as [N, H, W, 3] fp32 (the reference's output_type "np").
std::vector<cv::Mat> to_images(const torch::Tensor& sample, torch::Tensor* unit = nullptr) {
  auto x = (sample.to(torch::kCPU, torch::kFloat32) / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}).contiguous();
  if (unit) *unit = x;
  auto u8 = (x * 255).round().to(torch::kUInt8).contiguous();  // [N, H, W, 3] RGB
  std::vector<cv::Mat> out;
  for (std::int64_t n = 0; n < u8.size(0); ++n) {
    auto img = u8[n];
    cv::Mat rgb(static_cast<int>(img.size(0)), static_cast<int>(img.size(1)), CV_8UC3, img.data_ptr<std::uint8_t>());
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    out.push_back(bgr);
  }
  return out;
}

}  // namespace

PipelineInfo probe_pipeline(const fs::path& dir) {
  PipelineInfo info;
  const auto index_path = dir / "model_index.json";
  auto index = models::read_json_file(index_path);
  models::ConfigReader r(index, index_path.string());
  info.pipeline_class = r.get_string("_class_name", "");
  if (info.pipeline_class != "StableDiffusionGLIGENPipeline" && info.pipeline_class != "StableDiffusionPipeline")
    throw ModelError(r.where("_class_name") + ": \"" + info.pipeline_class +
                     "\" is not supported (expected StableDiffusionGLIGENPipeline or StableDiffusionPipeline)");
  for (const char* part : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}) {
    std::error_code ec;
    if (!fs::is_directory(dir / part, ec))
      throw ModelError((dir / part).string() + ": missing (a diffusers pipeline directory has unet/, vae/, "
                       "text_encoder/, tokenizer/ and scheduler/)");
  }
  const auto unet_path = dir / "unet" / "config.json";
  auto uj = models::read_json_file(unet_path);
  models::ConfigReader u(uj, unet_path.string());
  const std::string attention_type = u.get_string("attention_type", "default");
  info.grounded = attention_type == "gated" || attention_type == "gated-text-image";
  info.in_channels = u.get_int("in_channels", 4);
  const auto sample_size = u.get_int("sample_size", 64);
  u.require_positive("sample_size", sample_size);
  const auto vae_path = dir / "vae" / "config.json";
  auto vj = models::read_json_file(vae_path);
  models::ConfigReader v(vj, vae_path.string());
  std::size_t levels = 4;
  if (v.has("block_out_channels")) {
    if (!v.at("block_out_channels").is_array() || v.at("block_out_channels").empty())
      throw ModelError(v.where("block_out_channels") + ": expected a non-empty list");
    levels = v.at("block_out_channels").size();
  }
  info.vae_scale_factor = std::int64_t{1} << (levels - 1);
  info.latent_channels = v.get_int("latent_channels", 4);
  info.vae_sample_size = v.get_int("sample_size", 32);
  info.inpainting = info.in_channels == 2 * info.latent_channels + 1;
  if (info.in_channels != info.latent_channels && !info.inpainting)
    throw ModelError(u.where("in_channels") + ": " + std::to_string(info.in_channels) + " fits neither generation (" +
                     std::to_string(info.latent_channels) + ", the VAE's latent_channels) nor inpainting (" +
                     std::to_string(2 * info.latent_channels + 1) + ")");
  info.default_width = info.default_height = sample_size * info.vae_scale_factor;
  const auto sched_path = dir / "scheduler" / "scheduler_config.json";
  auto sj = models::read_json_file(sched_path);
  info.scheduler_class = models::ConfigReader(sj, sched_path.string()).get_string("_class_name", "");
  return info;
}

void validate_request(const PipelineInfo& info, const GenerateRequest& req) {
  const auto f = info.vae_scale_factor;
  const auto w = req.width > 0 ? req.width : info.default_width;
  const auto h = req.height > 0 ? req.height : info.default_height;
  if (w % f != 0 || h % f != 0)
    throw UsageError(fmt::format("--width/--height {}x{}: must be multiples of the VAE factor {}", w, h, f));
  if (w > 16384 || h > 16384) throw UsageError(fmt::format("--width/--height {}x{}: at most 16384", w, h));
  if (req.steps < 1 || req.steps > 1000) throw UsageError(fmt::format("--steps {}: expected 1..1000", req.steps));
  if (req.num_images < 1 || req.num_images > 64)
    throw UsageError(fmt::format("--num-images {}: expected 1..64", req.num_images));
  if (!std::isfinite(req.guidance) || req.guidance < 0)
    throw UsageError(fmt::format("--guidance {}: expected a number >= 0", req.guidance));
  if (!std::isfinite(req.beta) || req.beta < 0 || req.beta > 1)
    throw UsageError(fmt::format("--beta {}: expected 0..1", req.beta));
  if (!std::isfinite(req.eta) || req.eta < 0) throw UsageError(fmt::format("--eta {}: expected >= 0", req.eta));
  (void)schedulers::parse_scheduler_name(req.scheduler);
  if (!req.boxes.empty() && !info.grounded)
    throw UsageError("layout boxes need a GLIGEN checkpoint: this UNet has no fuser / position_net (plain Stable "
                     "Diffusion); drop the boxes or use a GLIGEN model");
  if (static_cast<std::int64_t>(req.boxes.size()) > kMaxObjects)
    throw UsageError(fmt::format("{} layout boxes: GLIGEN takes at most {}", req.boxes.size(), kMaxObjects));
  for (std::size_t i = 0; i < req.boxes.size(); ++i) {
    const auto& b = req.boxes[i];
    if (b.phrase.empty()) throw UsageError(fmt::format("layout box {} has no phrase (GLIGEN grounds a phrase in each box)", i));
    if (!(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 1 && b.y1 <= 1 && b.x0 < b.x1 && b.y0 < b.y1))
      throw UsageError(fmt::format("layout box {} [{}, {}, {}, {}]: not a box inside the image", i, b.x0, b.y0, b.x1, b.y1));
  }
  if (info.inpainting && req.inpaint_image.empty())
    throw UsageError("this is an inpainting checkpoint (UNet in_channels " + std::to_string(info.in_channels) +
                     "): it needs an image to inpaint (lli-edit inpaint / replace)");
  if (!info.inpainting && !req.inpaint_image.empty())
    throw UsageError("inpainting needs an inpainting checkpoint (UNet in_channels " +
                     std::to_string(2 * info.latent_channels + 1) + "); this one generates from text");
  if (!req.inpaint_image.empty() && req.inpaint_image.type() != CV_8UC3)
    throw UsageError("the image to inpaint must be 8-bit BGR");
  if (!req.init_noise.empty()) {
    const auto c = info.in_channels;
    const auto want = req.num_images * c * (h / f) * (w / f);
    if (static_cast<std::int64_t>(req.init_noise.size()) != want)
      throw UsageError(fmt::format("initial noise has {} values, expected {} ([{}, {}, {}, {}])", req.init_noise.size(),
                                   want, req.num_images, c, h / f, w / f));
  }
}

struct GLIGENGenerator::Impl {
  fs::path dir;
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;
  text::CLIPTokenizer tokenizer;
  models::CLIPTextModel text_encoder{nullptr};
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  schedulers::SchedulerConfig scheduler_config;
  PipelineInfo info;
  double load_ms = 0;

  void tap(const GenerateRequest& req, const char* name, std::int64_t i, const torch::Tensor& t) const {
    if (req.tap) req.tap(name, i, t);
  }

  // Last hidden states of one prompt padded to model_max_length: [1, L, D].
  torch::Tensor encode_prompt(const std::string& prompt) {
    const auto L = tokenizer.model_max_length();
    auto b = tokenizer.encode_batch({prompt}, text::CLIPTokenizer::Padding::max_length, L, /*truncation=*/true);
    auto ids = torch::tensor(b.ids[0], torch::kInt64).unsqueeze(0).to(device);
    if (static_cast<std::int64_t>(tokenizer.encode(prompt).size()) > L)
      log_info("lli-generate: the prompt is longer than {} tokens and was truncated", L);
    return text_encoder->forward(ids).last_hidden_state;
  }

  // The image to inpaint as the reference feeds the VAE: centre square crop (PIL's crop box rounded
  // half to even) + PIL LANCZOS resize to the VAE's sample_size when it is not that size already,
  // then /255, * 2 - 1 -> [1, 3, S, S] fp32.
  torch::Tensor inpaint_input(const cv::Mat& bgr) const {
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const int S = static_cast<int>(info.vae_sample_size);
    if (rgb.cols != S || rgb.rows != S) {
      if (rgb.cols != rgb.rows) {  // PIL crop((W - s) / 2, (H - s) / 2, (W + s) / 2, (H + s) / 2), each rounded
        const double side = std::min(rgb.cols, rgb.rows);
        auto r = [](double v) { return static_cast<int>(std::nearbyint(v)); };  // half to even, as Python's round
        const int x0 = r((rgb.cols - side) / 2), x1 = r((rgb.cols + side) / 2);
        const int y0 = r((rgb.rows - side) / 2), y1 = r((rgb.rows + side) / 2);
        rgb = rgb(cv::Rect(x0, y0, std::min(x1, rgb.cols) - x0, std::min(y1, rgb.rows) - y0)).clone();
      }
      rgb = pil_resize(rgb, S, S, PilResample::lanczos);
    }
    auto t = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
    return (t.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32) / 255.0) * 2 - 1;
  }

  torch::Tensor decode(const torch::Tensor& latents, bool tiled) {
    torch::NoGradGuard ng;
    models::VAETiling t;
    t.enabled = tiled;
    return vae->decode(latents / vae->cfg.scaling_factor, t);
  }
};

GLIGENGenerator::GLIGENGenerator(const fs::path& dir, const GenerateOptions& opts) : impl_(std::make_unique<Impl>()) {
  const double t0 = now_ms();
  auto& m = *impl_;
  m.dir = dir;
  check_device_available(opts.device);
  m.device = opts.device.cuda ? torch::Device(torch::kCUDA, opts.device.index) : torch::Device(torch::kCPU);
  m.dtype = to_torch_dtype(resolve_dtype(opts.dtype, opts.device));

  m.info = probe_pipeline(dir);
  m.tokenizer = text::CLIPTokenizer::load(dir / "tokenizer");
  m.scheduler_config = schedulers::load_scheduler_config(dir / "scheduler" / "scheduler_config.json");
  models::CLIPTextLoadOptions to;
  to.dtype = m.dtype;
  to.device = m.device;
  m.text_encoder = models::load_clip_text(dir / "text_encoder", to);
  models::UNetLoadOptions uo;
  uo.dtype = m.dtype;
  uo.device = m.device;
  m.unet = models::load_unet(dir / "unet", uo);
  models::VAELoadOptions vo;
  vo.dtype = m.dtype;
  vo.device = m.device;
  m.vae = models::load_vae(dir / "vae", vo);

  const auto& uc = m.unet->cfg;
  const auto text_dim = m.text_encoder->cfg.hidden_size;
  if (uc.cross_attention_dim != text_dim)
    throw ModelError((dir / "unet" / "config.json").string() + ": cross_attention_dim " +
                     std::to_string(uc.cross_attention_dim) + " differs from the text encoder's hidden_size " +
                     std::to_string(text_dim));
  if (uc.in_channels != m.vae->cfg.latent_channels && uc.in_channels != 2 * m.vae->cfg.latent_channels + 1)
    throw ModelError((dir / "unet" / "config.json").string() + ": in_channels " + std::to_string(uc.in_channels) +
                     " fits neither the VAE's latent_channels " + std::to_string(m.vae->cfg.latent_channels) +
                     " (generation) nor 2 * latent_channels + 1 (inpainting)");
  // The loaded UNet decides (a config saying "gated" without the keys fails at load).
  m.info.grounded = m.unet->has_gligen();
  m.load_ms = now_ms() - t0;
}

GLIGENGenerator::~GLIGENGenerator() = default;

const PipelineInfo& GLIGENGenerator::info() const { return impl_->info; }
bool GLIGENGenerator::grounded() const { return impl_->info.grounded; }
std::int64_t GLIGENGenerator::vae_scale_factor() const { return impl_->info.vae_scale_factor; }
std::int64_t GLIGENGenerator::default_width() const { return impl_->info.default_width; }
std::int64_t GLIGENGenerator::default_height() const { return impl_->info.default_height; }
std::int64_t GLIGENGenerator::max_objects() const { return kMaxObjects; }
double GLIGENGenerator::load_ms() const { return impl_->load_ms; }

std::string GLIGENGenerator::describe() const {
  const auto& m = *impl_;
  return fmt::format("{}{}, UNet in {} ch, text D{} L{}, VAE x{}, scheduler {}, {}", m.info.pipeline_class,
                     grounded() ? " (grounded)" : "", m.unet->cfg.in_channels, m.text_encoder->cfg.hidden_size,
                     m.text_encoder->cfg.num_hidden_layers, vae_scale_factor(), m.info.scheduler_class,
                     c10::toString(m.dtype));
}

void GLIGENGenerator::validate(const GenerateRequest& req) const { validate_request(impl_->info, req); }

GenerateResult GLIGENGenerator::generate(const GenerateRequest& req) {
  validate(req);
  torch::NoGradGuard no_grad;
  auto& m = *impl_;
  GenerateResult res;
  res.seed = req.seed;
  const double t_start = now_ms();
  const auto f = vae_scale_factor();
  const std::int64_t W = req.width > 0 ? req.width : default_width();
  const std::int64_t H = req.height > 0 ? req.height : default_height();
  const std::int64_t N = req.num_images;
  const bool cfg = req.guidance > 1.0;

  // 1. Text: [N, L, D] positive, [N, L, D] negative; CFG batch = [negative..., positive...].
  auto prompt_embeds = m.encode_prompt(req.prompt);  // [1, L, D]
  m.tap(req, "prompt_embeds", -1, prompt_embeds);
  torch::Tensor embeds = prompt_embeds.repeat({N, 1, 1});
  if (cfg) {
    auto neg = m.encode_prompt(req.negative_prompt);
    m.tap(req, "negative_prompt_embeds", -1, neg);
    embeds = torch::cat({neg.repeat({N, 1, 1}), embeds});
  }

  // 2. Timesteps.
  auto sched = schedulers::make_scheduler(m.scheduler_config, schedulers::parse_scheduler_name(req.scheduler),
                                          schedulers::SchedulerOptions{req.eta, req.karras});
  sched->set_timesteps(req.steps);
  res.scheduler = sched->class_name();
  res.timesteps = sched->timesteps();

  // 3. Initial latents [N, C, H/f, W/f] fp32 from the seeded CPU generator (as randn_tensor).
  auto gen = at::detail::createCPUGenerator(req.seed);
  const auto C = m.unet->cfg.in_channels;
  torch::Tensor latents;
  if (!req.init_noise.empty())
    latents = torch::from_blob(const_cast<float*>(req.init_noise.data()), {N, C, H / f, W / f}, torch::kFloat32).clone();
  else
    latents = torch::randn({N, C, H / f, W / f}, gen, torch::TensorOptions().dtype(torch::kFloat32));
  m.tap(req, "init_noise", -1, latents);
  latents = (latents * sched->init_noise_sigma()).to(m.device);

  // 3b. Inpainting: the known image's latent and the latent-grid mask (1 = keep, 0 in the boxes).
  const auto Cl = m.info.latent_channels;
  auto noise_gen = at::detail::createCPUGenerator(req.noise_seed.value_or(req.seed));
  torch::Tensor inpaint_latent, inpaint_mask, mask_addition;
  if (m.info.inpainting) {
    auto x = m.inpaint_input(req.inpaint_image);  // [1, 3, S, S] in [-1, 1]
    m.tap(req, "inpaint_image_tensor", -1, x);
    auto post = m.vae->encode(x.to(m.device));
    auto eps = torch::randn(post.mean.sizes(), noise_gen, torch::TensorOptions().dtype(torch::kFloat32));
    inpaint_latent = (post.mean + post.std * eps.to(post.mean.device())) * m.vae->cfg.scaling_factor;  // [1, Cl, h, w]
    m.tap(req, "inpaint_latent_scaled", -1, inpaint_latent);
    const auto h = inpaint_latent.size(2), w = inpaint_latent.size(3);
    inpaint_mask = torch::ones({h, w}, torch::kFloat32);
    for (const auto& b : req.boxes) {
      // int() truncation of box * size, as draw_inpaint_mask_from_boxes (square latents there).
      const auto x0 = static_cast<std::int64_t>(b.x0 * static_cast<double>(w)), x1 = static_cast<std::int64_t>(b.x1 * static_cast<double>(w));
      const auto y0 = static_cast<std::int64_t>(b.y0 * static_cast<double>(h)), y1 = static_cast<std::int64_t>(b.y1 * static_cast<double>(h));
      if (x1 > x0 && y1 > y0) inpaint_mask.narrow(0, y0, y1 - y0).narrow(1, x0, x1 - x0).zero_();
    }
    inpaint_mask = inpaint_mask.view({1, 1, h, w}).to(inpaint_latent.device());
    m.tap(req, "inpaint_mask", -1, inpaint_mask);
    mask_addition = torch::cat({inpaint_latent * inpaint_mask, inpaint_mask}, 1).expand({cfg ? 2 * N : N, -1, -1, -1});
  }

  // 4. GLIGEN grounding tokens [B, 30, D] (B = 2N with CFG; the unconditional half masked out).
  torch::Tensor objs;
  if (!req.boxes.empty()) {
    std::vector<std::string> phrases;
    for (const auto& b : req.boxes) phrases.push_back(b.phrase);
    auto pb = m.tokenizer.encode_batch(phrases, text::CLIPTokenizer::Padding::longest, m.tokenizer.model_max_length(),
                                       /*truncation=*/true);
    const auto n = static_cast<std::int64_t>(phrases.size());
    const auto T = static_cast<std::int64_t>(pb.ids[0].size());
    auto ids = torch::empty({n, T}, torch::kInt64), mask = torch::empty({n, T}, torch::kInt64);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < T; ++j) {
        ids[i][j] = pb.ids[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
        mask[i][j] = pb.attention_mask[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
      }
    auto pooled = m.text_encoder->forward(ids.to(m.device), mask.to(m.device)).pooler_output;  // [n, D]
    m.tap(req, "phrase_pooled", -1, pooled);
    const auto D = pooled.size(1);
    auto boxes = torch::zeros({kMaxObjects, 4}, torch::kFloat32);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto& b = req.boxes[static_cast<std::size_t>(i)];
      boxes[i] = torch::tensor({b.x0, b.y0, b.x1, b.y1}, torch::kFloat64).to(torch::kFloat32);
    }
    auto feats = torch::zeros({kMaxObjects, D}, torch::kFloat32);
    feats.narrow(0, 0, n).copy_(pooled.to(torch::kCPU, torch::kFloat32));
    auto masks = torch::zeros({kMaxObjects}, torch::kFloat32);
    masks.narrow(0, 0, n).fill_(1);
    auto bb = boxes.unsqueeze(0).expand({N, -1, -1});
    auto ff = feats.unsqueeze(0).expand({N, -1, -1});
    auto mm = masks.unsqueeze(0).expand({N, -1});
    if (cfg) {
      bb = torch::cat({bb, bb});
      ff = torch::cat({ff, ff});
      mm = torch::cat({torch::zeros_like(mm), mm});
    }
    objs = m.unet->position_net_forward(bb.contiguous().to(m.device), mm.contiguous().to(m.device),
                                        ff.contiguous().to(m.device));
    m.tap(req, "posnet_objs", -1, objs);
  }
  res.timings.text_ms = now_ms() - t_start;

  // 5. Denoising loop.
  const auto& ts = res.timesteps;
  const int n_calls = static_cast<int>(ts.size());
  const int n_ground = objs.defined() ? static_cast<int>(req.beta * static_cast<double>(n_calls)) : 0;
  const bool tiled = req.vae_tiling == VAETilingMode::on ||
                     (req.vae_tiling == VAETilingMode::automatic && W * H > kVAETilingPixels);
  res.vae_tiled = tiled;
  const double t_loop = now_ms();
  for (int i = 0; i < n_calls; ++i) {
    check_interrupted();
    const double t = ts[static_cast<std::size_t>(i)];
    if (latents.size(1) != Cl) {  // the inpainting UNet's in_channels-wide draw is replaced
      latents = torch::randn({N, Cl, latents.size(2), latents.size(3)}, noise_gen, torch::TensorOptions().dtype(torch::kFloat32))
                    .to(m.device);
      m.tap(req, "first_latent", -1, latents);
    }
    if (inpaint_latent.defined()) {
      // randn_like(gligen_inpaint_latent): the reference's latent is channels-last (the image tensor
      // is an NHWC numpy array viewed as NCHW, and the VAE's convolutions keep that layout), so the
      // draw fills it in memory order on torch's serial path; the same layout gives the same values.
      auto noise = torch::empty(inpaint_latent.sizes(),
                                torch::TensorOptions().dtype(torch::kFloat32).memory_format(torch::MemoryFormat::ChannelsLast))
                       .normal_(0, 1, noise_gen)
                       .contiguous()
                       .to(inpaint_latent.device());
      m.tap(req, "inpaint_step_noise", i, noise);
      auto known = sched->add_noise(inpaint_latent, noise, t).expand_as(latents);
      latents = known * inpaint_mask + latents * (1 - inpaint_mask);
    }
    auto model_in = cfg ? torch::cat({latents, latents}) : latents;
    model_in = sched->scale_model_input(model_in, t);
    if (mask_addition.defined()) model_in = torch::cat({model_in, mask_addition}, 1);
    m.tap(req, "unet_sample_in", i, model_in);
    const bool ground = i < n_ground;
    auto noise = m.unet->forward(model_in, t, embeds, ground ? objs : torch::Tensor());  // [B, C, h, w] fp32
    m.tap(req, "noise_pred_raw", i, noise);
    if (ground) ++res.grounding_calls;
    if (cfg) {
      auto parts = noise.chunk(2);
      noise = parts[0] + req.guidance * (parts[1] - parts[0]);
    }
    latents = sched->step(noise, t, latents, &gen);
    m.tap(req, "latents_after_step", i, latents);
    if (req.on_step) req.on_step(i, n_calls);
    if (req.preview_every > 0 && req.on_preview && (i + 1) % req.preview_every == 0 && i + 1 < n_calls)
      req.on_preview(i, to_images(m.decode(latents, tiled)));
  }
  res.timings.unet_calls = n_calls;
  res.timings.denoise_ms = now_ms() - t_loop;
  res.timings.unet_ms_per_call = n_calls ? res.timings.denoise_ms / n_calls : 0;

  // 6. Decode.
  check_interrupted();
  const double t_vae = now_ms();
  torch::Tensor unit;
  res.images = to_images(m.decode(latents, tiled), &unit);
  m.tap(req, "image", -1, unit);
  res.timings.vae_ms = now_ms() - t_vae;
  res.timings.total_ms = now_ms() - t_start;
  return res;
}

}  // namespace lli::pipelines
