// Ref: see demo_lama.h.
#include "train/demo_lama.h"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/inpaint_telea.h"
#include "lli/log.h"
#include "lli/tensor_io.h"
#include "models/lama.h"
#include "nn/grad_mode.h"
#include "pipelines/edit_region.h"
#include "pipelines/inpaint_lama.h"
#include "train/train_util.h"
#include "world/shapes_world.h"

namespace lli::train {

namespace m = lli::models;

namespace {

// config.yaml of the demo generator: big-lama's structure (global share 0.75 in the residual
// blocks, none before, no local Fourier unit, sigmoid output) at small widths.
std::string demo_lama_config(const DemoLamaOptions& o) {
  return fmt::format(R"(# demo-lama: trained by lli on the shapes world only (scripts/train-demo-models.sh lama)
generator:
  kind: ffc_resnet
  input_nc: 4
  output_nc: 3
  ngf: {}
  n_downsampling: {}
  n_blocks: {}
  add_out_act: sigmoid
  init_conv_kwargs:
    ratio_gin: 0
    ratio_gout: 0
    enable_lfu: false
  downsample_conv_kwargs:
    ratio_gin: 0
    ratio_gout: 0
    enable_lfu: false
  resnet_conv_kwargs:
    ratio_gin: 0.75
    ratio_gout: 0.75
    enable_lfu: false
training_model:
  kind: default
  concat_mask: true
dataset:
  kind: default
  pad_out_to_modulo: {}
)",
                     o.ngf, o.n_downsampling, o.n_blocks, 1 << o.n_downsampling);
}

// He initialisation (N(0, 2 / fan_in), fan_in = numel / size(0)) for every convolution, conv
// biases 0, BatchNorm weight 1, bias 0, running mean 0, variance 1; each residual block starts
// close to the identity and the output near grey (below). Measured before the BatchNorm layers ran
// on batch statistics: with scale 1 in the blocks the activations grew ~3x per block (20x after
// four) and the sigmoid output saturated; PyTorch's default init (which shrinks the signal per
// layer) and He init alike left the training hole PSNR at 17-18 dB after 400 steps, 19.1 dB with
// batch statistics (all of these without the known-region L1, the largest gain: demo_lama.h).
void init_weights(m::LamaGeneratorImpl& model, std::uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (auto& p : model.named_parameters(true)) {
    auto& t = p.value();
    if (t.dim() == 1) t.fill_(ends_with(p.key(), "bias") ? 0.0 : 1.0);  // BatchNorm weight/bias, conv biases
    else t.normal_(0.0, std::sqrt(2.0 / static_cast<double>(t.numel() / t.size(0))));
  }
  // Each residual block's second BatchNorm starts at scale 0.1, the output layer's weights / 10.
  for (auto& blk : model.blocks)
    for (auto* bn : {blk->conv2->bn_l.get(), blk->conv2->bn_g.get()})
      if (bn) bn->weight.fill_(0.1);
  model.final_conv->weight.mul_(0.1);
  for (auto& b : model.named_buffers(true)) {
    const std::string& n = b.key();
    if (ends_with(n, "running_mean") || ends_with(n, "num_batches_tracked")) b.value().zero_();
    else if (ends_with(n, "running_var")) b.value().fill_(1.0);
    else throw RuntimeError("demo-lama: no initialisation rule for the buffer " + n);
  }
}

torch::Tensor to_mask_tensor(const cv::Mat& mask) {
  return torch::from_blob(mask.data, {1, mask.rows, mask.cols}, torch::kUInt8).gt(0).to(torch::kFloat32);
}

// OR of every object's mask but `skip`'s.
cv::Mat others_mask(const world::Scene& sc, std::size_t skip) {
  cv::Mat others = cv::Mat::zeros(sc.image.size(), CV_8UC1);
  for (std::size_t j = 0; j < sc.objects.size(); ++j)
    if (j != skip) others |= sc.objects[j].mask;
  return others;
}

struct Sample {
  torch::Tensor input, target, hole;  // [4, S, S], [3, S, S], [1, S, S]
};

// One training sample of a square S-px scene (first seed whose scene has a removable object).
Sample make_sample(std::uint64_t seed, int S, double noise_share, world::Rng& rng) {
  world::SceneConfig wc;
  wc.min_side = wc.max_side = S;
  if (noise_share > 0 && rng.uniform() < noise_share) wc.background = static_cast<int>(world::Background::noise);
  for (std::uint64_t attempt = 0;; ++attempt) {
    const world::Scene sc = world::make_scene(seed * 64 + attempt, wc);
    std::vector<std::size_t> order(sc.objects.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[static_cast<std::size_t>(rng.below(static_cast<int>(i)))]);
    const int d = std::max(2, static_cast<int>(std::lround(pipelines::default_dilate(sc.image.size()) * rng.uniform(0.5, 1.5))));
    for (std::size_t k : order) {
      const cv::Mat hole = pipelines::dilate_mask(sc.objects[k].mask, d);
      if (cv::countNonZero(hole & others_mask(sc, k)) > 0) continue;
      Sample s;
      s.hole = to_mask_tensor(hole);
      auto img = bgr_to_rgb01(sc.image);
      // the background inside the hole, the image (other objects included) outside it
      s.target = torch::where(s.hole > 0, bgr_to_rgb01(sc.background), img);
      s.input = torch::cat({img * (1 - s.hole), s.hole}, 0);
      return s;
    }
    if (attempt > 60) throw RuntimeError("demo-lama: no removable object in 60 scenes (seed " + std::to_string(seed) + ")");
  }
}

// PSNR (dB, capped at 60) of `a` vs `b` (CV_8UC3) over the non-zero pixels of `hole`.
double hole_psnr(const cv::Mat& a, const cv::Mat& b, const cv::Mat& hole) {
  double se = 0;
  long n = 0;
  for (int y = 0; y < a.rows; ++y) {
    const auto* pa = a.ptr<cv::Vec3b>(y);
    const auto* pb = b.ptr<cv::Vec3b>(y);
    const auto* ph = hole.ptr<std::uint8_t>(y);
    for (int x = 0; x < a.cols; ++x) {
      if (!ph[x]) continue;
      for (int c = 0; c < 3; ++c) {
        const double d = static_cast<double>(pa[x][c]) - static_cast<double>(pb[x][c]);
        se += d * d;
      }
      n += 3;
    }
  }
  if (n == 0 || se == 0) return 60.0;
  return std::min(60.0, 10.0 * std::log10(255.0 * 255.0 / (se / static_cast<double>(n))));
}

}  // namespace

