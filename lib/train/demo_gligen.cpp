// Ref: see demo_gligen.h.
#include "train/demo_gligen.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "models/clip_text.h"
#include "models/config_json.h"
#include "models/unet.h"
#include "models/vae.h"
#include "nn/grad_mode.h"
#include "pipelines/generate.h"
#include "pipelines/segment_sam.h"
#include "schedulers/schedule_util.h"
#include "text/clip_tokenizer.h"
#include "train/train_util.h"

namespace lli::train {

namespace m = lli::models;
namespace sd = lli::schedulers::detail;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kTrainTimesteps = 1000;  // SD's scheduler config (num_train_timesteps)
constexpr double kBetaStart = 0.00085, kBetaEnd = 0.012;
constexpr std::int64_t kMaxObjects = 30;  // the pipeline's grounding slots (max_objs)

// GroupNorm groups: the largest common divisor of the widths, at most `cap`.
std::int64_t norm_groups(const std::vector<std::int64_t>& channels, std::int64_t cap) {
  std::int64_t g = cap;
  for (auto c : channels) g = std::gcd(g, c);
  return g;
}

nlohmann::json vae_config_json(const DemoGligenOptions& o, double scaling_factor) {
  std::vector<std::string> down(o.vae_channels.size(), "DownEncoderBlock2D"), up(o.vae_channels.size(), "UpDecoderBlock2D");
  return {{"_class_name", "AutoencoderKL"},
          {"_diffusers_version", "0.31.0"},
          {"act_fn", "silu"},
          {"block_out_channels", o.vae_channels},
          {"down_block_types", down},
          {"force_upcast", true},
          {"in_channels", 3},
          {"latent_channels", 4},
          {"latents_mean", nullptr},
          {"latents_std", nullptr},
          {"layers_per_block", 1},
          {"mid_block_add_attention", true},
          {"norm_num_groups", norm_groups(o.vae_channels, 16)},
          {"out_channels", 3},
          {"sample_size", o.size},
          {"scaling_factor", scaling_factor},
          {"shift_factor", nullptr},
          {"up_block_types", up},
          {"use_post_quant_conv", true},
          {"use_quant_conv", true}};
}

nlohmann::json unet_config_json(const DemoGligenOptions& o) {
  const std::int64_t factor = std::int64_t{1} << (o.vae_channels.size() - 1);
  // cross-attention (and the GLIGEN fuser) from level attention_from down; plain blocks above it
  std::vector<std::string> down, up;
  const int n = static_cast<int>(o.unet_channels.size());
  for (int l = 0; l < n; ++l) down.push_back(l >= o.attention_from ? "CrossAttnDownBlock2D" : "DownBlock2D");
  for (int l = n - 1; l >= 0; --l) up.push_back(l >= o.attention_from ? "CrossAttnUpBlock2D" : "UpBlock2D");
  return {{"_class_name", "UNet2DConditionModel"},
          {"_diffusers_version", "0.31.0"},
          {"act_fn", "silu"},
          {"attention_head_dim", 4},
          {"attention_type", "gated"},
          {"block_out_channels", o.unet_channels},
          {"center_input_sample", false},
          {"cross_attention_dim", o.text_hidden},
          {"down_block_types", down},
          {"downsample_padding", 1},
          {"flip_sin_to_cos", true},
          {"freq_shift", 0},
          {"in_channels", 4},
          {"layers_per_block", o.unet_layers},
          {"mid_block_scale_factor", 1},
          {"mid_block_type", "UNetMidBlock2DCrossAttn"},
          {"norm_eps", 1e-5},
          {"norm_num_groups", norm_groups(o.unet_channels, 32)},
          {"out_channels", 4},
          {"sample_size", o.size / factor},
          {"up_block_types", up},
          {"upcast_attention", false},
          {"use_linear_projection", false}};
}

nlohmann::json text_config_json(const DemoGligenOptions& o) {
  // SD-1.4's text encoder config (bos 0, eos 2, pad 1: the pooled output at argmax(input_ids))
  return {{"architectures", {"CLIPTextModel"}},
          {"attention_dropout", 0.0},
          {"bos_token_id", 0},
          {"eos_token_id", 2},
          {"hidden_act", "quick_gelu"},
          {"hidden_size", o.text_hidden},
          {"initializer_factor", 1.0},
          {"initializer_range", 0.02},
          {"intermediate_size", 4 * o.text_hidden},
          {"layer_norm_eps", 1e-5},
          {"max_position_embeddings", 77},
          {"model_type", "clip_text_model"},
          {"num_attention_heads", o.text_heads},
          {"num_hidden_layers", o.text_layers},
          {"pad_token_id", 1},
          {"projection_dim", o.text_hidden},
          {"torch_dtype", o.fp16 ? "float16" : "float32"},
          {"vocab_size", 49408}};
}

const nlohmann::json kSchedulerConfig = {{"_class_name", "PNDMScheduler"},
                                         {"_diffusers_version", "0.31.0"},
                                         {"beta_end", kBetaEnd},
                                         {"beta_schedule", "scaled_linear"},
                                         {"beta_start", kBetaStart},
                                         {"clip_sample", false},
                                         {"num_train_timesteps", kTrainTimesteps},
                                         {"prediction_type", "epsilon"},
                                         {"set_alpha_to_one", false},
                                         {"skip_prk_steps", true},
                                         {"steps_offset", 1},
                                         {"timestep_spacing", "leading"},
                                         {"trained_betas", nullptr}};

const nlohmann::json kModelIndex = {{"_class_name", "StableDiffusionGLIGENPipeline"},
                                    {"_diffusers_version", "0.31.0"},
                                    {"feature_extractor", {nullptr, nullptr}},
                                    {"requires_safety_checker", false},
                                    {"safety_checker", {nullptr, nullptr}},
                                    {"scheduler", {"diffusers", "PNDMScheduler"}},
                                    {"text_encoder", {"transformers", "CLIPTextModel"}},
                                    {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                    {"unet", {"diffusers", "UNet2DConditionModel"}},
                                    {"vae", {"diffusers", "AutoencoderKL"}}};

// PyTorch's defaults for convolutions and linears (diffusers keeps them), biases 0, norms 1 / 0,
// CLIP's N(0, 0.02) token and N(0, 0.01) position embeddings; GLIGEN's gates (alpha_attn,
// alpha_dense) and the position net's null features 0, as diffusers initialises them; the UNet's
// conv_out 0 (the first prediction is 0, common practice for diffusion UNets). (A trial with the
// gates open at 1, 50 % caption dropout and the fuser on both levels drew worse: MODEL_CARD.md.)
void init_weights(torch::nn::Module& model, const std::string& what) {
  torch::NoGradGuard ng;
  init_layers_pytorch_default(model);
  for (auto& p : model.named_parameters(true)) {
    const std::string& n = p.key();
    auto& t = p.value();
    if (ends_with(n, "token_embedding.weight")) t.normal_(0.0, 0.02);
    else if (ends_with(n, "position_embedding.weight")) t.normal_(0.0, 0.01);
    else if (ends_with(n, "alpha_attn") || ends_with(n, "alpha_dense") || ends_with(n, "null_positive_feature") ||
             ends_with(n, "null_position_feature"))
      t.zero_();
    else if (t.dim() >= 2) continue;  // linear / conv weights: PyTorch's default above
    else if (ends_with(n, "bias")) t.zero_();
    else if (ends_with(n, "weight")) t.fill_(1.0);  // GroupNorm / LayerNorm
    else throw RuntimeError(what + ": no initialisation rule for the parameter " + n);
  }
}

// u8 BGR scenes -> RGB [B, 3, S, S] in [-1, 1]
torch::Tensor to_model_input(const std::vector<world::Scene>& scenes) {
  std::vector<torch::Tensor> xs;
  for (const auto& sc : scenes) xs.push_back(bgr_to_rgb01(sc.image));
  return torch::stack(xs) * 2.0 - 1.0;
}

// A box in pixels of a size x size scene as GLIGEN's [x0, y0, x1, y1] in [0, 1].
std::array<double, 4> unit_box(const cv::Rect& r, int size) {
  const double S = size;
  return {r.x / S, r.y / S, (r.x + r.width) / S, (r.y + r.height) / S};
}

struct Batch {
  std::vector<world::Scene> scenes;
  std::vector<std::string> captions;
};

Batch make_batch(std::int64_t step, int n, const world::SceneConfig& wc) {
  Batch b;
  for (int i = 0; i < n; ++i) {
    const auto seed = kTrainSeedBase + static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(n) + static_cast<std::uint64_t>(i);
    b.scenes.push_back(world::make_scene(seed, wc));
    b.captions.push_back(world::caption(b.scenes.back()));
  }
  return b;
}

// Rows of equal length (token ids or attention masks) -> [rows, T] int64.
template <class T>
torch::Tensor rows_tensor(const std::vector<std::vector<T>>& rows) {
  const auto n = static_cast<std::int64_t>(rows.front().size());
  auto t = torch::empty({static_cast<std::int64_t>(rows.size()), n}, torch::kInt64);
  auto a = t.accessor<std::int64_t, 2>();
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::int64_t j = 0; j < n; ++j) a[static_cast<std::int64_t>(i)][j] = rows[i][static_cast<std::size_t>(j)];
  return t;
}

// An exponential moving average of a model's parameters (diffusers' EMAModel: decay
// min(decay, (1 + step) / (10 + step))).
class Ema {
 public:
  Ema(torch::nn::Module& model, double decay) : decay_(decay) {
    torch::NoGradGuard ng;
    for (auto& p : model.named_parameters(true)) {
      params_.push_back(p.value());
      shadow_.push_back(p.value().detach().clone());
    }
  }
  void update(std::int64_t step) {
    torch::NoGradGuard ng;
    const double d = std::min(decay_, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
    for (std::size_t i = 0; i < params_.size(); ++i) shadow_[i].mul_(d).add_(params_[i].detach(), 1.0 - d);
  }
  void copy_to_model() {
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].copy_(shadow_[i]);
  }

