// Segment Anything CPU benchmark (lli-segment's model path through pipelines/segment_sam.h).
//
//   bench_sam make-random DIR [--seed S]        a random-weight checkpoint with facebook/sam-vit-base's
//                                               shapes and config (config.json, model.safetensors,
//                                               preprocessor_config.json); for benchmarks only
//   bench_sam matmul|micro [--threads N]       matmul throughput / attention and elementwise pieces
//   bench_sam run DIR [--dtype f32|bf16] [--threads N] [--repeat R] [--decoder-repeat R]
//                     [--image PHOTO] [--everything-size 512] [--points-per-side 32] [--points-per-batch 4]
//                     [--skip-encoder] [--skip-everything]
//
// `run` measures: model load; the image encoder at the model's input size (a 1024x1024 image:
// first call and the median of the next R); the decoder per prompt against the cached embedding
// (one positive click with multimask best, one box with a single mask; decoder and post-processing
// to a 1024x1024 original separately); --everything on PHOTO resized to N x N (encoder + automatic
// mask generation). Output: one "name: value unit" line per metric (scripts/bench_sam.sh).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bench_profile.h"
#include "lli/device.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "bench_util.h"
#include "lli/tensor_io.h"
#include "models/sam.h"
#include "pipelines/segment_sam.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
namespace pl = lli::pipelines;
using namespace lli::bench;

// facebook/sam-vit-base config.json values (transformers 4.x export).
nlohmann::json vit_base_config() {
  return nlohmann::json::parse(R"({
  "architectures": ["SamModel"],
  "initializer_range": 0.02,
  "mask_decoder_config": {"attention_downsample_rate": 2, "hidden_act": "relu", "hidden_size": 256,
    "iou_head_depth": 3, "iou_head_hidden_dim": 256, "layer_norm_eps": 1e-06, "mlp_dim": 2048,
    "model_type": "", "num_attention_heads": 8, "num_hidden_layers": 2, "num_multimask_outputs": 3},
  "model_type": "sam",
  "prompt_encoder_config": {"hidden_act": "gelu", "hidden_size": 256, "image_embedding_size": 64,
    "image_size": 1024, "layer_norm_eps": 1e-06, "mask_input_channels": 16, "model_type": "",
    "num_point_embeddings": 4, "patch_size": 16},
  "torch_dtype": "float32",
  "vision_config": {"dropout": 0.0, "global_attn_indexes": [2, 5, 8, 11], "hidden_act": "gelu",
    "hidden_size": 768, "image_size": 1024, "initializer_factor": 1.0, "initializer_range": 1e-10,
    "layer_norm_eps": 1e-06, "mlp_dim": 3072, "mlp_ratio": 4.0, "model_type": "", "num_attention_heads": 12,
    "num_channels": 3, "num_hidden_layers": 12, "num_pos_feats": 128, "output_channels": 256,
    "patch_size": 16, "qkv_bias": true, "use_abs_pos": true, "use_rel_pos": true, "window_size": 14}
})");
}

const char* kPreprocessor = R"({
  "do_convert_rgb": true, "do_normalize": true, "do_pad": true, "do_rescale": true, "do_resize": true,
  "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "SamImageProcessor",
  "image_std": [0.229, 0.224, 0.225], "pad_size": {"height": 1024, "width": 1024},
  "processor_class": "SamProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
  "size": {"longest_edge": 1024}
})";

int make_random(const fs::path& dir, std::uint64_t seed) {
  fs::create_directories(dir);
  auto cfg_json = vit_base_config();
  lli::write_file_atomic((dir / "config.json").string(), cfg_json.dump(2) + "\n");
  lli::write_file_atomic((dir / "preprocessor_config.json").string(), std::string(kPreprocessor) + "\n");
  auto cfg = m::parse_sam_config(cfg_json, "config.json");
  m::SamModel model(cfg);
  auto gen = at::detail::createCPUGenerator(seed);
  lli::TensorMap tensors;
  std::int64_t n_params = 0;
  auto fill = [&](const std::string& name, const torch::Tensor& p) {
    torch::Tensor t;
    const auto last = name.substr(name.rfind('.') + 1);
    const bool norm = name.find("layer_norm") != std::string::npos || name.find("norm") != std::string::npos;
    if (name == "shared_image_embedding.positional_embedding") {
      t = torch::randn(p.sizes(), gen) * static_cast<double>(cfg.vision.hidden_size / 2);
    } else if (norm && last == "weight") {
      t = torch::ones(p.sizes());
    } else if (last == "bias") {
      t = torch::zeros(p.sizes());
    } else {
      t = torch::randn(p.sizes(), gen) * 0.02;
    }
    n_params += t.numel();
    tensors[name] = t.to(torch::kFloat32).contiguous();
  };
  for (const auto& p : model->named_parameters(true)) fill(p.key(), p.value());
  for (const auto& b : model->named_buffers(true)) fill(b.key(), b.value());
  lli::save_tensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  std::printf("wrote %s: %zu tensors, %.1f M parameters (random, seed %llu)\n", dir.string().c_str(), tensors.size(),
              n_params / 1e6, static_cast<unsigned long long>(seed));
  return 0;
}

