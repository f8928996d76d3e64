// LLaVA-1.5 CPU benchmark (lli-chat's model path, bf16): machine limits measured here (bf16 matmul
// peak, memory read bandwidth), checkpoint load (cold and warm page cache; bf16 weights are mapped
// and used in place), vision encoder time per image, prefill tokens/s for a ~600-token prompt,
// decode tokens/s against the memory-bandwidth bound, peak RSS.
//
//   bench_llava CKPT_DIR [--threads N] [--repeat R] [--decode-tokens T] [--cold] [--weights mmap|copy]
//                        [--fast-bf16 on|off|both] [--skip-vision] [--skip-prefill]
//
// --weights copy reads the checkpoint into huge-page memory (lli-chat --weights copy); the first
// vision pass and prefill of the process are timed right after the load, before anything else
// touches the weights, and the linears of both towers are timed against torch::mm on fresh
// (anonymous, huge-page) tensors of the same shapes: the GEMM rate the same library reaches.
//
// --fast-bf16 both (default) measures everything both ways, alternating run by run: with
// libtorch's own kernels ("off": the code path before nn/linear_bf16.h and nn/attention_bf16.h)
// and with them ("on").
// Output: one "name: value unit" line per metric (scripts/bench_llava.sh collects them).
// Ref: llama.cpp llama-bench (pp/tg), the methodology only.
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "bench_profile.h"
#include "lli/device.h"
#include "lli/error.h"
#include "models/llava.h"
#include "nn/linear_bf16.h"
#include "nn/quant_linear.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BENCH_AVX512 1
#else
#define BENCH_AVX512 0
#endif

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
double minimum(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }

void metric(const std::string& name, double value, const char* unit) {
  std::printf("%-44s %12.3f %s\n", (name + ":").c_str(), value, unit);
  std::fflush(stdout);
}
void note(const std::string& s) {
  std::printf("# %s\n", s.c_str());
  std::fflush(stdout);
}

// ---- machine limits -------------------------------------------------------------------------

// XOR of all 64-byte blocks of [p, p + n): a pure read (integer ops: no float assists), done as
// 4 interleaved streams over the quarters of the range. One linear stream per thread reaches
// only ~2/3 of the memory bandwidth here (the hardware prefetchers follow a stream only within a
// 4 KiB page); several concurrent streams per thread measure the real bound (~43-45 GB/s on these
// 2-core VMs against ~30 GB/s for one stream per thread).
#if BENCH_AVX512
__attribute__((target("avx512f"))) std::uint64_t xor_stream(const char* p, std::size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  std::uint64_t s = 0;
  std::size_t i = 0;
  const std::size_t lead = std::min(n, (64 - reinterpret_cast<std::uintptr_t>(p) % 64) % 64);
  for (; i < lead; ++i) s ^= static_cast<unsigned char>(p[i]);
  const std::size_t q = (n - lead) / 256 * 64;  // bytes per stream, a multiple of 64
  const char* b = p + lead;
  for (std::size_t j = 0; j < q; j += 64) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(b + j));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(b + q + j));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(b + 2 * q + j));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(b + 3 * q + j));
  }
  for (i = lead + 4 * q; i < n; ++i) s ^= static_cast<unsigned char>(p[i]);
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, a0);
  for (auto l : lanes) s ^= l;
  return s;
}
#endif
std::uint64_t xor_stream_any(const char* p, std::size_t n) {
#if BENCH_AVX512
  if (__builtin_cpu_supports("avx512f")) return xor_stream(p, n);
#endif
  std::uint64_t s = 0;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, p + i, 8);
    s ^= v;
  }
  for (; i < n; ++i) s ^= static_cast<unsigned char>(p[i]);
  return s;
}

// Reads every byte of the regions once, split evenly over the intra-op threads.
struct Region {
  const char* p;
  std::size_t n;
};
std::uint64_t read_regions(const std::vector<Region>& regions) {
  std::size_t total = 0;
  for (const auto& r : regions) total += r.n;
  const int nt = at::get_num_threads();
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(nt), 0);
  at::parallel_for(0, nt, 1, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      // Thread t reads the byte range [total*t/nt, total*(t+1)/nt) of the concatenation.
      const std::size_t b = total * static_cast<std::size_t>(t) / nt, e = total * static_cast<std::size_t>(t + 1) / nt;
      std::size_t off = 0;
      std::uint64_t s = 0;
      for (const auto& r : regions) {
        const std::size_t lo = std::max(b, off), hi = std::min(e, off + r.n);
        if (lo < hi) s ^= xor_stream_any(r.p + (lo - off), hi - lo);
        off += r.n;
      }
      sums[static_cast<std::size_t>(t)] = s;
    }
  });
  std::uint64_t s = 0;
  for (auto v : sums) s ^= v;
  return s;
}