 private:
  double decay_;
  std::vector<torch::Tensor> params_, shadow_;
};

// A diffusers / transformers model file: the trained tensors (F16 or F32) with the metadata.
void save_model(const fs::path& file, torch::nn::Module& model, const DemoGligenOptions& o, std::int64_t steps) {
  save_tensors(file, trained_tensors(model, o.fp16),
               {{"format", "pt"}, {"lli_demo", "demo-gligen"}, {"steps", std::to_string(steps)}, {"seed", std::to_string(o.seed)}});
}

// Stage 1: the VAE as an autoencoder. Returns the scaling factor (1 / std of the latents).
double train_vae(m::AutoencoderKLImpl& vae, const DemoGligenOptions& o, const world::SceneConfig& wc,
                 std::string& log_text, const fs::path& log_path, TrainReport& rep) {
  std::int64_t n_param = 0;
  auto opt = make_trainable_adamw(
      vae, [](const std::string&, const torch::Tensor& t) { return t.dim() >= 2; }, o.vae_lr, o.weight_decay, n_param);
  rep.parameters += n_param;
  log_info("demo-gligen: stage 1, the VAE ({} parameters, factor {}), {} steps of {} images", n_param,
           vae.cfg.scale_factor(), o.vae_steps, o.images_per_step);
  StepLoop loop("demo-gligen VAE", o.vae_steps, o.log_every);
  double acc_loss = 0, acc_psnr = 0;
  int acc_n = 0;
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.vae_lr, step, o.vae_steps, o.warmup);
    set_lr(*opt, lr);
    const Batch b = make_batch(step, o.images_per_step, wc);
    const auto x = to_model_input(b.scenes);  // [B, 3, S, S]
    const auto post = vae.encode(x);
    const auto z = post.mean + post.std * torch::randn_like(post.std);
    const auto rec = vae.decode(z);  // [B, 3, S, S]
    const auto mse = (rec - x).pow(2).mean();
    const auto kl = 0.5 * (post.mean.pow(2) + post.logvar.exp() - 1.0 - post.logvar).sum({1, 2, 3}).mean();
    const auto loss = (rec - x).abs().mean() + mse + o.kl_weight * kl;
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(vae.parameters(), 1.0);
    opt->step();
    acc_loss += loss.item<double>();
    acc_psnr += 10.0 * std::log10(4.0 / std::max(1e-10, mse.item<double>()));  // range 2: [-1, 1]
    ++acc_n;
    if (loop.end_step()) {
      log_text += fmt::format("vae\t{}\t{:.1f}\t{:.3g}\t{:.5f}\t{:.2f}\n", step + 1, loop.seconds(), lr,
                              acc_loss / acc_n, acc_psnr / acc_n);
      log_info("demo-gligen: VAE step {} loss {:.5f} reconstruction PSNR {:.2f} dB ({:.0f} s)", step + 1,
               acc_loss / acc_n, acc_psnr / acc_n, loop.seconds());
      write_file_atomic(log_path.string(), log_text);
      acc_loss = acc_psnr = 0;
      acc_n = 0;
    }
  }
  // scaling_factor: 1 / std of the posterior means over 4 batches of scenes not trained on
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> means;
  for (int k = 0; k < 4; ++k)
    means.push_back(vae.encode(to_model_input(make_batch(o.vae_steps + 1000 + k, o.images_per_step, wc).scenes)).mean);
  const double sd = torch::cat(means).std().item<double>();
  log_info("demo-gligen: latents' std {:.4f} -> scaling_factor {:.5f}", sd, 1.0 / sd);
  return 1.0 / sd;
}

}  // namespace