cv::Mat synthetic_image(int w, int h) {
  cv::Mat img(h, w, CV_8UC3);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
  cv::GaussianBlur(img, img, cv::Size(0, 0), 3);
  return img;
}

struct RunOptions {
  std::string dtype = "bf16";
  int threads = 2;
  int repeat = 3;
  int decoder_repeat = 10;
  std::string image;
  int everything_size = 512;
  int points_per_side = 32;
  int points_per_batch = 4;
  bool skip_encoder = false;
  bool skip_everything = false;
  int profile_depth = -1;
  bool flush_denormal = false;
  bool malloc_tune = false;
};

int run(const fs::path& dir, const RunOptions& o) {
  if (o.flush_denormal) at::globalContext().setFlushDenormal(true);
  if (o.malloc_tune) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  lli::configure_threads(o.threads);
  metric("threads", o.threads, "");
  pl::SamOptions so;
  so.dtype = lli::parse_dtype(o.dtype);
  auto t0 = Clock::now();
  pl::SamSegmenter seg(dir, so);
  metric("load_ms", ms_since(t0), "ms");
  std::printf("model: %s\n", seg.describe().c_str());

  // Encoder at the model's input size.
  cv::Mat big = synthetic_image(1024, 1024);
  pl::SamEmbedding emb;
  if (o.profile_depth >= 0) {
    if (o.skip_encoder)
      emb = seg.compute_embedding(cv::Mat(64, 64, CV_8UC3, cv::Scalar(128, 128, 128)));
    else
      lli::bench::profile_ops("compute_embedding", [&] { emb = seg.compute_embedding(big); }, o.profile_depth);
    pl::SamPrompt p;
    p.points = {{512, 400, true}};
    seg.segment(emb, p);
    lli::bench::profile_ops("segment (1 point, best)", [&] { seg.segment(emb, p); }, o.profile_depth);
    pl::SamPrompt boxes;
    for (int i = 0; i < 16; ++i) boxes.boxes.push_back({10.0 + 20 * i, 10.0, 300.0 + 20 * i, 400.0});
    boxes.multimask = pl::SamMultimask::all;
    lli::bench::profile_ops("segment (16 boxes, all: the decoder batch of --everything)", [&] { seg.segment(emb, boxes); },
                o.profile_depth);
    return 0;
  }
  if (!o.skip_encoder) {
    std::vector<double> enc, total, cpu;
    for (int i = 0; i <= o.repeat; ++i) {
      auto t = Clock::now();
      const double c0 = cpu_ms();
      emb = seg.compute_embedding(big);
      const double ms = ms_since(t), c = cpu_ms() - c0;
      if (i == 0) {
        metric("encoder_first_ms", seg.timings().encoder_ms, "ms");
        metric("encoder_first_cpu_ms", c, "ms");
        metric("preprocess_ms", seg.timings().preprocess_ms, "ms");
      } else {
        enc.push_back(seg.timings().encoder_ms);
        total.push_back(ms);
        cpu.push_back(c);
      }
    }
    metric("encoder_median_ms", median(enc), "ms");
    metric("encoder_sys_ms_total", sys_ms(), "ms (kernel time so far: page faults)");
    metric("encoder_min_ms", *std::min_element(enc.begin(), enc.end()), "ms");
    metric("encoder_median_cpu_ms", median(cpu), "ms (process CPU time, 2 threads)");
    metric("embedding_total_median_ms", median(total), "ms");
  } else {
    emb = seg.compute_embedding(cv::Mat(64, 64, CV_8UC3, cv::Scalar(128, 128, 128)));
  }

  // Decoder per prompt with the cached embedding (original image 1024x1024).
  auto time_prompt = [&](const std::string& name, const pl::SamPrompt& p) {
    std::vector<double> dec, post, tot, cpu;
    const double s0 = sys_ms();
    const long f0 = minor_faults();
    for (int i = 0; i <= o.decoder_repeat; ++i) {
      auto t = Clock::now();
      const double c0 = cpu_ms();
      auto masks = seg.segment(emb, p);
      const double ms = ms_since(t), c = cpu_ms() - c0;
      if (i == 0) continue;  // warm-up
      dec.push_back(seg.timings().decoder_ms);
      post.push_back(seg.timings().postprocess_ms);
      tot.push_back(ms);
      cpu.push_back(c);
    }
    metric(name + "_decoder_ms", median(dec), "ms");
    metric(name + "_postprocess_ms", median(post), "ms");
    metric(name + "_total_ms", median(tot), "ms");
    metric(name + "_total_min_ms", *std::min_element(tot.begin(), tot.end()), "ms");
    metric(name + "_cpu_ms", median(cpu), "ms");
    metric(name + "_sys_ms_per_call", (sys_ms() - s0) / (o.decoder_repeat + 1), "ms (kernel time: page faults)");
    metric(name + "_minor_faults_per_call", static_cast<double>(minor_faults() - f0) / (o.decoder_repeat + 1), "");
  };
  pl::SamPrompt click;
  click.points = {{512, 400, true}};
  click.multimask = pl::SamMultimask::best;
  time_prompt("prompt_point_best", click);
  pl::SamPrompt box;
  box.boxes = {{200, 300, 700, 800}};
  box.multimask = pl::SamMultimask::off;
  time_prompt("prompt_box_single", box);
  pl::SamPrompt strokes;
  for (int i = 0; i < 16; ++i) strokes.points.push_back({300.0 + 20 * i, 500.0, true});
  strokes.multimask = pl::SamMultimask::off;
  time_prompt("prompt_16points_single", strokes);

  if (!o.skip_everything) {
    cv::Mat photo = o.image.empty() ? synthetic_image(o.everything_size, o.everything_size)
                                    : cv::imread(o.image, cv::IMREAD_COLOR);
    if (photo.empty()) throw lli::InputError(o.image + ": cannot read");
    cv::resize(photo, photo, cv::Size(o.everything_size, o.everything_size), 0, 0, cv::INTER_AREA);
    auto t = Clock::now();
    const double c0 = cpu_ms();
    auto e2 = seg.compute_embedding(photo);
    const double enc_ms = ms_since(t);
    pl::SamEverythingOptions eo;
    eo.points_per_side = o.points_per_side;
    eo.points_per_batch = o.points_per_batch;
    t = Clock::now();
    auto masks = seg.everything(e2, eo);
    const double ev_ms = ms_since(t);
    metric("everything_encoder_ms", enc_ms, "ms");
    metric("everything_masks_ms", ev_ms, "ms");
    metric("everything_decoder_ms", seg.timings().decoder_ms, "ms");
    metric("everything_postprocess_ms", seg.timings().postprocess_ms, "ms");
    metric("everything_total_ms", enc_ms + ev_ms, "ms");
    metric("everything_masks", static_cast<double>(masks.size()), "");
    metric("everything_total_cpu_ms", cpu_ms() - c0, "ms");
  }
  metric("peak_rss_mib", peak_rss_mib(), "MiB");
  return 0;
}