TrainReport train_demo_lama(const DemoLamaOptions& o) {
  if (o.out_dir.empty()) throw UsageError("demo-lama: no output directory");
  if (o.steps < 1 || o.images_per_step < 1) throw UsageError("demo-lama: steps and images must be >= 1");
  if (o.ngf < 1 || o.n_downsampling < 1 || o.n_downsampling > 4 || o.n_blocks < 1)
    throw UsageError("demo-lama: ngf and n_blocks must be >= 1, n_downsampling 1..4");
  std::filesystem::create_directories(o.out_dir);
  const std::string cfg_text = demo_lama_config(o);
  const m::LamaConfig cfg = m::parse_lama_config(cfg_text, "demo-lama config.yaml");

  nn::TrainingScope training;
  m::LamaGenerator model(cfg);
  init_weights(*model, o.seed);
  TrainReport rep;
  auto opt = make_trainable_adamw(
      *model, [](const std::string&, const torch::Tensor& t) { return t.dim() >= 2; }, o.lr, o.weight_decay,
      rep.parameters);
  log_info("demo-lama: {} parameters (ngf {}, {} downsamplings, {} blocks), {} steps of {} images", rep.parameters,
           o.ngf, o.n_downsampling, o.n_blocks, o.steps, o.images_per_step);

  {
    torch::NoGradGuard ng;
    model->prepare(torch::kFloat32);  // the compute dtype; training runs the unfused layers:
  }
  model->set_batch_norm_training(true);  // BatchNorm on each batch's statistics, as the reference trains

  const std::filesystem::path log_path = o.out_dir / "train-log.tsv";
  std::string log_text = "step\tseconds\tlr\tloss\thole_psnr\n";
  world::Rng rng(o.seed * 0x9E3779B97F4A7C15ull + 29);
  const int sides[3] = {96, 128, 160};
  StepLoop loop("training demo-lama", o.steps, o.log_every, o.max_minutes);
  double acc_loss = 0, acc_psnr = 0;
  int acc_n = 0, acc_img = 0;
  while (loop.next()) {
    const std::int64_t step = loop.step();
    const double lr = warmup_cosine_lr(o.lr, step, o.steps, o.warmup);
    set_lr(*opt, lr);
    const int S = sides[step % 3];
    std::vector<torch::Tensor> in, tg, ho;
    for (int i = 0; i < o.images_per_step; ++i) {
      const auto seed = kTrainSeedBase + static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(o.images_per_step) +
                        static_cast<std::uint64_t>(i);
      Sample s = make_sample(seed, S, o.noise_share, rng);
      in.push_back(s.input);
      tg.push_back(s.target);
      ho.push_back(s.hole);
    }
    const auto input = torch::stack(in), target = torch::stack(tg), hole = torch::stack(ho);  // [B, 4|3|1, S, S]
    const auto pred = model->forward(input);  // [B, 3, S, S] in [0, 1]
    const auto n = (hole.sum({1, 2, 3}) * 3).clamp_min(1.0);  // hole values per image
    const auto diff = (pred - target) * hole;
    const auto mse_img = diff.pow(2).sum({1, 2, 3}) / n;  // [B]
    // outside the hole: L1 against the input image itself (the target there), per image
    const auto known = 1 - hole;
    const auto n_known = (known.sum({1, 2, 3}) * 3).clamp_min(1.0);
    const auto l1_known = ((pred - target).abs() * known).sum({1, 2, 3}) / n_known;
    const auto loss = (diff.abs().sum({1, 2, 3}) / n + mse_img + o.known_weight * l1_known).mean();
    opt->zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();

    acc_loss += loss.item<double>();
    ++acc_n;
    {
      const auto psnr = (10.0 * torch::log10(1.0 / mse_img.detach().clamp_min(1e-6))).clamp_max(60.0);
      acc_psnr += psnr.sum().item<double>();
      acc_img += static_cast<int>(psnr.size(0));
    }
    if (loop.end_step()) {
      rep.final_loss = acc_loss / acc_n;
      const double psnr = acc_psnr / std::max(1, acc_img);
      log_text += fmt::format("{}\t{:.1f}\t{:.3g}\t{:.5f}\t{:.2f}\n", step + 1, loop.seconds(), lr, rep.final_loss, psnr);
      log_info("demo-lama: step {} loss {:.5f} train hole PSNR {:.2f} dB ({:.0f} s)", step + 1, rep.final_loss, psnr,
               loop.seconds());
      write_file_atomic(log_path.string(), log_text);
      acc_loss = acc_psnr = 0;
      acc_n = acc_img = 0;
    }
  }
  model->set_batch_norm_training(false);
  rep.steps = loop.steps_run();
  rep.seconds = loop.seconds();

  const TensorMap tensors = trained_tensors(*model, o.fp16);
  save_tensors(o.out_dir / "generator.safetensors", tensors,
               {{"format", "pt"}, {"lli_demo", "demo-lama"}, {"steps", std::to_string(rep.steps)}, {"seed", std::to_string(o.seed)}});
  write_file_atomic((o.out_dir / "config.yaml").string(), cfg_text);
  log_info("demo-lama: {} steps in {:.0f} s, written to {}", rep.steps, rep.seconds, o.out_dir.string());
  return rep;
}

