// Ref: Intel intrinsics guide (_mm512_dpbf16_ps, _mm512_reduce_add_ps); see linear_bf16.h.
#include "nn/linear_bf16.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "lli/device.h"
#include "lli/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LLI_HAVE_BF16_KERNEL 1
#else
#define LLI_HAVE_BF16_KERNEL 0
#endif

namespace lli::nn {

namespace {

bool env_enabled() {
  const char* e = std::getenv("LLI_FAST_BF16");
  return !(e && std::string(e) == "0");
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{env_enabled()};
  return flag;
}

// fp32 -> bf16 bits, round to nearest even (NaN stays NaN), as c10::BFloat16(float) does.
inline std::uint16_t to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float from_bf16_bits(std::uint16_t b) {
  std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#if LLI_HAVE_BF16_KERNEL

#define LLI_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

LLI_BF16_TARGET inline __m512 dot32(__m512 acc, const std::uint16_t* a, const std::uint16_t* b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(a), (__m512bh)_mm512_loadu_si512(b));
}

LLI_BF16_TARGET inline __m512 dot32_masked(__m512 acc, const std::uint16_t* a, const std::uint16_t* b,
                                           __mmask32 m) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, a), (__m512bh)_mm512_maskz_loadu_epi16(m, b));
}

// Sum of the 16 lanes (through memory: GCC 12's reduce/shuffle intrinsics trip a false
// -Wmaybe-uninitialized; the cost is nothing next to a row's dot product).
LLI_BF16_TARGET inline float hsum(__m512 v) {
  alignas(64) float l[16];
  _mm512_store_ps(l, v);
  return ((l[0] + l[8]) + (l[4] + l[12])) + ((l[2] + l[10]) + (l[6] + l[14])) +
         (((l[1] + l[9]) + (l[5] + l[13])) + ((l[3] + l[11]) + (l[7] + l[15])));
}

// Software prefetch distance, in weight elements ahead of the current load of each row: measured
// on a 1.3 GB GEMV (4096-wide rows, 2 threads, interleaved runs), 4 rows side by side with 2 KB
// prefetch read 42-52 GB/s where 8 rows without prefetch read 32-45 and a plain 4-stream read
// 44-64 (the host's bandwidth drifts within minutes).
constexpr std::int64_t kPrefetch = 1024;

// Output rows [n, n + R) for MB rows of x: y[m, n + r] = sum_k x[m, k] w[n + r, k] + bias[n + r].
// The R weight rows are read side by side, 64 elements (2 cache lines) of each per step: R
// concurrent read streams keep the hardware prefetchers busy on every page, which a single
// stream per thread does not (measured here, 2 threads, 4096-wide rows: 1 row at a time with
// software prefetch ~25 GB/s, 4 rows ~36, 8 rows ~40, a pure multi-stream read ~43-45 GB/s).
template <int MB, int R>
LLI_BF16_TARGET void kernel_block(const std::uint16_t* x, std::int64_t ldx, const std::uint16_t* w, std::int64_t K,
                                  std::int64_t n, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  const std::int64_t k64 = K - K % 64;
  const std::int64_t k32 = K - K % 32;
  const __mmask32 tail = K % 32 ? static_cast<__mmask32>((1ull << (K % 32)) - 1) : 0;
  __m512 acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  const std::uint16_t* wb = w + n * K;
  std::int64_t k = 0;
  for (; k < k64; k += 64) {
    __m512bh x0[MB], x1[MB];
    for (int m = 0; m < MB; ++m) {
      x0[m] = (__m512bh)_mm512_loadu_si512(x + m * ldx + k);
      x1[m] = (__m512bh)_mm512_loadu_si512(x + m * ldx + k + 32);
    }
    for (int r = 0; r < R; ++r) {
      const std::uint16_t* wr = wb + r * K + k;
      _mm_prefetch(reinterpret_cast<const char*>(wr + kPrefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(wr + kPrefetch + 32), _MM_HINT_T0);
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wr), w1 = (__m512bh)_mm512_loadu_si512(wr + 32);
      for (int m = 0; m < MB; ++m) {
        acc[m][r] = _mm512_dpbf16_ps(acc[m][r], w0, x0[m]);
        acc[m][r] = _mm512_dpbf16_ps(acc[m][r], w1, x1[m]);
      }
    }
  }
  for (; k < k32; k += 32)
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m) acc[m][r] = dot32(acc[m][r], wb + r * K + k, x + m * ldx + k);
  if (tail)
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MB; ++m) acc[m][r] = dot32_masked(acc[m][r], wb + r * K + k, x + m * ldx + k, tail);
  for (int r = 0; r < R; ++r) {
    const float b = bias ? from_bf16_bits(bias[n + r]) : 0.0f;
    for (int m = 0; m < MB; ++m) y[m * ldy + n + r] = to_bf16_bits(hsum(acc[m][r]) + b);
  }
}

