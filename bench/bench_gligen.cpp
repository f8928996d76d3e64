// GLIGEN / Stable Diffusion CPU benchmark (lli-generate's model path): the UNet step and the VAE
// decode at SD-1.4 + GLIGEN shapes (checkpoint from bench/make_random_gligen).
//
//   bench_gligen DIR [--dtype f32|bf16] [--threads N] [--repeat R] [--size 512] [--batch 2]
//                    [--boxes 2] [--skip-unet] [--skip-vae] [--vae-tiling] [--q-chunk N]
//                    [--profile-depth D]
//
// Measures, for one compute dtype per process (so the peak RSS is that dtype's): model loads; one
// UNet step = position net (boxes padded to 30 objects, the first half of the batch unconditional
// with masks 0, as the pipeline's CFG batch) + UNet forward with the fuser, at SIZE/8 latents and
// 77 text tokens (first call, then the median and minimum of R more); the same step without
// grounding (the scheduled-sampling steps after beta); VAE decode of one SIZE x SIZE image. Peak RSS
// (VmHWM) after loading and at the end. Output: one "name: value unit" line per metric
// (scripts/bench_gligen.sh).
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bench_profile.h"
#include "bench_util.h"
#include "lli/device.h"
#include "lli/error.h"
#include "models/unet.h"
#include "models/vae.h"
#include "nn/attention.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using namespace lli::bench;

// VmHWM / VmRSS from /proc/self/status, MiB.
double status_mib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  return 0;
}
// Resets VmHWM to the current RSS (Linux >= 4.0).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Operator timings at SD-1.4 level-0 shapes (batch 2, 64x64 latents): best wall and CPU ms of 3.
void micro() {
  torch::NoGradGuard ng;
  auto bf = torch::kBFloat16;
  auto time = [](const std::string& name, double gflop, const std::function<void()>& f) {
    f();
    double best = 1e30, best_cpu = 1e30;
    for (int i = 0; i < 3; ++i) {
      const auto c0 = cpu_ms();
      auto t0 = Clock::now();
      f();
      best = std::min(best, ms_since(t0));
      best_cpu = std::min(best_cpu, cpu_ms() - c0);
    }
    std::printf("micro %-44s %8.2f ms wall %8.2f ms cpu", name.c_str(), best, best_cpu);
    if (gflop > 0) std::printf("  %6.0f GFLOP/s", gflop / best * 1e3);
    std::printf("\n");
    std::fflush(stdout);
  };
  for (auto [C, H] : std::vector<std::pair<std::int64_t, std::int64_t>>{{320, 64}, {640, 32}, {1280, 16}}) {
    auto x = torch::randn({2, C, H, H}).to(bf), w = (torch::randn({C, C, 3, 3}) * 0.02).to(bf), b = torch::zeros({C}, bf);
    const double gf = 2.0 * 2 * C * C * 9 * H * H / 1e9;
    const auto tag = " C" + std::to_string(C) + " H" + std::to_string(H);
    time("conv3x3 NCHW" + tag, gf, [&] { torch::conv2d(x, w, b, 1, 1); });
    auto xc = x.contiguous(at::MemoryFormat::ChannelsLast), wc = w.contiguous(at::MemoryFormat::ChannelsLast);
    time("conv3x3 NHWC" + tag, gf, [&] { torch::conv2d(xc, wc, b, 1, 1); });
    auto g = torch::ones({C}, bf);
    time("group_norm NCHW" + tag, 0, [&] { torch::group_norm(x, 32, g, b, 1e-5); });
    time("group_norm NHWC" + tag, 0, [&] { torch::group_norm(xc, 32, g, b, 1e-5); });
    time("silu NCHW" + tag, 0, [&] { torch::silu(x); });
    const auto L = H * H, inner = C;
    auto t = torch::randn({2, L, C}).to(bf);
    auto w1 = (torch::randn({8 * C, C}) * 0.02).to(bf), w2 = (torch::randn({C, 4 * C}) * 0.02).to(bf);
    time("linear C->8C" + tag, 2.0 * 2 * L * C * 8 * C / 1e9, [&] { torch::linear(t, w1); });
    if (C == 320) {
      auto t2 = t.view({2 * L, C});
      time("linear C->8C 2-D" + tag, 2.0 * 2 * L * C * 8 * C / 1e9, [&] { torch::linear(t2, w1); });
      auto outb = torch::empty({2 * L, 8 * C}, t.options());
      time("linear C->8C into a kept buffer" + tag, 2.0 * 2 * L * C * 8 * C / 1e9,
           [&] { torch::mm_out(outb, t2, w1.t()); });
      time("linear C->8C 1024-row chunks, kept buffer" + tag, 2.0 * 2 * L * C * 8 * C / 1e9, [&] {
        for (std::int64_t r = 0; r < 2 * L; r += 1024) { auto o = outb.narrow(0, r, 1024); torch::mm_out(o, t2.narrow(0, r, 1024), w1.t()); }
      });
      auto w1t = w1.t().contiguous();
      time("linear C->8C 1024-row chunks, W^T contiguous" + tag, 2.0 * 2 * L * C * 8 * C / 1e9, [&] {
        for (std::int64_t r = 0; r < 2 * L; r += 1024) { auto o = outb.narrow(0, r, 1024); torch::mm_out(o, t2.narrow(0, r, 1024), w1t); }
      });
    }
    auto hmid = torch::randn({2, L, 4 * C}).to(bf);
    time("linear 4C->C" + tag, 2.0 * 2 * L * C * 4 * C / 1e9, [&] { torch::linear(hmid, w2); });
    auto hh = torch::randn({2, L, 8 * C}).to(bf);
    time("geglu gelu*mul" + tag, 0, [&] {
      auto p = hh.chunk(2, -1);
      auto r = p[0] * torch::gelu(p[1]);
    });
    auto lw = torch::ones({C}, bf);
    time("layer_norm" + tag, 0, [&] { torch::layer_norm(t, {C}, lw, b, 1e-5); });
    const std::int64_t heads = 8, D = inner / heads;
    auto q = torch::randn({2, heads, L, D}).to(bf), k = torch::randn({2, heads, L, D}).to(bf), v = torch::randn({2, heads, L, D}).to(bf);
    lli::nn::AttentionOptions o;
    o.scale = 1.0 / std::sqrt(static_cast<double>(D));
    o.softmax_fp32 = true;
    time("attention (fused bf16)" + tag, 2.0 * 2 * 2 * heads * L * L * D / 1e9, [&] { lli::nn::attention(q, k, v, {}, o); });
  }
}