// GLIGEN's grounding tokens of `scenes` (size x size pixels): each object's box (mirrored
// left-right when `mirror`) and the pooled text of its name through the position net; the objects
// of the images not `grounded` masked. [B, kMaxObjects, D]; boxes_out / masks_out, when given: the
// position net's boxes [B, kMaxObjects, 4] and masks [B, kMaxObjects].
torch::Tensor grounding_tokens(m::UNet2DConditionModel& unet, m::CLIPTextModel& text_enc, const text::CLIPTokenizer& tok,
                               const std::vector<world::Scene>& scenes, int size, const std::vector<bool>& grounded,
                               bool mirror, torch::Tensor* boxes_out = nullptr, torch::Tensor* masks_out = nullptr,
                               bool detach_text = false) {
  const auto B = static_cast<std::int64_t>(scenes.size());
  std::vector<std::string> phrases;
  for (const auto& sc : scenes)
    for (const auto& ob : sc.objects) phrases.push_back(ob.name());
  const auto pb = tok.encode_batch(phrases, text::CLIPTokenizer::Padding::longest, 77, true);
  auto pooled = text_enc->forward(rows_tensor(pb.ids), rows_tensor(pb.attention_mask)).pooler_output;  // [n, D]
  if (detach_text) pooled = pooled.detach();
  const auto D = pooled.size(1);
  auto boxes = torch::zeros({B, kMaxObjects, 4});
  auto masks = torch::zeros({B, kMaxObjects});
  std::vector<torch::Tensor> pos;
  std::int64_t off = 0;
  for (std::int64_t i = 0; i < B; ++i) {
    const auto& sc = scenes[static_cast<std::size_t>(i)];
    const auto n = static_cast<std::int64_t>(sc.objects.size());
    for (std::int64_t k = 0; k < n; ++k) {
      auto u = unit_box(sc.objects[static_cast<std::size_t>(k)].box, size);
      if (mirror) u = {1.0 - u[2], u[1], 1.0 - u[0], u[3]};
      for (int c = 0; c < 4; ++c) boxes[i][k][c] = u[static_cast<std::size_t>(c)];
      masks[i][k] = grounded[static_cast<std::size_t>(i)] ? 1.0 : 0.0;
    }
    pos.push_back(torch::cat({pooled.narrow(0, off, n), torch::zeros({kMaxObjects - n, D})}));
    off += n;
  }
  if (boxes_out) *boxes_out = boxes;
  if (masks_out) *masks_out = masks;
  return unet->position_net_forward(boxes, masks, torch::stack(pos));
}