// Micro-benchmarks of the encoder's attention and elementwise pieces (bf16) and of the decoder's
// fp32 projections, for tuning.
int micro(int threads) {
  lli::configure_threads(threads);
  // Attention pieces of a global layer chunk (12 heads, R query rows, 4096 keys, d 64) in bf16.
  for (std::int64_t R : {256, 1024}) {
    std::printf("rows %lld\n", static_cast<long long>(R));
    const std::int64_t H = 12, L = 4096, d = 64;
    auto q = torch::randn({H, R, d}).to(torch::kBFloat16), k = torch::randn({H, L, d}).to(torch::kBFloat16);
    auto v = torch::randn({H, L, d}).to(torch::kBFloat16);
    auto rel_h = torch::randn({H, R, 64, 1}).to(torch::kBFloat16), rel_w = torch::randn({H, R, 1, 64}).to(torch::kBFloat16);
    auto timeit = [&](const char* name, double gflop, const std::function<void()>& f) {
      std::vector<double> t;
      for (int i = 0; i < 5; ++i) {
        auto t0 = Clock::now();
        f();
        t.push_back(ms_since(t0));
      }
      const double ms = median(t);
      std::printf("attn_%s: %.2f ms%s", name, ms, gflop > 0 ? "" : "\n");
      if (gflop > 0) std::printf(" (%.1f GFLOP/s)\n", gflop / ms * 1e3);
    };
    torch::Tensor s;
    const double qk = 2.0 * H * R * L * d / 1e9;
    timeit("bmm_qk", qk, [&] { s = torch::matmul(q, k.transpose(1, 2)); });
    timeit("mm_loop_qk", qk, [&] {
      s = torch::empty({H, R, L}, q.options());
      for (std::int64_t h = 0; h < H; ++h) { auto sh = s[h]; torch::mm_out(sh, q[h], k[h].t()); }
    });
    timeit("add_rel_broadcast", 0, [&] {
      auto s5 = s.view({H, R, 64, 64});
      s5.add_(rel_h);
      s5.add_(rel_w);
    });
    torch::Tensor p;
    timeit("softmax_fp32_to_bf16", 0, [&] { p = torch::softmax(s, -1, torch::kFloat32).to(torch::kBFloat16); });
    timeit("softmax_bf16", 0, [&] { p = torch::softmax(s, -1); });
    timeit("bmm_pv", qk, [&] { auto o = torch::matmul(p, v); });
    timeit("mm_loop_pv", qk, [&] {
      auto o = torch::empty({H, R, d}, q.options());
      for (std::int64_t h = 0; h < H; ++h) { auto oh = o[h]; torch::mm_out(oh, p[h], v[h]); }
    });
    auto pf = torch::softmax(s, -1, torch::kFloat32).to(torch::kBFloat16);
    auto pb = torch::softmax(s, -1);
    std::printf("softmax bf16 vs fp32->bf16: %lld of %lld elements differ, max %g\n",
                static_cast<long long>(pf.ne(pb).sum().item<std::int64_t>()), static_cast<long long>(pf.numel()),
                (pf.to(torch::kFloat32) - pb.to(torch::kFloat32)).abs().max().item<double>());
  }
  // One global attention layer (12 heads, 4096 tokens, d 64) in bf16: the reference's eager
  // formulation vs chunked variants; minimum over 3 runs (robust to other load).
  {
    const std::int64_t H = 12, L = 4096, d = 64;
    auto q = torch::randn({H, L, d}).to(torch::kBFloat16), k = torch::randn({H, L, d}).to(torch::kBFloat16);
    auto v = torch::randn({H, L, d}).to(torch::kBFloat16);
    auto rh = torch::randn({H, L, 64}).to(torch::kBFloat16), rw = torch::randn({H, L, 64}).to(torch::kBFloat16);
    auto j = torch::arange(L);
    auto onehot = torch::cat({torch::one_hot(j.div(64, "floor"), 64), torch::one_hot(j.remainder(64), 64)}, 1)
                      .to(torch::kBFloat16);
    auto qf = torch::cat({q * 0.125, rh, rw}, -1), kf = torch::cat({k, onehot.expand({H, L, 128})}, -1);
    auto timeit = [&](const std::string& name, const std::function<void()>& f) {
      std::vector<double> t;
      for (int i = 0; i < 3; ++i) {
        auto t0 = Clock::now();
        f();
        t.push_back(ms_since(t0));
      }
      std::printf("global_layer_%s: %.1f ms (min of 3)\n", name.c_str(), *std::min_element(t.begin(), t.end()));
    };
    timeit("reference_eager", [&] {
      auto sc = torch::matmul(q * 0.125, k.transpose(1, 2));
      sc = (sc.view({H, 64, 64, 64, 64}) + rh.view({H, 64, 64, 64, 1}) + rw.view({H, 64, 64, 1, 64})).view({H, L, L});
      auto p = torch::softmax(sc, -1, torch::kFloat32).to(torch::kBFloat16);
      auto o = torch::matmul(p, v);
    });
    for (std::int64_t R : {85, 256, 1024}) {
      timeit("folded_batched_" + std::to_string(R) + "rows", [&] {
        for (std::int64_t s0 = 0; s0 < L; s0 += R) {
          const auto n = std::min<std::int64_t>(R, L - s0);
          auto p = torch::softmax(torch::matmul(qf.narrow(1, s0, n), kf.transpose(1, 2)), -1);
          auto o = torch::matmul(p, v);
        }
      });
      timeit("folded_per_head_" + std::to_string(R) + "rows", [&] {
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t s0 = 0; s0 < L; s0 += R) {
            const auto n = std::min<std::int64_t>(R, L - s0);
            auto p = torch::softmax(torch::matmul(qf[h].narrow(0, s0, n), kf[h].t()), -1);
            auto o = torch::matmul(p, v[h]);
          }
      });
    }
    timeit("qk_only_per_head_1024", [&] {
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t s0 = 0; s0 < L; s0 += 1024) auto sc = torch::matmul(qf[h].narrow(0, s0, 1024), kf[h].t());
    });
    auto sc = torch::matmul(qf[0].narrow(0, 0, 1024), kf[0].t());
    timeit("softmax_only_per_head_1024", [&] {
      for (int i = 0; i < 48; ++i) auto p = torch::softmax(sc, -1);
    });
  }
  // fp32 decoder-sized linear [4096, 256] x [256, 128]^T: BLAS vs oneDNN (mkldnn tensors, 1x1 conv).
  {
    auto x = torch::randn({1, 4096, 256}), w = torch::randn({128, 256}), b = torch::randn({128});
    auto timeit = [&](const char* name, const std::function<torch::Tensor()>& f) {
      std::vector<double> t;
      torch::Tensor y;
      for (int i = 0; i < 7; ++i) {
        auto t0 = Clock::now();
        y = f();
        t.push_back(ms_since(t0));
      }
      const double ms = *std::min_element(t.begin(), t.end());
      std::printf("f32_linear_%s: %.3f ms (%.1f GFLOP/s), max diff vs blas %g\n", name, ms, 2.0 * 4096 * 256 * 128 / ms / 1e6,
                  (y - torch::linear(x, w, b)).abs().max().item<double>());
    };
    timeit("blas", [&] { return torch::linear(x, w, b); });
    auto wm = w.to_mkldnn();
    timeit("mkldnn", [&] { return torch::mkldnn_linear(x.view({4096, 256}).to_mkldnn(), wm, b).to_dense().view({1, 4096, 128}); });
    auto wc = w.view({128, 256, 1, 1});
    timeit("conv1x1", [&] {
      auto x4 = x.view({1, 4096, 1, 256}).permute({0, 3, 1, 2});
      return torch::conv2d(x4, wc, b).permute({0, 2, 3, 1}).reshape({1, 4096, 128});
    });
  }
  // Elementwise pieces of a layer ([4096, 768] / [4096, 3072]) in bf16.
  {
    auto timeit = [&](const char* name, const std::function<void()>& f) {
      std::vector<double> t;
      for (int i = 0; i < 7; ++i) {
        auto t0 = Clock::now();
        f();
        t.push_back(ms_since(t0));
      }
      std::printf("elt_%s: %.2f ms\n", name, median(t));
    };
    auto x = torch::randn({1, 64, 64, 768}).to(torch::kBFloat16);
    auto w = torch::randn({768}).to(torch::kBFloat16), b = torch::randn({768}).to(torch::kBFloat16);
    auto wf = w.to(torch::kFloat32), bf = b.to(torch::kFloat32);
    torch::Tensor y1, y2;
    timeit("layer_norm_bf16", [&] { y1 = torch::layer_norm(x, {768}, w, b, 1e-6); });
    timeit("layer_norm_via_f32", [&] { y2 = torch::layer_norm(x.to(torch::kFloat32), {768}, wf, bf, 1e-6).to(torch::kBFloat16); });
    std::printf("layer_norm bf16 vs via f32: %lld of %lld differ\n", static_cast<long long>(y1.ne(y2).sum().item<std::int64_t>()),
                static_cast<long long>(y1.numel()));
    auto h = torch::randn({4096, 3072}).to(torch::kBFloat16);
    timeit("gelu_bf16", [&] { y1 = torch::gelu(h); });
    timeit("gelu_via_f32", [&] { y2 = torch::gelu(h.to(torch::kFloat32)).to(torch::kBFloat16); });
    std::printf("gelu bf16 vs via f32: %lld of %lld differ\n", static_cast<long long>(y1.ne(y2).sum().item<std::int64_t>()),
                static_cast<long long>(y1.numel()));
    timeit("add_bf16", [&] { y1 = x + x; });
    timeit("permute_copy_bf16", [&] { y1 = x.view({1, 4, 16, 4, 16, 768}).permute({0, 1, 3, 2, 4, 5}).contiguous(); });
  }
  return 0;
}