// Rows [n0, n1) of the output for MB rows of x: blocks of R weight rows, then single rows.
template <int MB, int R>
void kernel_rows(const std::uint16_t* x, std::int64_t ldx, const std::uint16_t* w, std::int64_t K, std::int64_t n0,
                 std::int64_t n1, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  std::int64_t n = n0;
  for (; n + R <= n1; n += R) kernel_block<MB, R>(x, ldx, w, K, n, bias, y, ldy);
  for (; n < n1; ++n) kernel_block<MB, 1>(x, ldx, w, K, n, bias, y, ldy);
}

void rows_dispatch(const std::uint16_t* x, std::int64_t M, std::int64_t ldx, const std::uint16_t* w, std::int64_t K,
                   std::int64_t n0, std::int64_t n1, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  // Rows of x in groups of up to 4 (at most 16 accumulators: MB x R <= 16); for M > 4 the weight
  // rows of a block are re-read from cache only when the block fits there, so large M is not this
  // kernel's job (see kLinearBF16MaxRows).
  constexpr std::int64_t kBlock = 64;  // output rows per block: 64 x K bf16 stays in L2 across m-groups
  for (std::int64_t nb = n0; nb < n1; nb += kBlock) {
    const std::int64_t ne = std::min(n1, nb + kBlock);
    for (std::int64_t m = 0; m < M; m += 4) {
      const auto* xm = x + m * ldx;
      auto* ym = y + m * ldy;
      switch (std::min<std::int64_t>(4, M - m)) {
        case 1: kernel_rows<1, 4>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        case 2: kernel_rows<2, 4>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        case 3: kernel_rows<3, 4>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        default: kernel_rows<4, 4>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
      }
    }
  }
}

#endif  // LLI_HAVE_BF16_KERNEL

}  // namespace

bool bf16_kernels_available() {
#if LLI_HAVE_BF16_KERNEL
  static const bool cpu = cpu_has_avx512_bf16();
  return cpu && enabled_flag().load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void set_bf16_kernels_enabled(bool enabled) { enabled_flag().store(enabled, std::memory_order_relaxed); }

bool linear_bf16_applicable(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (!bf16_kernels_available()) return false;
  if (x.scalar_type() != torch::kBFloat16 || !x.device().is_cpu() || x.dim() < 1) return false;
  if (w.scalar_type() != torch::kBFloat16 || !w.device().is_cpu() || w.dim() != 2 || !w.is_contiguous()) return false;
  if (x.size(-1) != w.size(1) || w.size(1) == 0) return false;
  if (x.requires_grad() || w.requires_grad()) return false;
  if (b.defined() && (b.scalar_type() != torch::kBFloat16 || !b.device().is_cpu() || b.dim() != 1 ||
                      b.size(0) != w.size(0) || b.requires_grad()))
    return false;
  const std::int64_t rows = x.numel() / x.size(-1);
  return rows >= 1 && rows <= kLinearBF16MaxRows;
}

torch::Tensor linear_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
#if LLI_HAVE_BF16_KERNEL
  if (!bf16_kernels_available())
    throw RuntimeError("linear_bf16: this CPU has no AVX512-BF16 (or the fast path is disabled)");
  const std::int64_t K = w.size(1), N = w.size(0);
  if (x.size(-1) != K)
    throw RuntimeError("linear_bf16: x has " + std::to_string(x.size(-1)) + " features, the weight " +
                       std::to_string(K));
  auto x2 = x.reshape({-1, K}).contiguous();  // [M, K]
  const std::int64_t M = x2.size(0);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = N;
  auto y = torch::empty({M, N}, x.options());  // [M, N]
  auto bc = b.defined() ? b.contiguous() : b;
  const auto* xp = static_cast<const std::uint16_t*>(x2.data_ptr());
  const auto* wp = static_cast<const std::uint16_t*>(w.data_ptr());
  const auto* bp = bc.defined() ? static_cast<const std::uint16_t*>(bc.data_ptr()) : nullptr;
  auto* yp = static_cast<std::uint16_t*>(y.data_ptr());
  if (M > 0 && N > 0) {
    // Equal shares of the output rows per thread (each thread streams one contiguous region).
    const std::int64_t nt = std::max<std::int64_t>(1, std::min<std::int64_t>(at::get_num_threads(), N / 16));
    at::parallel_for(0, nt, 1, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t)
        rows_dispatch(xp, M, K, wp, K, N * t / nt, N * (t + 1) / nt, bp, yp, N);
    });
  }
  return y.view(out_sizes);
#else
  (void)x;
  (void)w;
  (void)b;
  throw RuntimeError("linear_bf16: not compiled for this architecture");
#endif
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (linear_bf16_applicable(x, w, b)) return linear_bf16(x, w, b);
  return torch::linear(x, w, b);
}

}  // namespace lli::nn