// The fuser-attention loss: averaged over the heads, a token whose cell centre lies in real boxes
// must attend to their grounding tokens (loss -log of that mass), a token outside every box away
// from the real tokens (-log of the rest); the means over the inside and the outside tokens of the
// images with real objects, added.
torch::Tensor fuser_attention_loss(const torch::Tensor& scores, std::int64_t W, const torch::Tensor& boxes,
                                   const torch::Tensor& masks) {
  const auto B = scores.size(0), N = scores.size(2), n_obj = boxes.size(1);
  const auto H = N / W;
  const auto p = torch::softmax(scores.to(torch::kFloat32), -1).mean(1).narrow(2, N, n_obj);  // [B, N, n_obj]
  const auto ys = ((torch::arange(H, torch::kFloat32) + 0.5) / static_cast<double>(H)).repeat_interleave(W);  // [N]
  const auto xs = ((torch::arange(W, torch::kFloat32) + 0.5) / static_cast<double>(W)).repeat({H});           // [N]
  const auto bx = boxes.unsqueeze(1);  // [B, 1, n_obj, 4]
  const auto x = xs.view({1, N, 1}), y = ys.view({1, N, 1});
  const auto inside = ((x >= bx.select(3, 0)) & (x <= bx.select(3, 2)) & (y >= bx.select(3, 1)) & (y <= bx.select(3, 3)))
                          .to(torch::kFloat32) * masks.unsqueeze(1);  // [B, N, n_obj]
  const auto in_any = inside.amax(2) > 0;                                        // [B, N]
  const auto grounded = (masks.amax(1) > 0).view({B, 1}).expand({B, N});         // [B, N]
  const auto mass_in = (p * inside).sum(2);                                       // [B, N]
  const auto mass_real = (p * masks.unsqueeze(1)).sum(2);                         // [B, N]
  torch::Tensor loss = torch::zeros({});
  const auto sel_in = in_any & grounded, sel_out = (~in_any) & grounded;
  if (sel_in.any().item<bool>()) loss = loss - torch::log(mass_in.masked_select(sel_in) + 1e-6).mean();
  if (sel_out.any().item<bool>()) loss = loss - torch::log(1.0 - mass_real.masked_select(sel_out) + 1e-6).mean();
  return loss;
}

namespace {

constexpr std::int64_t kPositionTargets = 10;
// Each position's targets for the position heads: x, y (cell centres in -1..1) and the sines and
// cosines of pi x, pi y, 2 pi x, 2 pi y. [H*W, kPositionTargets]
torch::Tensor position_targets(std::int64_t H, std::int64_t W) {
  const auto ys = (torch::arange(H, torch::kFloat32) + 0.5) / static_cast<double>(H) * 2 - 1;
  const auto xs = (torch::arange(W, torch::kFloat32) + 0.5) / static_cast<double>(W) * 2 - 1;
  const auto grid = torch::meshgrid({ys, xs}, "ij");
  const auto y = grid[0].reshape({-1}), x = grid[1].reshape({-1});  // [H*W]
  std::vector<torch::Tensor> cols{x, y};
  for (const double f : {M_PI, 2 * M_PI})
    for (const auto& v : {x, y}) {
      cols.push_back((f * v).sin());
      cols.push_back((f * v).cos());
    }
  return torch::stack(cols, 1);
}
}  // namespace

world::SceneConfig gligen_scene_config(int size) {
  world::SceneConfig wc;
  wc.min_side = wc.max_side = size;
  wc.min_objects = 1;
  wc.max_objects = 3;
  wc.min_radius_frac = 0.12;
  wc.max_radius_frac = 0.22;
  wc.occlusion = false;
  wc.backgrounds = 2;  // plain and gradient: a model this small spends itself on noise and stripes
  return wc;
}