volatile std::uint64_t g_sink = 0;

double measure_bf16_peak(int repeat) {
  const std::int64_t M = 2048, K = 4096, N = 4096;
  auto a = torch::randn({M, K}).to(torch::kBFloat16);
  auto b = torch::randn({K, N}).to(torch::kBFloat16);
  auto c = torch::mm(a, b);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = Clock::now();
    c = torch::mm(a, b);
    t.push_back(seconds_since(t0));
  }
  return 2.0 * M * K * N / minimum(t) / 1e9;
}

double measure_read_bandwidth(int repeat) {
  const std::size_t bytes = std::size_t(512) << 20;  // 512 MiB of fp32, far beyond the caches
  auto buf = torch::ones({static_cast<std::int64_t>(bytes / 4)}, torch::kFloat32);
  std::vector<Region> r{{static_cast<const char*>(buf.data_ptr()), bytes}};
  g_sink ^= read_regions(r);  // warm-up (pages already touched by ones())
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = Clock::now();
    g_sink ^= read_regions(r);
    t.push_back(seconds_since(t0));
  }
  return bytes / minimum(t) / 1e9;
}

// ---- checkpoint -----------------------------------------------------------------------------

std::vector<fs::path> checkpoint_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Drops the checkpoint's pages from the page cache (only these files; no global drop_caches).
void evict_from_page_cache(const std::vector<fs::path>& files) {
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

std::vector<Region> weight_regions(torch::nn::Module& model, const std::string& prefix = "") {
  std::vector<Region> r;
  auto add = [&](const torch::Tensor& t) {
    if (t.defined() && t.is_contiguous() && t.numel() > 0)
      r.push_back({static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel()) * t.element_size()});
  };
  for (const auto& p : model.named_parameters(/*recurse=*/true))
    if (prefix.empty() || p.key().compare(0, prefix.size(), prefix) == 0) add(p.value());  // quantized: a 0-stride view, skipped
  for (const auto& item : model.named_modules("", false))
    if (auto* l = dynamic_cast<lli::nn::LinearImpl*>(item.value().get()))
      if (l->qweight && (prefix.empty() || item.key().compare(0, prefix.size(), prefix) == 0))
        for (const auto* t : {&l->qweight->qs, &l->qweight->d, &l->qweight->sc, &l->qweight->mn, &l->qweight->row}) add(*t);
  return r;
}

std::size_t region_bytes(const std::vector<Region>& r) {
  std::size_t n = 0;
  for (const auto& x : r) n += x.n;
  return n;
}

// Bytes of parameters whose data lies inside a mapping of a .safetensors file (/proc/self/maps):
// those are used in place, zero-copy.
std::pair<std::size_t, std::size_t> bytes_in_place(torch::nn::Module& model) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> maps;
  if (FILE* f = std::fopen("/proc/self/maps", "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
      std::string s(line);
      while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
      if (s.size() < 12 || s.compare(s.size() - 12, 12, ".safetensors") != 0) continue;
      unsigned long lo = 0, hi = 0;
      if (std::sscanf(line, "%lx-%lx", &lo, &hi) == 2) maps.emplace_back(lo, hi);
    }
    std::fclose(f);
  }
  std::size_t in = 0, all = 0;
  for (const auto& p : model.named_parameters(true)) {
    const auto& t = p.value();
    if (!t.is_contiguous()) continue;  // a quantized linear's placeholder view
    const std::size_t n = static_cast<std::size_t>(t.numel()) * t.element_size();
    const auto a = reinterpret_cast<std::uintptr_t>(t.data_ptr());
    all += n;
    for (const auto& [lo, hi] : maps)
      if (a >= lo && a + n <= hi) {
        in += n;
        break;
      }
  }
  return {in, all};
}

// Page faults of this process so far (minor: memory touched for the first time or mapped pages
// not yet in the page table; major: read from disk).
struct Faults {
  long minor = 0, major = 0;
};
Faults faults_now() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {ru.ru_minflt, ru.ru_majflt};
}

