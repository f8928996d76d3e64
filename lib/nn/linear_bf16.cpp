// Ref: Intel intrinsics guide (_mm512_dpbf16_ps, _mm512_reduce_add_ps); see linear_bf16.h.
#include "nn/linear_bf16.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "lli/device.h"
#include "lli/error.h"
#include "nn/parallel_rows.h"

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

// Output row n for MB rows of x: y[m, n] = sum_k x[m, k] w[n, k] + bias[n]. Each thread streams
// its share of the weight rows one row at a time, as one sequential read; two accumulators per
// row of x (the two halves of each 64-element step) keep two dot-product chains in flight.
// Measured with 2 threads on AMD EPYC (huge-page weights, 2026-12-05, a scratch GEMV bench on a
// quiet host): TinyLlama shapes 46-48 GB/s this way against 40-41 GB/s with 4 weight rows side by
// side and a 2 KB software prefetch (the previous design); 7B shapes 42-43 against 39-41. The
// measurements that had favoured 4 rows ran on one thread (see the CMake note on OpenMP).
template <int MB>
LLI_BF16_TARGET void kernel_row(const std::uint16_t* x, std::int64_t ldx, const std::uint16_t* w, std::int64_t K,
                                std::int64_t n, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  const std::int64_t k64 = K - K % 64;
  const std::int64_t k32 = K - K % 32;
  const __mmask32 tail = K % 32 ? static_cast<__mmask32>((1ull << (K % 32)) - 1) : 0;
  __m512 acc0[MB], acc1[MB];
  for (int m = 0; m < MB; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  const std::uint16_t* wr = w + n * K;
  std::int64_t k = 0;
  for (; k < k64; k += 64) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wr + k), w1 = (__m512bh)_mm512_loadu_si512(wr + k + 32);
    for (int m = 0; m < MB; ++m) {
      acc0[m] = _mm512_dpbf16_ps(acc0[m], w0, (__m512bh)_mm512_loadu_si512(x + m * ldx + k));
      acc1[m] = _mm512_dpbf16_ps(acc1[m], w1, (__m512bh)_mm512_loadu_si512(x + m * ldx + k + 32));
    }
  }
  for (; k < k32; k += 32)
    for (int m = 0; m < MB; ++m) acc0[m] = dot32(acc0[m], wr + k, x + m * ldx + k);
  if (tail)
    for (int m = 0; m < MB; ++m) acc1[m] = dot32_masked(acc1[m], wr + k, x + m * ldx + k, tail);
  const float b = bias ? from_bf16_bits(bias[n]) : 0.0f;
  for (int m = 0; m < MB; ++m) y[m * ldy + n] = to_bf16_bits(hsum(_mm512_add_ps(acc0[m], acc1[m])) + b);
}

template <int MB>
void kernel_rows(const std::uint16_t* x, std::int64_t ldx, const std::uint16_t* w, std::int64_t K, std::int64_t n0,
                 std::int64_t n1, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  for (std::int64_t n = n0; n < n1; ++n) kernel_row<MB>(x, ldx, w, K, n, bias, y, ldy);
}

void rows_dispatch(const std::uint16_t* x, std::int64_t M, std::int64_t ldx, const std::uint16_t* w, std::int64_t K,
                   std::int64_t n0, std::int64_t n1, const std::uint16_t* bias, std::uint16_t* y, std::int64_t ldy) {
  // Rows of x in groups of up to 4 (8 accumulators); for M > 4 the weight rows of a block are
  // re-read from cache only when the block fits there, so large M is not this kernel's job (see
  // kLinearBF16MaxRows).
  constexpr std::int64_t kBlock = 64;  // output rows per block: 64 x K bf16 stays in L2 across m-groups
  for (std::int64_t nb = n0; nb < n1; nb += kBlock) {
    const std::int64_t ne = std::min(n1, nb + kBlock);
    for (std::int64_t m = 0; m < M; m += 4) {
      const auto* xm = x + m * ldx;
      auto* ym = y + m * ldy;
      switch (std::min<std::int64_t>(4, M - m)) {
        case 1: kernel_rows<1>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        case 2: kernel_rows<2>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        case 3: kernel_rows<3>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
        default: kernel_rows<4>(xm, ldx, w, K, nb, ne, bias, ym, ldy); break;
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
    parallel_rows(N, 16, [&](std::int64_t n0, std::int64_t n1) { rows_dispatch(xp, M, K, wp, K, n0, n1, bp, yp, N); });
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