LamaEvalResult evaluate_demo_lama(const std::filesystem::path& model_dir, int scenes, std::uint64_t seed0,
                                  DTypeChoice dtype) {
  pipelines::LamaOptions lo;
  lo.dtype = dtype;
  pipelines::LamaInpainter lama(model_dir, lo);
  LamaEvalResult r;
  for (int s = 0; s < scenes; ++s) {
    const world::Scene sc = world::make_scene(seed0 + static_cast<std::uint64_t>(s));
    const int d = pipelines::default_dilate(sc.image.size());
    for (std::size_t k = 0; k < sc.objects.size(); ++k) {
      const cv::Mat hole = pipelines::dilate_mask(sc.objects[k].mask, d);
      if (cv::countNonZero(hole & others_mask(sc, k)) > 0) {
        ++r.skipped;
        continue;
      }
      const cv::Mat by_lama = lama.inpaint(sc.image, hole);
      TeleaOptions to;
      to.dilate = 0;
      const cv::Mat by_telea = inpaint_telea(sc.image, hole, to).image;
      const double pl = hole_psnr(by_lama, sc.background, hole), pt = hole_psnr(by_telea, sc.background, hole);
      auto& g = r.by_background[static_cast<std::size_t>(sc.bg)];
      g.psnr_lama += pl;
      g.psnr_telea += pt;
      g.lama_better += pl > pt ? 1 : 0;
      ++g.objects;
    }
  }
  for (auto& g : r.by_background)
    if (g.objects) {
      g.psnr_lama /= g.objects;
      g.psnr_telea /= g.objects;
    }
  return r;
}

}  // namespace lli::train