TrainReport train_demo_gligen(const DemoGligenOptions& o) {
  if (o.out_dir.empty()) throw UsageError("demo-gligen: no output directory");
  if (o.tokenizer_dir.empty()) throw UsageError("demo-gligen: no tokenizer directory (--tokenizer)");
  if (const int most = gligen_scene_config(o.size).max_objects; o.max_objects < 1 || o.max_objects > most)
    throw UsageError(fmt::format("demo-gligen: --max-objects {} outside 1..{}", o.max_objects, most));
  if (o.attention_aux < 0 || !(o.attention_aux_features >= 0 && o.attention_aux_features <= 1))
    throw UsageError(fmt::format("demo-gligen: --attention-aux {} must be >= 0 and --attention-aux-features {} within 0..1",
                                 o.attention_aux, o.attention_aux_features));
  if (o.steps < 1 || o.vae_steps < 0 || o.images_per_step < 1) throw UsageError("demo-gligen: steps and images must be >= 1");
  if (o.vae_channels.size() < 2 || o.unet_channels.empty()) throw UsageError("demo-gligen: >= 2 VAE levels and >= 1 UNet level");
  const std::int64_t factor = std::int64_t{1} << (o.vae_channels.size() - 1);
  const std::int64_t unet_factor = std::int64_t{1} << (o.unet_channels.size() - 1);
  if (o.size % (factor * unet_factor) != 0)
    throw UsageError(fmt::format("demo-gligen: size {} is not a multiple of {} (VAE x UNet downsampling)", o.size, factor * unet_factor));
  fs::create_directories(o.out_dir);
  const world::SceneConfig wc = gligen_scene_config(o.size);
  const text::CLIPTokenizer tok = text::CLIPTokenizer::load(o.tokenizer_dir);

  nn::TrainingScope training;
  torch::manual_seed(o.seed);
  TrainReport rep;
  const fs::path log_path = o.out_dir / "train-log.tsv";
  std::string log_text = "stage\tstep\tseconds\tlr\tloss\tvae_psnr\n";

  // Stage 1: the VAE.
  m::AutoencoderKL vae{nullptr};
  double scaling = 1.0;
  if (!o.init_vae.empty()) {  // a trained VAE: stage 1 skipped
    vae = m::load_vae(o.init_vae / "vae");
    if (vae->cfg.block_out_channels != o.vae_channels)
      throw UsageError("demo-gligen: " + (o.init_vae / "vae").string() + ": its block_out_channels differ from --vae-channels");
    scaling = vae->cfg.scaling_factor;
    log_info("demo-gligen: stage 1 skipped, the VAE of {} (scaling_factor {:.5f})", o.init_vae.string(), scaling);
  } else {
    vae = m::AutoencoderKL(m::parse_vae_config(vae_config_json(o, 1.0), "demo-gligen vae config"));
    init_weights(*vae, "demo-gligen VAE");
    if (o.vae_steps > 0) scaling = train_vae(*vae, o, wc, log_text, log_path, rep);
  }
  for (auto& p : vae->parameters()) p.set_requires_grad(false);

  // Stage 2: the UNet (with the GLIGEN fuser and position net) and the text encoder.
  m::UNetConfig ucfg = m::parse_unet_config(unet_config_json(o), "demo-gligen unet config");
  ucfg.gligen = true;
  m::UNet2DConditionModel unet(ucfg);
  init_weights(*unet, "demo-gligen UNet");
  unet->conv_out->weight.detach().zero_();
  unet->conv_out->bias.detach().zero_();
  if (o.gate_init != 0) {
    torch::NoGradGuard ng;
    for (auto& p : unet->named_parameters(true))
      if (ends_with(p.key(), "fuser.alpha_attn") || ends_with(p.key(), "fuser.alpha_dense")) p.value().fill_(o.gate_init);
  }
  const nlohmann::json tj = text_config_json(o);
  m::CLIPTextModel text_enc(m::parse_clip_text_config(m::ConfigReader(tj, "demo-gligen text_encoder config")));
  init_weights(*text_enc, "demo-gligen text encoder");

  // the position heads (position_aux): one per tapped feature map, keyed by the tap's level (the
  // mid block's = the number of levels)
  const auto n_levels = static_cast<std::int64_t>(o.unet_channels.size());
  const std::int64_t first_tapped = std::max<std::int64_t>(0, o.attention_from - 1);
  torch::nn::ModuleList pos_heads;
  for (std::int64_t l = first_tapped; l <= n_levels - 1; ++l)  // the last: the mid block's (the deepest width)
    pos_heads->push_back(torch::nn::Linear(o.unet_channels[static_cast<std::size_t>(l)], kPositionTargets));

  std::vector<std::int64_t> counts;  // UNet, text encoder, position heads
  auto opt = make_trainable_adamw(
      {unet.get(), text_enc.get(), pos_heads.ptr().get()},
      [](const std::string& name, const torch::Tensor& t) { return t.dim() >= 2 && !ends_with(name, "embedding.weight"); },
      o.lr, o.weight_decay, counts);
  const std::int64_t n_unet = counts[0], n_text = counts[1];
  rep.parameters += n_unet + n_text;
  std::vector<torch::Tensor> trained = unet->parameters();  // for the gradient clipping
  for (auto& p : text_enc->parameters()) trained.push_back(p);
  for (auto& p : pos_heads->parameters()) trained.push_back(p);
  Ema ema_unet(*unet, o.ema), ema_text(*text_enc, o.ema);
  log_info("demo-gligen: stage 2, the UNet ({} parameters) and the text encoder ({}), {} steps of {} images", n_unet,
           n_text, o.steps, o.images_per_step);

  // the written scheduler config's noise schedule (SD's scaled-linear), as diffusers' training adds noise
  sd::BetaConfig bc;
  bc.num_train_timesteps = kTrainTimesteps;
  bc.beta_start = kBetaStart;
  bc.beta_end = kBetaEnd;
  bc.beta_schedule = sd::BetaSchedule::scaled_linear;
  const auto alphas_cumprod = sd::alphas_cumprod_of(sd::make_betas(bc));  // [T] float32

  world::Rng rng(o.seed * 0x9E3779B97F4A7C15ull + 31);
  StepLoop loop("demo-gligen UNet", o.steps, o.log_every, o.max_minutes);
  double acc_loss = 0, aux_acc = 0, attn_acc = 0;
  int acc_n = 0, attn_n = 0;
  const int B = o.images_per_step;
  world::SceneConfig wc2 = wc;
  wc2.max_objects = o.max_objects;
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, o.steps, o.warmup);
    set_lr(*opt, lr);
    Batch b = make_batch(o.vae_steps + 10000 + step, B, wc2);
    // drops: caption (and then half of the time the grounding), grounding alone, the fuser
    std::vector<bool> grounded(static_cast<std::size_t>(B), true);
    for (int i = 0; i < B; ++i) {
      if (rng.uniform() < o.caption_drop) {
        b.captions[static_cast<std::size_t>(i)].clear();
        if (rng.uniform() < 0.5) grounded[static_cast<std::size_t>(i)] = false;
      }
      if (rng.uniform() < o.grounding_drop) grounded[static_cast<std::size_t>(i)] = false;
    }
    const bool fuser = rng.uniform() >= o.fuser_off;

    torch::Tensor z0;
    {
      torch::NoGradGuard ng;
      const auto post = vae->encode(to_model_input(b.scenes));
      z0 = (post.mean + post.std * torch::randn_like(post.std)) * scaling;  // [B, 4, h, w]
    }
    const auto t = torch::randint(o.t_min, kTrainTimesteps, {B}, torch::kInt64);
    const auto abar = alphas_cumprod.index_select(0, t).view({B, 1, 1, 1});
    const auto eps = torch::randn_like(z0);
    const auto xt = abar.sqrt() * z0 + (1.0 - abar).sqrt() * eps;

    const auto cap = tok.encode_batch(b.captions, text::CLIPTokenizer::Padding::max_length, 77, true);
    const auto ctx = text_enc->forward(rows_tensor(cap.ids)).last_hidden_state;  // [B, 77, D]

    torch::Tensor objs, g_boxes, g_masks;
    if (fuser) {
      // with the attention loss the phrases' text features are not trained through the grounding: that
      // loss wants keys that depend on the box alone and, measured, taught the shared text encoder to
      // drop the words (the captions then drew the same image whatever their colours)
      objs = grounding_tokens(unet, text_enc, tok, b.scenes, o.size, grounded, false, &g_boxes, &g_masks,
                              o.attention_aux > 0);  // [B, 30, D]
    }
    std::vector<std::pair<std::int64_t, torch::Tensor>> feats;  // (head index, [B, C, H, W])
    std::vector<std::pair<std::int64_t, torch::Tensor>> fuser_scores, fuser_scores_fixed;  // (grid width, [B, heads, N, N + n_obj])
    nn::Tap tap;
    if (o.position_aux > 0 || o.attention_aux > 0)
      tap = [&](const std::string& name, std::int64_t index, const torch::Tensor& h) {
        if (o.position_aux > 0 && name == "unet.down" && index >= first_tapped && index < n_levels - 1)
          feats.emplace_back(index - first_tapped, h);
        if (o.position_aux > 0 && name == "unet.mid") feats.emplace_back(n_levels - 1 - first_tapped, h);
        if (o.attention_aux > 0 && name == "fuser.scores") fuser_scores.emplace_back(index, h);
        if (o.attention_aux > 0 && name == "fuser.scores_fixed_features") fuser_scores_fixed.emplace_back(index, h);
      };
    const auto pred = unet->forward(xt, t.to(torch::kFloat32), ctx, objs, tap);  // [B, 4, h, w]
    // the target: epsilon, or v = sqrt(abar) eps - sqrt(1 - abar) z0 (v-prediction)
    const auto target = o.v_prediction ? abar.sqrt() * eps - (1.0 - abar).sqrt() * z0 : eps;
    const auto loss = torch::mse_loss(pred, target);  // logged: the plain MSE of the target
    torch::Tensor objective = loss;
    if (o.min_snr > 0) {
      const auto snr = abar.view({B}) / (1.0 - abar.view({B}));
      const auto w = torch::clamp_max(snr, o.min_snr) / (o.v_prediction ? snr + 1.0 : snr);  // [B]
      objective = (w * (pred - target).pow(2).mean(std::vector<std::int64_t>{1, 2, 3})).mean();
    }
    if (o.position_aux > 0) {
      torch::Tensor aux = torch::zeros({});
      for (const auto& [k, h] : feats) {
        const auto tokens = h.flatten(2).transpose(1, 2);  // [B, H*W, C]
        const auto y = pos_heads[static_cast<std::size_t>(k)]->as<torch::nn::Linear>()->forward(tokens);
        aux = aux + torch::mse_loss(y, position_targets(h.size(2), h.size(3)).unsqueeze(0).expand_as(y));
      }
      aux_acc += aux.item<double>() / static_cast<double>(feats.size());
      objective = objective + o.position_aux * aux / static_cast<double>(feats.size());
    }
    if (!fuser_scores.empty()) {
      torch::Tensor aux = torch::zeros({});
      const double share = o.attention_aux_features;
      for (std::size_t i = 0; i < fuser_scores.size(); ++i) {
        const auto w = fuser_scores[i].first;
        if (share > 0) aux = aux + share * fuser_attention_loss(fuser_scores[i].second, w, g_boxes, g_masks);
        if (share < 1) aux = aux + (1 - share) * fuser_attention_loss(fuser_scores_fixed.at(i).second, w, g_boxes, g_masks);
      }
      aux = aux / static_cast<double>(fuser_scores.size());
      attn_acc += aux.item<double>();
      ++attn_n;
      objective = objective + o.attention_aux * aux;
    }
    opt->zero_grad();
    objective.backward();
    torch::nn::utils::clip_grad_norm_(trained, 1.0);
    opt->step();
    ema_unet.update(step);
    ema_text.update(step);

    acc_loss += loss.item<double>();
    ++acc_n;
    if (loop.end_step()) {
      rep.final_loss = acc_loss / acc_n;
      log_text += fmt::format("unet\t{}\t{:.1f}\t{:.3g}\t{:.5f}\t\n", step + 1, loop.seconds(), lr, rep.final_loss);
      log_info("demo-gligen: UNet step {} loss {:.5f}{}{} ({:.0f} s)", step + 1, rep.final_loss,
               o.position_aux > 0 ? fmt::format(" position {:.4f}", aux_acc / acc_n) : std::string(),
               attn_n > 0 ? fmt::format(" attention {:.4f}", attn_acc / attn_n) : std::string(), loop.seconds());
      aux_acc = 0;
      attn_acc = 0;
      attn_n = 0;
      write_file_atomic(log_path.string(), log_text);
      acc_loss = 0;
      acc_n = 0;
    }
  }
  rep.steps = loop.steps_run();
  rep.seconds = loop.seconds();

  ema_unet.copy_to_model();
  ema_text.copy_to_model();
  for (const char* d : {"unet", "vae", "text_encoder", "scheduler"}) fs::create_directories(o.out_dir / d);
  save_model(o.out_dir / "unet" / "diffusion_pytorch_model.safetensors", *unet, o, rep.steps);
  write_json_atomic(o.out_dir / "unet" / "config.json", unet_config_json(o));
  save_model(o.out_dir / "vae" / "diffusion_pytorch_model.safetensors", *vae, o, o.vae_steps);
  write_json_atomic(o.out_dir / "vae" / "config.json", vae_config_json(o, scaling));
  save_model(o.out_dir / "text_encoder" / "model.safetensors", *text_enc, o, rep.steps);
  write_json_atomic(o.out_dir / "text_encoder" / "config.json", tj);
  auto sched = kSchedulerConfig;
  sched["prediction_type"] = o.v_prediction ? "v_prediction" : "epsilon";
  write_json_atomic(o.out_dir / "scheduler" / "scheduler_config.json", sched);
  copy_clip_tokenizer(o.tokenizer_dir, o.out_dir / "tokenizer", "demo-gligen");
  write_json_atomic(o.out_dir / "model_index.json", kModelIndex);
  log_info("demo-gligen: {} UNet steps in {:.0f} s, written to {}", rep.steps, rep.seconds, o.out_dir.string());
  return rep;
}