struct Options {
  std::string dtype = "bf16";
  int threads = 2;
  int repeat = 2;
  int size = 512;
  int batch = 2;
  int boxes = 2;
  bool skip_unet = false, skip_vae = false, vae_tiling = false;
  std::int64_t q_chunk = -1;  // -1: the load options' default
  int profile_depth = -1;
  bool micro = false;
};

// Times f: first call, then `repeat` more; prints <name>_{first,median,min}_ms, the CPU time and
// minor page faults of the median call.
void timed(const std::string& name, int repeat, const std::function<void()>& f) {
  auto t0 = Clock::now();
  f();
  metric(name + "_first_ms", ms_since(t0), "ms");
  std::vector<double> v, cpu, faults;
  for (int i = 0; i < repeat; ++i) {
    const auto c0 = cpu_ms();
    const auto f0 = minor_faults();
    t0 = Clock::now();
    f();
    v.push_back(ms_since(t0));
    cpu.push_back(cpu_ms() - c0);
    faults.push_back(static_cast<double>(minor_faults() - f0));
  }
  if (!v.empty()) {
    metric(name + "_median_ms", median(v), "ms");
    metric(name + "_min_ms", *std::min_element(v.begin(), v.end()), "ms");
    metric(name + "_cpu_median_ms", median(cpu), "ms");
    metric(name + "_minor_faults_median", median(faults), "");
  }
}