// A "Name:   123 kB" field of a /proc file (/proc/self/status, /proc/self/smaps_rollup), in KiB
// (0 when absent).
long proc_kib(const char* path, const char* field) {
  long v = 0;
  if (FILE* f = std::fopen(path, "r")) {
    char line[256];
    const std::size_t n = std::strlen(field);
    while (std::fgets(line, sizeof line, f))
      if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
        v = std::atol(line + n + 1);
        break;
      }
    std::fclose(f);
  }
  return v;
}
long proc_status_kib(const char* field) { return proc_kib("/proc/self/status", field); }
long smaps_kib(const char* field) { return proc_kib("/proc/self/smaps_rollup", field); }

long peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// ---- FLOP counts (matmuls only) -------------------------------------------------------------

double vision_flops(const m::LlavaConfig& c) {
  const auto& v = c.vision;
  const double T = static_cast<double>(v.num_positions()), D = v.hidden_size, I = v.intermediate_size;
  const double P = v.num_patches(), C = v.num_channels, p = v.patch_size;
  const auto idx = c.feature_layer_indices();
  const double layers = static_cast<double>(*std::max_element(idx.begin(), idx.end()));
  const double per_layer = 2 * T * (4 * D * D + 2 * D * I) + 4 * T * T * D;
  const double Dv = D * static_cast<double>(idx.size()), Dt = c.text.hidden_size;
  const double N = static_cast<double>(c.tokens_per_image());
  return 2 * P * C * p * p * D + layers * per_layer + 2 * N * (Dv * Dt + Dt * Dt);
}

struct TextFlops {
  double linear, attention, head;
};
TextFlops prefill_flops(const m::LlamaConfig& t, double L) {
  const double D = t.hidden_size, F = t.intermediate_size, q = t.num_attention_heads * t.head_dim;
  const double kv = t.num_key_value_heads * t.head_dim;
  TextFlops f;
  f.linear = t.num_hidden_layers * 2 * L * (D * q + 2 * D * kv + q * D + 3 * D * F);
  f.attention = t.num_hidden_layers * 4 * L * L * q;  // eager attention computes all L x L scores
  f.head = 2 * D * t.vocab_size;                      // last position only
  return f;
}

// ---- model passes ---------------------------------------------------------------------------

torch::Tensor make_prompt_ids(const m::LlavaConfig& c, std::int64_t before, std::int64_t after, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> tok(3, std::min<std::int64_t>(c.text.vocab_size, 32000) - 1);
  std::vector<std::int64_t> ids{c.text.bos_token_id};
  for (std::int64_t i = 0; i < before; ++i) ids.push_back(tok(rng));
  for (std::int64_t i = 0; i < c.tokens_per_image(); ++i) ids.push_back(c.image_token_index);
  for (std::int64_t i = 0; i < after; ++i) ids.push_back(tok(rng));
  return torch::tensor(ids, torch::kInt64).unsqueeze(0);
}

struct DecodeRun {
  std::vector<double> step_s;  // per generated token (after the first, which comes from prefill)
  std::vector<std::int64_t> ids;
};

// Greedy decoding of `n` tokens starting from the logits' argmax; times every step.
DecodeRun decode(m::LlavaImpl& model, m::KVCache& cache, const torch::Tensor& first_logits, std::int64_t n) {
  torch::NoGradGuard ng;
  DecodeRun r;
  auto next = first_logits.reshape({-1}).argmax().item<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto x = model.language_model->embed(torch::tensor({next}, torch::kInt64).view({1, 1}));
    auto logits = model.logits(x, &cache, /*last_only=*/true);  // [1, 1, V]
    next = logits.reshape({-1}).argmax().item<std::int64_t>();
    r.step_s.push_back(seconds_since(t0));
    r.ids.push_back(next);
  }
  return r;
}

// Every linear weight of the language model (+ the output matrix) applied to one random row, as
// one decode step does: the GEMV part of decoding, without attention and elementwise work.
double gemv_pass_seconds(m::LlavaImpl& model, std::int64_t rows, int repeat) {
  torch::NoGradGuard ng;
  auto& lm = *model.language_model;
  std::vector<lli::nn::LinearImpl*> linears;
  for (const auto& mod : lm.modules(/*include_self=*/false))
    if (auto* l = dynamic_cast<lli::nn::LinearImpl*>(mod.get())) linears.push_back(l);
  const auto& head = lm.output_weight();
  std::map<std::int64_t, torch::Tensor> xs;  // one random input per width
  auto make_x = [&](std::int64_t k) {
    auto& x = xs[k];
    if (!x.defined()) x = torch::randn({1, rows, k}).to(torch::kBFloat16);
    return x;
  };
  std::vector<double> t;
  for (int it = 0; it < repeat + 1; ++it) {
    auto t0 = Clock::now();
    for (auto* l : linears) {
      auto x = make_x(l->weight.size(1));
      auto y = l->forward(x);
    }
    if (!lm.lm_head) {  // tied output matrix: not an nn::Linear
      auto x = make_x(head.size(1));
      auto y = lli::nn::linear(x, head);
    }
    if (it > 0) t.push_back(seconds_since(t0));  // first pass: warm-up
  }
  return minimum(t);
}