world::Shape classify_shape(const cv::Mat& mask) {
  const cv::Rect r = cv::boundingRect(mask);
  world::Shape best = world::Shape::circle;
  double best_iou = -1;
  if (r.empty()) return best;
  const cv::Point2d c(r.x + r.width / 2.0 - 0.5, r.y + r.height / 2.0 - 0.5);
  for (int k = 0; k < world::kShapeCount; ++k) {
    const auto s = static_cast<world::Shape>(k);
    // the footprint radius that makes the outline's box match the mask's box (triangle: 2r wide,
    // 1.8r tall; diamond: 1.3r wide, 2r tall; star: ~1.9r wide, ~1.81r tall; the others 2r)
    double rw = r.width / 2.0, rh = r.height / 2.0;
    if (s == world::Shape::triangle) rh = r.height / 1.8;
    if (s == world::Shape::diamond) rw = r.width / 1.3;
    if (s == world::Shape::star) {
      rw = r.width / 1.902;
      rh = r.height / 1.809;
    }
    const double rad = 0.5 * (rw + rh);
    cv::Point2d cc = c;
    if (s == world::Shape::triangle) cc.y = r.y + rad - 0.5;  // apex at the top
    if (s == world::Shape::star) cc.y = r.y + rad - 0.5;
    const cv::Mat tmpl = world::shape_mask(s, cc, rad, mask.size());
    const double inter = cv::countNonZero(tmpl & mask), uni = cv::countNonZero(tmpl | mask);
    const double iou = uni > 0 ? inter / uni : 0;
    if (iou > best_iou) {
      best_iou = iou;
      best = s;
    }
  }
  return best;
}