int run(const fs::path& dir, const Options& o) {
  lli::configure_threads(o.threads);
  metric("threads", o.threads, "");
  if (o.micro) {
    micro();
    return 0;
  }
  const auto dchoice = lli::parse_dtype(o.dtype);
  if (dchoice != lli::DTypeChoice::f32 && dchoice != lli::DTypeChoice::bf16)
    throw lli::UsageError("--dtype must be f32 or bf16");
  const torch::Dtype dtype = dchoice == lli::DTypeChoice::bf16 ? torch::kBFloat16 : torch::kFloat32;
  std::printf("dtype: %s\n", o.dtype.c_str());
  auto gen = at::detail::createCPUGenerator(0);
  const std::int64_t h = o.size / 8, B = o.batch;

  if (!o.skip_unet) {
    m::UNetLoadOptions lo;
    lo.dtype = dtype;
    if (o.q_chunk >= 0) lo.attention_q_chunk = o.q_chunk;
    auto t0 = Clock::now();
    auto unet = m::load_unet(dir / "unet", lo);
    metric("unet_load_ms", ms_since(t0), "ms");
    metric("unet_peak_rss_after_load_mib", status_mib("VmHWM"), "MiB");
    lli::bench::allocator_metrics();
    reset_peak_rss();
    const auto D = unet->cfg.cross_attention_dim;
    auto sample = torch::randn({B, unet->cfg.in_channels, h, h}, gen);
    auto ehs = torch::randn({B, 77, D}, gen);
    // Pipeline CFG batch: the first half unconditional (masks 0), boxes zero-padded to 30.
    auto boxes = torch::zeros({B, 30, 4});
    auto masks = torch::zeros({B, 30});
    auto phrases = torch::zeros({B, 30, unet->cfg.position_net.positive_len});
    for (std::int64_t b = B / 2; b < B; ++b)
      for (int k = 0; k < o.boxes && k < 30; ++k) {
        boxes[b][k] = torch::tensor({0.1f + 0.05f * k, 0.2f, 0.5f + 0.05f * k, 0.8f});
        masks[b][k] = 1;
        phrases[b][k] = torch::randn({unet->cfg.position_net.positive_len}, gen);
      }
    auto step = [&](bool grounding) {
      torch::Tensor objs;
      if (grounding && unet->has_gligen()) objs = unet->position_net_forward(boxes, masks, phrases);
      auto out = unet->forward(sample, 981.0, ehs, objs);
      if (!torch::isfinite(out).all().item<bool>()) throw lli::RuntimeError("non-finite UNet output");
    };
    if (o.profile_depth >= 0) {
      step(true);
      lli::bench::profile_ops("unet step (grounding)", [&] { step(true); }, o.profile_depth);
    }
    timed("unet_step", o.repeat, [&] { step(true); });
    timed("unet_step_no_grounding", std::max(0, o.repeat - 1), [&] { step(false); });
    metric("unet_peak_rss_steps_mib", status_mib("VmHWM"), "MiB");
    lli::bench::allocator_metrics();
  }

  if (!o.skip_vae) {
    m::VAELoadOptions lo;
    lo.dtype = dtype;
    if (o.q_chunk >= 0) lo.attention_q_chunk = o.q_chunk;
    auto t0 = Clock::now();
    auto vae = m::load_vae(dir / "vae", lo);
    metric("vae_load_ms", ms_since(t0), "ms");
    auto z = torch::randn({1, vae->cfg.latent_channels, h, h}, gen);
    m::VAETiling tiling;
    tiling.enabled = o.vae_tiling;
    auto decode = [&] {
      auto x = vae->decode(z, tiling);
      if (!torch::isfinite(x).all().item<bool>()) throw lli::RuntimeError("non-finite VAE output");
    };
    if (o.profile_depth >= 0) {
      decode();
      lli::bench::profile_ops("vae decode", decode, o.profile_depth);
    }
    timed("vae_decode", o.repeat, decode);
  }
  metric("peak_rss_mib", status_mib("VmHWM"), "MiB");
  metric("rss_mib", status_mib("VmRSS"), "MiB");
  lli::bench::allocator_metrics();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GLIGEN / SD UNet step and VAE decode benchmark (random-weight checkpoint)"};
  std::string dir;
  Options o;
  app.add_option("dir", dir, "checkpoint directory with unet/ and vae/ (bench/make_random_gligen)")->required();
  app.add_option("--dtype", o.dtype, "compute dtype: f32 or bf16");
  app.add_option("--threads", o.threads, "intra-op threads");
  app.add_option("--repeat", o.repeat, "timed repetitions after the first call");
  app.add_option("--size", o.size, "image side in pixels (latents: size / 8)");
  app.add_option("--batch", o.batch, "UNet batch (2 = one image with classifier-free guidance)");
  app.add_option("--boxes", o.boxes, "grounding boxes per conditional sample");
  app.add_flag("--skip-unet", o.skip_unet, "no UNet");
  app.add_flag("--skip-vae", o.skip_vae, "no VAE");
  app.add_flag("--vae-tiling", o.vae_tiling, "tiled VAE decode (diffusers' enable_tiling)");
  app.add_option("--q-chunk", o.q_chunk, "attention query chunk (default: the load options')");
  app.add_option("--profile-depth", o.profile_depth, "print an operator profile at this nesting depth");
  app.add_flag("--micro", o.micro, "operator timings at SD level shapes instead (DIR unused)");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(dir, o);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "bench_gligen: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gligen: %s\n", e.what());
    return 5;
  }
}