// Matmul throughput of the encoder's shapes (qkv projection of a 1024 input: [4096, 768] x [768, 2304]).
int matmul(int threads, bool tune) {
  lli::configure_threads(threads);
  if (tune) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto a = torch::randn({4096, 768}).to(dt), b = torch::randn({2304, 768}).to(dt);
    std::vector<double> v;
    for (int i = 0; i < 6; ++i) {
      auto t = Clock::now();
      auto c = torch::linear(a, b);
      v.push_back(ms_since(t));
    }
    const double ms = median(v);
    metric(std::string("matmul_") + (dt == torch::kFloat32 ? "f32" : "bf16") + "_gflops", 2.0 * 4096 * 768 * 2304 / ms / 1e6,
           "GFLOP/s");
  }
  // Fresh-memory cost: allocate + fill a new buffer each time (what an eager op's output costs).
  for (std::int64_t mib : {4, 16, 64, 256}) {
    std::vector<double> v;
    for (int i = 0; i < 5; ++i) {
      auto t = Clock::now();
      auto x = torch::empty({mib << 18}, torch::kFloat32);
      x.fill_(1.0f);
      v.push_back(ms_since(t));
    }
    metric("alloc_fill_" + std::to_string(mib) + "MiB_GBps", static_cast<double>(mib) / 1024.0 / (median(v) / 1e3), "GB/s");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"SAM benchmark"};
  app.require_subcommand(1);
  auto* mk = app.add_subcommand("make-random", "write a random-weight sam-vit-base-shaped checkpoint");
  std::string mk_dir;
  std::uint64_t seed = 0;
  mk->add_option("dir", mk_dir)->required();
  mk->add_option("--seed", seed);
  auto* rn = app.add_subcommand("run", "benchmark a checkpoint directory");
  std::string run_dir;
  RunOptions o;
  rn->add_option("dir", run_dir)->required();
  rn->add_option("--dtype", o.dtype);
  rn->add_option("--threads", o.threads);
  rn->add_option("--repeat", o.repeat);
  rn->add_option("--decoder-repeat", o.decoder_repeat);
  rn->add_option("--image", o.image);
  rn->add_option("--everything-size", o.everything_size);
  rn->add_option("--points-per-side", o.points_per_side);
  rn->add_option("--points-per-batch", o.points_per_batch);
  rn->add_flag("--skip-encoder", o.skip_encoder);
  rn->add_flag("--skip-everything", o.skip_everything);
  rn->add_flag("--flush-denormal", o.flush_denormal);
  rn->add_flag("--malloc-tune", o.malloc_tune, "mallopt: mmap threshold 32 MiB, trim threshold 1 GiB");
  rn->add_option("--profile-depth", o.profile_depth, "profile one encoder and one decoder call, then stop");
  auto* mc = app.add_subcommand("micro", "attention / elementwise / fp32 projection micro-benchmarks");
  int mc_threads = 2;
  mc->add_option("--threads", mc_threads);
  auto* mm = app.add_subcommand("matmul", "fp32 / bf16 matmul throughput, fresh-memory cost");
  int mm_threads = 2;
  bool mm_tune = false;
  mm->add_option("--threads", mm_threads);
  mm->add_flag("--malloc-tune", mm_tune);
  CLI11_PARSE(app, argc, argv);
  try {
    if (mk->parsed()) return make_random(mk_dir, seed);
    if (mm->parsed()) return matmul(mm_threads, mm_tune);
    if (mc->parsed()) return micro(mc_threads);
    return run(run_dir, o);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return static_cast<int>(e.code());
  }
}