world::Colour classify_colour(const cv::Mat& image, const cv::Mat& mask) {
  std::vector<int> ch[3];
  for (int y = 0; y < image.rows; ++y)
    for (int x = 0; x < image.cols; ++x)
      if (mask.at<std::uint8_t>(y, x))
        for (int c = 0; c < 3; ++c) ch[c].push_back(image.at<cv::Vec3b>(y, x)[c]);
  if (ch[0].empty()) return world::Colour::red;
  double med[3];
  for (int c = 0; c < 3; ++c) {
    auto& v = ch[c];
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    med[c] = v[v.size() / 2];
  }
  world::Colour best = world::Colour::red;
  double best_d = 1e18;
  for (int k = 0; k < world::kColourCount; ++k) {
    const cv::Vec3b p = world::colour_bgr(static_cast<world::Colour>(k));
    double d = 0;
    for (int c = 0; c < 3; ++c) d += (med[c] - p[c]) * (med[c] - p[c]);
    if (d < best_d) {
      best_d = d;
      best = static_cast<world::Colour>(k);
    }
  }
  return best;
}

GligenEvalResult evaluate_demo_gligen(const GligenEvalOptions& o) {
  const double t0 = now_ms();
  pipelines::GenerateOptions go;
  go.dtype = o.dtype;
  pipelines::GLIGENGenerator gen(o.model_dir, go);
  pipelines::SamOptions so;
  so.dtype = DTypeChoice::f32;
  pipelines::SamSegmenter sam(o.sam_dir, so);
  const int size = static_cast<int>(gen.default_width());
  const world::SceneConfig wc = gligen_scene_config(size);
  if (!o.images_dir.empty()) fs::create_directories(o.images_dir);
  GligenEvalResult r;
  std::string judged_tsv = "layout\tphrase\tfound\tcolour_read\tkind_read\n";  // images_dir
  for (int i = 0; i < o.layouts; ++i) {
    const world::Scene sc = world::make_scene(o.seed0 + static_cast<std::uint64_t>(i), wc);
    pipelines::GenerateRequest req;
    req.prompt = world::caption(sc);
    for (const auto& ob : sc.objects) {
      const auto u = unit_box(ob.box, size);
      req.boxes.push_back({u[0], u[1], u[2], u[3], ob.name()});
    }
    req.steps = o.steps;
    req.guidance = o.guidance;
    req.beta = o.beta;
    req.seed = static_cast<std::uint64_t>(i);
    const cv::Mat img = gen.generate(req).images.at(0);
    if (!o.images_dir.empty()) {
      write_image((o.images_dir / fmt::format("layout-{}.png", i)).string(), img);
      // the request as lli-generate's --layout file (pixel boxes; the image's seed is i)
      nlohmann::json lj = {{"text", req.prompt}, {"boxes", nlohmann::json::array()}};
      for (const auto& ob : sc.objects)
        lj["boxes"].push_back({{"box", {ob.box.x, ob.box.y, ob.box.x + ob.box.width, ob.box.y + ob.box.height}}, {"phrase", ob.name()}});
      write_json_atomic(o.images_dir / fmt::format("layout-{}.json", i), lj);
    }
    const auto emb = sam.compute_embedding(img);
    // the judged copy (images_dir): 4x, each requested box in green (right), yellow (found, wrong
    // colour or kind) or red (not found), SAM's mask box in white
    cv::Mat judged;
    if (!o.images_dir.empty()) cv::resize(img, judged, cv::Size(), 4, 4, cv::INTER_NEAREST);
    bool all = true;
    for (const auto& ob : sc.objects) {
      pipelines::SamPrompt p;
      p.boxes.push_back({double(ob.box.x), double(ob.box.y), double(ob.box.x + ob.box.width), double(ob.box.y + ob.box.height)});
      const auto masks = sam.segment(emb, p);
      const bool has_mask = !masks.empty() && masks[0].area > 0;
      bool found = false, colour = false, kind = false;
      const char* colour_read = "-";  // what the judge read (judged.tsv)
      const char* kind_read = "-";
      if (has_mask) {
        const cv::Rect mb = masks[0].bbox;
        const double inter = (mb & ob.box).area(), uni = mb.area() + ob.box.area() - inter;
        found = uni > 0 && inter / uni >= 0.5;
        const world::Colour c = classify_colour(img, masks[0].mask);
        const world::Shape k = classify_shape(masks[0].mask);
        colour = c == ob.colour;
        kind = k == ob.shape;
        colour_read = world::colour_name(c);
        kind_read = world::shape_name(k);
      }
      ++r.boxes;
      r.boxes_found += found;
      r.colour_ok += colour;
      r.kind_ok += kind;
      const bool ok = found && colour && kind;
      r.boxes_ok += ok;
      all = all && ok;
      if (!o.images_dir.empty())
        judged_tsv += fmt::format("{}\t{}\t{}\t{}\t{}\n", i, ob.name(), found ? 1 : 0, colour_read, kind_read);
      if (!judged.empty()) {
        const auto x4 = [](const cv::Rect& b) { return cv::Rect(b.x * 4, b.y * 4, b.width * 4, b.height * 4); };
        if (has_mask) cv::rectangle(judged, x4(masks[0].bbox), cv::Scalar(255, 255, 255), 1);
        const cv::Scalar c = ok ? cv::Scalar(0, 200, 0) : found ? cv::Scalar(0, 220, 220) : cv::Scalar(0, 0, 230);
        cv::rectangle(judged, x4(ob.box), c, 2);
      }
    }
    if (!judged.empty()) write_image((o.images_dir / fmt::format("layout-{}-judged.png", i)).string(), judged);
    ++r.layouts;
    r.layouts_ok += all;
  }
  if (!o.images_dir.empty()) write_file_atomic((o.images_dir / "judged.tsv").string(), judged_tsv);
  r.seconds = (now_ms() - t0) / 1e3;
  return r;
}