// Bytes of a linear's weight as stored (quantized: its arrays).
std::size_t weight_bytes(const lli::nn::LinearImpl& l) {
  if (l.qweight) return static_cast<std::size_t>(l.qweight->nbytes());
  return static_cast<std::size_t>(l.weight.numel()) * l.weight.element_size();
}

std::size_t gemv_pass_bytes(m::LlavaImpl& model) {
  std::size_t n = 0;
  auto& lm = *model.language_model;
  for (const auto& mod : lm.modules(false))
    if (auto* l = dynamic_cast<lli::nn::LinearImpl*>(mod.get())) n += weight_bytes(*l);
  if (!lm.lm_head) n += lm.output_weight().numel() * lm.output_weight().element_size();  // tied: the embedding
  return n;
}

// Every nn::Linear under `root` (optionally only the module names starting with `prefix`).
std::vector<lli::nn::LinearImpl*> linears_of(torch::nn::Module& root, const std::string& prefix = "") {
  std::vector<lli::nn::LinearImpl*> out;
  for (const auto& item : root.named_modules("", /*include_self=*/false))
    if (auto* l = dynamic_cast<lli::nn::LinearImpl*>(item.value().get()))
      if (item.key().compare(0, prefix.size(), prefix) == 0) out.push_back(l);
  return out;
}

// The linears applied to x [1, M, K] with their own weights through their forward (lli's dispatch),
// and the same shapes through torch::linear on fresh random weights (anonymous huge-page memory,
// never mapped from a file): the GEMM rate libtorch reaches on these shapes. Best of `repeat`.
struct LinearRates {
  double flops = 0, model_s = 0, fresh_s = 0;
};
LinearRates linear_rates(const std::vector<lli::nn::LinearImpl*>& linears, std::int64_t M, int repeat) {
  torch::NoGradGuard ng;
  LinearRates r;
  std::map<std::pair<std::int64_t, std::int64_t>, torch::Tensor> fresh;  // (N, K) -> weight
  std::map<std::int64_t, torch::Tensor> xs;
  for (auto* l : linears) {
    const auto N = l->weight.size(0), K = l->weight.size(1);
    r.flops += 2.0 * M * N * K;
    auto& w = fresh[{N, K}];
    if (!w.defined()) w = (torch::randn({N, K}) * 0.02).to(l->weight.scalar_type());
    auto& x = xs[K];
    if (!x.defined()) x = torch::randn({1, M, K}).to(l->weight.scalar_type());
  }
  std::vector<double> tm, tf;
  for (int it = 0; it < repeat + 1; ++it) {
    auto t0 = Clock::now();
    for (auto* l : linears) auto y = l->forward(xs[l->weight.size(1)]);
    const double a = seconds_since(t0);
    t0 = Clock::now();
    for (auto* l : linears) auto y = torch::linear(xs[l->weight.size(1)], fresh[{l->weight.size(0), l->weight.size(1)}]);
    const double b = seconds_since(t0);
    if (it > 0) {  // the first pass warms up
      tm.push_back(a);
      tf.push_back(b);
    }
  }
  r.model_s = minimum(tm);
  r.fresh_s = minimum(tf);
  return r;
}

void report_linear_rates(const std::string& what, const LinearRates& r) {
  metric(what + " linears, model weights (lli)", r.flops / r.model_s / 1e9, "GFLOP/s");
  metric(what + " linears, torch::linear on fresh weights", r.flops / r.fresh_s / 1e9, "GFLOP/s");
  metric("  ratio lli / torch", r.fresh_s / r.model_s, "");
}