namespace {
// ||a - b|| / ||b||
double relative_change(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm().clamp_min(1e-12)).item<double>();
}
}  // namespace

GligenBoxProbe probe_gligen_boxes(const fs::path& model_dir, int scenes, const std::vector<int>& timesteps,
                                  std::uint64_t seed0) {
  torch::NoGradGuard ng;
  const auto tok = text::CLIPTokenizer::load(model_dir / "tokenizer");
  auto text_enc = m::load_clip_text(model_dir / "text_encoder");
  auto unet = m::load_unet(model_dir / "unet");
  auto vae = m::load_vae(model_dir / "vae");
  if (!unet->has_gligen()) throw ModelError(model_dir.string() + ": the UNet has no GLIGEN position net");
  const int size = static_cast<int>(vae->cfg.sample_size);
  const world::SceneConfig wc = gligen_scene_config(size);
  sd::BetaConfig bc;
  bc.num_train_timesteps = kTrainTimesteps;
  bc.beta_start = kBetaStart;
  bc.beta_end = kBetaEnd;
  bc.beta_schedule = sd::BetaSchedule::scaled_linear;
  const auto alphas_cumprod = sd::alphas_cumprod_of(sd::make_betas(bc));
  const auto sched = m::read_json_file(model_dir / "scheduler" / "scheduler_config.json");
  const bool v_pred = sched.value("prediction_type", std::string("epsilon")) == "v_prediction";
  Batch b;
  for (int i = 0; i < scenes; ++i) {
    b.scenes.push_back(world::make_scene(seed0 + static_cast<std::uint64_t>(i), wc));
    b.captions.push_back(world::caption(b.scenes.back()));
  }
  const auto B = static_cast<std::int64_t>(scenes);
  const auto z0 = vae->encode(to_model_input(b.scenes)).mean * vae->cfg.scaling_factor;  // [B, 4, h, w]
  torch::manual_seed(1);
  const auto eps = torch::randn_like(z0);
  const auto cap = tok.encode_batch(b.captions, text::CLIPTokenizer::Padding::max_length, 77, true);
  const auto ctx = text_enc->forward(rows_tensor(cap.ids)).last_hidden_state;
  const std::vector<bool> all(static_cast<std::size_t>(B), true), none(static_cast<std::size_t>(B), false);
  const auto g_true = grounding_tokens(unet, text_enc, tok, b.scenes, size, all, false);
  const auto g_mirror = grounding_tokens(unet, text_enc, tok, b.scenes, size, all, true);
  const auto g_none = grounding_tokens(unet, text_enc, tok, b.scenes, size, none, false);
  GligenBoxProbe r;
  r.scenes = scenes;
  r.tokens_moved_mirrored = relative_change(g_mirror, g_true);
  r.tokens_moved_none = relative_change(g_none, g_true);
  r.timesteps = timesteps;
  for (const int t : timesteps) {
    if (t < 0 || t >= kTrainTimesteps) throw UsageError(fmt::format("demo-gligen probe: timestep {} outside 0..{}", t, kTrainTimesteps - 1));
    const double abar = alphas_cumprod[t].item<double>();
    const auto xt = std::sqrt(abar) * z0 + std::sqrt(1.0 - abar) * eps;
    const auto tt = torch::full({B}, static_cast<double>(t));
    auto eps_of = [&](const torch::Tensor& g) {
      auto pred = unet->forward(xt, tt, ctx, g);
      if (v_pred) pred = std::sqrt(1.0 - abar) * xt + std::sqrt(abar) * pred;  // v -> epsilon
      return pred;
    };
    const auto p_true = eps_of(g_true), p_mirror = eps_of(g_mirror), p_none = eps_of(g_none);
    r.mse_true.push_back(torch::mse_loss(p_true, eps).item<double>());
    r.mse_mirrored.push_back(torch::mse_loss(p_mirror, eps).item<double>());
    r.mse_none.push_back(torch::mse_loss(p_none, eps).item<double>());
    r.moved_mirrored.push_back(relative_change(p_mirror, p_true));
    r.moved_none.push_back(relative_change(p_none, p_true));
  }
  return r;
}

}  // namespace lli::train