struct Options {
  std::string dir;
  int threads = 0;
  int repeat = 3;
  std::int64_t decode_tokens = 64;
  std::int64_t text_before = 5, text_after = 19;  // "USER: <image>\n... ASSISTANT:" around the image
  bool cold = false;
  std::string fast = "both";
  bool skip_vision = false, skip_prefill = false, skip_gemv = false;
  bool profile = false;
  std::string weights = "mmap";
  std::string quantize;
};

void run(const Options& o) {
  const int nt = lli::configure_threads(o.threads);
  note("threads " + std::to_string(nt) + ", AVX512-BF16 " + (lli::cpu_has_avx512_bf16() ? "yes" : "no") +
       ", GLIBC_TUNABLES=" + (std::getenv("GLIBC_TUNABLES") ? std::getenv("GLIBC_TUNABLES") : "") +
       ", LLI_FAST_BF16=" + (std::getenv("LLI_FAST_BF16") ? std::getenv("LLI_FAST_BF16") : ""));
  torch::NoGradGuard ng;

  const double peak = measure_bf16_peak(5);
  metric("bf16 matmul peak (torch::mm 2048x4096x4096)", peak, "GFLOP/s");
  const double bw = measure_read_bandwidth(15);
  metric("memory read bandwidth (512 MiB, all threads)", bw, "GB/s");

  // ---- load: cold and warm page cache ----
  const auto files = checkpoint_files(o.dir);
  std::size_t file_bytes = 0;
  for (const auto& f : files) file_bytes += fs::file_size(f);
  note("checkpoint " + o.dir + ": " + std::to_string(files.size()) + " safetensors file(s), " +
       std::to_string(file_bytes / 1000000) + " MB");
  m::LlavaLoadOptions lo;
  lo.dtype = torch::kBFloat16;
  lo.weights = o.weights == "copy" ? lli::st::Residency::copy : lli::st::Residency::mmap;
  if (!o.quantize.empty()) {
    lli::nn::quant::QType qt;
    lli::nn::quant::parse_qtype(o.quantize, &qt);
    lo.quantize = qt;
  }
  note("weights: " + o.weights + (o.quantize.empty() ? "" : ", quantized at load to " + o.quantize));
  if (o.cold) {
    {
      evict_from_page_cache(files);
      auto t0 = Clock::now();
      auto model = m::load_llava(o.dir, lo);
      const double load_s = seconds_since(t0);
      auto regions = weight_regions(*model);
      t0 = Clock::now();
      g_sink ^= read_regions(regions);
      const double touch_s = seconds_since(t0);
      metric("load, cold page cache (open+map+bind)", load_s, "s");
      metric("first read of all weights, cold (disk)", touch_s, "s");
      metric("  = disk read rate", region_bytes(regions) / touch_s / 1e9, "GB/s");
    }
  }
  auto t0 = Clock::now();
  auto model = m::load_llava(o.dir, lo);
  const double warm_load_s = seconds_since(t0);
  note("language model weights: " + m::llava_weight_format(*model));
  metric(std::string("load") + (o.cold ? ", warm page cache" : "") + " (open+" + (o.weights == "copy" ? "read" : "map") +
             "+bind)",
         warm_load_s, "s");
  {
    // What lli-chat does first: one image, one prompt, nothing touched the weights before.
    auto ids = make_prompt_ids(model->cfg, o.text_before, o.text_after, 1234);
    auto px = torch::randn({1, model->cfg.vision.num_channels, model->cfg.vision.image_size, model->cfg.vision.image_size});
    auto cache = model->make_cache(ids.size(1) + 8);
    auto f0 = faults_now();
    t0 = Clock::now();
    auto f = model->image_features(px);
    metric("vision encoder, first in the process", seconds_since(t0), "s");
    metric("  page faults (minor)", static_cast<double>(faults_now().minor - f0.minor), "");
    auto e = model->embed_inputs(ids, f);
    f0 = faults_now();
    t0 = Clock::now();
    model->logits(e, &cache, /*last_only=*/true);
    metric("prefill, first in the process", seconds_since(t0), "s");
    metric("  page faults (minor)", static_cast<double>(faults_now().minor - f0.minor), "");
  }
  auto regions = weight_regions(*model);
  t0 = Clock::now();
  g_sink ^= read_regions(regions);
  const double warm_touch_s = seconds_since(t0);
  metric("read of all weights after the first passes", warm_touch_s, "s");
  std::vector<double> wt;
  for (int i = 0; i < 3; ++i) {
    t0 = Clock::now();
    g_sink ^= read_regions(regions);
    wt.push_back(seconds_since(t0));
  }
  const double weights_bw = region_bytes(regions) / minimum(wt) / 1e9;
  metric("read bandwidth over the mapped weights", weights_bw, "GB/s");
  const auto [in_place, all_bytes] = bytes_in_place(*model);
  metric("weights used in place from the mapped files", 100.0 * in_place / all_bytes, "%");
  // Huge-page mappings of the process (/proc/self/smaps_rollup): page-cache folios mapped with
  // 2 MiB entries (mmap of a file read into large folios) and anonymous THP (copy, activations).
  metric("  file pages mapped with 2 MiB entries (FilePmdMapped)", smaps_kib("FilePmdMapped") / 1048576.0, "GiB");
  metric("  anonymous huge pages (AnonHugePages)", smaps_kib("AnonHugePages") / 1048576.0, "GiB");
  const auto& cfg = model->cfg;

  std::vector<std::string> modes;
  if (o.fast == "both") modes = {"off", "on"};
  else modes = {o.fast};
  auto set_mode = [&](const std::string& mode) { lli::nn::set_bf16_kernels_enabled(mode == "on"); };

  // Prompt: BOS, text, the image tokens, text (~600 tokens for LLaVA-1.5); one KV cache reused.
  auto ids = make_prompt_ids(cfg, o.text_before, o.text_after, 1234);
  const std::int64_t L = ids.size(1);
  auto cache = model->make_cache(L + o.decode_tokens + 8);
  const auto& tc = cfg.text;
  const double text_weight_bytes = static_cast<double>(gemv_pass_bytes(*model)) +
                                   tc.num_hidden_layers * 2.0 * tc.hidden_size * 2 /* norms */ +
                                   tc.hidden_size * 2.0 /* final norm */ + tc.hidden_size * 2.0 /* one embed row */;
  // KV cache read per token at the mean position of a decode run (bf16 keys and values).
  const double mean_pos = static_cast<double>(L) + o.decode_tokens / 2.0;
  const double kv_bytes = tc.num_hidden_layers * 2.0 * tc.num_key_value_heads * tc.head_dim * mean_pos * 2;
  const double bytes_per_token = text_weight_bytes + kv_bytes;
  note("prompt: " + std::to_string(L) + " tokens (" + std::to_string(cfg.tokens_per_image()) + " image tokens)");
  metric("bytes read per decoded token (weights + KV)", bytes_per_token / 1e9, "GB");
  metric("decode bound at measured bandwidth", bw * 1e9 / bytes_per_token, "tok/s");
  auto pixels = torch::randn({1, cfg.vision.num_channels, cfg.vision.image_size, cfg.vision.image_size});

  // Every measurement alternates the modes repetition by repetition (off, on, off, on, ...), so
  // both see the same machine load on average; each mode reports its first, median and best time.
  const std::size_t nm = modes.size();
  auto tag = [&](std::size_t m) { return " [bf16 kernels " + modes[m] + "]"; };

  // ---- GEMV part of a decode step ----
  if (!o.skip_gemv) {
    const double bytes = static_cast<double>(gemv_pass_bytes(*model));
    for (std::int64_t rows : {1, 2, 4, 8, 16}) {
      std::vector<std::vector<double>> t(nm);
      for (int r = 0; r < o.repeat; ++r)
        for (std::size_t m = 0; m < nm; ++m) {
          set_mode(modes[m]);
          t[m].push_back(gemv_pass_seconds(*model, rows, 1));
        }
      for (std::size_t m = 0; m < nm; ++m)
        metric("text linears, M=" + std::to_string(rows) + tag(m), bytes / minimum(t[m]) / 1e9, "GB/s");
    }
  }

  // ---- GEMM rate on the towers' linear shapes ----
  const auto vision_linears = linears_of(*model, "vision_tower");
  if (!o.skip_vision) report_linear_rates("vision tower", linear_rates(vision_linears, cfg.vision.num_positions(), o.repeat));
  const auto text_linears = linears_of(*model, "language_model.model");
  if (!o.skip_prefill) report_linear_rates("prefill (" + std::to_string(L) + " rows)", linear_rates(text_linears, L, o.repeat));

  // ---- vision encoder ----
  torch::Tensor feats;
  if (!o.skip_vision) {
    const double flops = vision_flops(cfg);
    std::vector<std::vector<double>> t(nm);
    std::vector<double> first(nm);
    std::vector<long> faults(nm, 0);
    for (int r = 0; r < o.repeat + 1; ++r)
      for (std::size_t m = 0; m < nm; ++m) {
        set_mode(modes[m]);
        const auto f0 = faults_now();
        t0 = Clock::now();
        feats = model->image_features(pixels);
        const double s = seconds_since(t0);
        if (r == 0) {
          first[m] = s;
        } else {
          t[m].push_back(s);
          faults[m] += faults_now().minor - f0.minor;
        }
      }
    for (std::size_t m = 0; m < nm; ++m) {
      metric("vision encoder, first image" + tag(m), first[m], "s");
      metric("vision encoder per image (median)" + tag(m), median(t[m]), "s");
      metric("vision encoder per image (min)" + tag(m), minimum(t[m]), "s");
      metric("  GFLOP/s (min time)", flops / minimum(t[m]) / 1e9, "GFLOP/s");
      metric("  fraction of bf16 matmul peak", flops / minimum(t[m]) / 1e9 / peak, "");
      metric("  page faults per image (after the first)", static_cast<double>(faults[m]) / o.repeat, "");
    }
  } else {
    feats = torch::zeros({1, cfg.tokens_per_image(), cfg.text.hidden_size}, torch::kBFloat16);
  }

  // ---- prefill ----
  auto embeds = model->embed_inputs(ids, feats);
  torch::Tensor last_logits;
  {
    const auto f = prefill_flops(cfg.text, static_cast<double>(L));
    std::vector<std::vector<double>> t(nm);
    std::vector<double> first(nm);
    std::vector<long> faults(nm, 0);
    const int runs = o.skip_prefill ? 1 : o.repeat + 1;
    for (int r = 0; r < runs; ++r)
      for (std::size_t m = 0; m < nm; ++m) {
        set_mode(modes[m]);
        cache.clear();
        const auto f0 = faults_now();
        t0 = Clock::now();
        last_logits = model->logits(embeds, &cache, /*last_only=*/true);
        const double s = seconds_since(t0);
        if (r == 0) {
          first[m] = s;
        } else {
          t[m].push_back(s);
          faults[m] += faults_now().minor - f0.minor;
        }
      }
    if (!o.skip_prefill) {
      const double total = f.linear + f.attention + f.head;
      for (std::size_t m = 0; m < nm; ++m) {
        metric("prefill, first" + tag(m), first[m], "s");
        metric("prefill (median)" + tag(m), median(t[m]), "s");
        metric("prefill (min)" + tag(m), minimum(t[m]), "s");
        metric("  prefill tokens/s (min time)", L / minimum(t[m]), "tok/s");
        metric("  GFLOP/s (all matmuls, min time)", total / minimum(t[m]) / 1e9, "GFLOP/s");
        metric("  fraction of bf16 matmul peak", total / minimum(t[m]) / 1e9 / peak, "");
        metric("  page faults per prefill (after the first)", static_cast<double>(faults[m]) / o.repeat, "");
      }
      note("prefill FLOPs: linear " + std::to_string(f.linear / 1e9) + " G, attention " +
           std::to_string(f.attention / 1e9) + " G, lm_head " + std::to_string(f.head / 1e9) + " G");
    }
  }

  // ---- decode: every run starts from the same prefilled cache ----
  const std::int64_t prefix = cache.n_past;
  std::vector<double> decode_best(modes.size(), 0.0);
  {
    std::vector<std::vector<double>> per_run(nm), steps(nm);
    std::vector<long> faults(nm, 0);
    std::vector<std::vector<std::int64_t>> first_ids(nm);
    std::vector<double> bw_near;  // the read probe right after each decode run: the host's
                                  // bandwidth drifts by 30 % within a run, so each run is compared
                                  // with what the machine gave at that time
    for (int r = 0; r < o.repeat; ++r)
      for (std::size_t m = 0; m < nm; ++m) {
        set_mode(modes[m]);
        cache.truncate(prefix);
        const auto f0 = faults_now();
        auto run = decode(*model, cache, last_logits, o.decode_tokens);
        faults[m] += faults_now().minor - f0.minor;
        bw_near.push_back(measure_read_bandwidth(5));
        double sum = 0;
        for (double x : run.step_s) sum += x;
        per_run[m].push_back(sum / static_cast<double>(run.step_s.size()));
        steps[m].insert(steps[m].end(), run.step_s.begin(), run.step_s.end());
        if (r == 0) first_ids[m] = run.ids;
      }
    metric("memory read bandwidth between the decode runs (median)", median(bw_near), "GB/s");
    for (std::size_t m = 0; m < nm; ++m) {
      const double tok_s = 1.0 / minimum(per_run[m]);
      decode_best[m] = tok_s;
      metric("decode " + std::to_string(o.decode_tokens) + " tokens (best run)" + tag(m), tok_s, "tok/s");
      metric("  median run", 1.0 / median(per_run[m]), "tok/s");
      metric("  median step", median(steps[m]) * 1e3, "ms");
      metric("  effective read rate (best run)", bytes_per_token * tok_s / 1e9, "GB/s");
      metric("  fraction of the bandwidth bound", bytes_per_token * tok_s / (bw * 1e9), "");
      metric("  fraction of the read bandwidth measured between the decode runs (median)",
             bytes_per_token * tok_s / (median(bw_near) * 1e9), "");
      metric("  page faults per token", static_cast<double>(faults[m]) / steps[m].size(), "");
      std::string s;
      for (std::size_t i = 0; i < std::min<std::size_t>(8, first_ids[m].size()); ++i)
        s += " " + std::to_string(first_ids[m][i]);
      note("decode " + modes[m] + ": first ids" + s);
    }
  }

  if (o.profile)
    for (std::size_t m = 0; m < nm; ++m) {
      set_mode(modes[m]);
      cache.truncate(prefix);
      lli::bench::profile_ops("one decode step" + tag(m), [&] { decode(*model, cache, last_logits, 1); }, 0, 15);
      if (!o.skip_prefill) {
        cache.clear();
        lli::bench::profile_ops("prefill" + tag(m), [&] { model->logits(embeds, &cache, true); }, 0, 15);
      }
    }
  lli::nn::set_bf16_kernels_enabled(true);
  const double bw_end = measure_read_bandwidth(15);
  metric("memory read bandwidth, measured again at the end", bw_end, "GB/s");
  const double bw_best = std::max(bw, bw_end);
  for (std::size_t m = 0; m < modes.size(); ++m)
    metric("decode vs the best bandwidth measured (" + std::to_string(bw_best).substr(0, 5) + " GB/s)" + tag(m),
           bytes_per_token * decode_best[m] / (bw_best * 1e9), "");
  metric("peak RSS (ru_maxrss, includes mapped weights)", peak_rss_kib() / 1024.0 / 1024.0, "GiB");
  metric("  RSS now: mapped files (weights)", proc_status_kib("RssFile") / 1024.0 / 1024.0, "GiB");
  metric("  RSS now: anonymous (KV cache, activations, heap)", proc_status_kib("RssAnon") / 1024.0 / 1024.0, "GiB");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"LLaVA-1.5 CPU benchmark (bf16)"};
  Options o;
  app.add_option("checkpoint", o.dir, "llava-hf checkpoint directory")->required()->check(CLI::ExistingDirectory);
  app.add_option("--threads", o.threads, "intra-op threads (0: number of cores)");
  app.add_option("--repeat", o.repeat, "timed repetitions of each measurement");
  app.add_option("--decode-tokens", o.decode_tokens, "tokens generated per decode run");
  app.add_option("--text-before", o.text_before, "text tokens before the image (after BOS)");
  app.add_option("--text-after", o.text_after, "text tokens after the image");
  app.add_flag("--cold", o.cold, "also measure a load with the checkpoint evicted from the page cache");
  app.add_option("--fast-bf16", o.fast, "hand-written bf16 kernels (GEMV, attention): measure with them, without, or both ways")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_flag("--skip-vision", o.skip_vision, "skip the vision encoder measurement");
  app.add_flag("--skip-prefill", o.skip_prefill, "skip the prefill timing (one untimed prefill still runs)");
  app.add_flag("--skip-gemv", o.skip_gemv, "skip the GEMV-only measurement");
  app.add_option("--weights", o.weights, "weight residency: mmap (in place from the page cache) or copy (huge-page memory)")
      ->check(CLI::IsMember({"mmap", "copy"}));
  app.add_option("--quantize", o.quantize, "quantize the language model at load (q8_0, q4_k); a checkpoint written by "
                 "lli-quantize is used as it is")
      ->check(CLI::IsMember({"q8_0", "q4_k"}));
  app.add_flag("--profile", o.profile, "print libtorch's operator profile of one decode step (and of a prefill)");
  CLI11_PARSE(app, argc, argv);
  try {
    run(o);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "bench_llava: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_llava: %s\n", e.what());
    return 5;
  }
  return 0;
}
