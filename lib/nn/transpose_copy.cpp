// Tiled transposing copy with fp32 <-> bf16 conversion (see transpose_copy.h).
#include "nn/transpose_copy.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>
#include <string>

#include "lli/error.h"
#include "nn/bf16_simd.h"
#include "nn/linear_bf16.h"

namespace lli::nn {
namespace {

#if LLI_HAVE_BF16_SIMD
LLI_BF16_SIMD_TARGET void store_row_bf16(const float* buf, std::uint16_t* d, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = simd::tail_mask(n - i);
    simd::store16(d + i, _mm512_maskz_loadu_ps(m, buf + i), m);
  }
}
#endif

// Tiles of kTile x kTile elements: each tile is transposed into an fp32 buffer (src rows read in
// order), then every buffer row is converted and stored as one contiguous dst run (16 lanes at a
// time for bf16 output when the AVX512-BF16 kernels are available).
constexpr std::int64_t kTile = 32;

template <typename D>
void store_row(const float* buf, D* d, std::int64_t n, bool simd) {
  if constexpr (std::is_same_v<D, float>) {
    std::memcpy(d, buf, static_cast<std::size_t>(n) * sizeof(float));
  } else {
#if LLI_HAVE_BF16_SIMD
    if (simd) {
      store_row_bf16(buf, reinterpret_cast<std::uint16_t*>(d), n);
      return;
    }
#endif
    for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(buf[i]);
  }
}

template <typename S, typename D, int E>
void run(const S* src, D* dst, std::int64_t B, std::int64_t M, std::int64_t N) {
  const std::int64_t tm = (M + kTile - 1) / kTile, tn = (N + kTile - 1) / kTile, tiles = B * tm * tn;
  const bool simd = bf16_kernels_available();
  at::parallel_for(0, tiles, 1, [&](std::int64_t t0, std::int64_t t1) {
    alignas(64) float buf[kTile][kTile * E];
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t b = t / (tm * tn), r = t % (tm * tn), m0 = r / tn * kTile, n0 = r % tn * kTile;
      const std::int64_t mt = std::min(M, m0 + kTile) - m0, nt = std::min(N, n0 + kTile) - n0;
      const S* s = src + (b * M * N + m0 * N + n0) * E;
      D* d = dst + (b * M * N + n0 * M + m0) * E;
      for (std::int64_t m = 0; m < mt; ++m)
        for (std::int64_t n = 0; n < nt; ++n)
          for (int e = 0; e < E; ++e) buf[n][m * E + e] = static_cast<float>(s[(m * N + n) * E + e]);
      for (std::int64_t n = 0; n < nt; ++n) store_row(buf[n], d + n * M * E, mt * E, simd);
    }
  });
}

template <int E>
void dispatch(const torch::Tensor& src, torch::Tensor& dst, std::int64_t B, std::int64_t M, std::int64_t N) {
  using BF = c10::BFloat16;
  const auto s = src.scalar_type(), d = dst.scalar_type();
  if (s == torch::kFloat32 && d == torch::kBFloat16) run<float, BF, E>(src.data_ptr<float>(), dst.data_ptr<BF>(), B, M, N);
  else if (s == torch::kBFloat16 && d == torch::kFloat32) run<BF, float, E>(src.data_ptr<BF>(), dst.data_ptr<float>(), B, M, N);
  else if (s == torch::kFloat32 && d == torch::kFloat32) run<float, float, E>(src.data_ptr<float>(), dst.data_ptr<float>(), B, M, N);
  else if (s == torch::kBFloat16 && d == torch::kBFloat16) run<BF, BF, E>(src.data_ptr<BF>(), dst.data_ptr<BF>(), B, M, N);
  else throw RuntimeError(std::string("transpose_copy: unsupported dtypes ") + c10::toString(s) + " -> " + c10::toString(d));
}

}  // namespace

void transpose_copy(const torch::Tensor& src, torch::Tensor& dst) {
  if (src.dim() != 4 || dst.dim() != 4 || !src.is_contiguous() || !dst.is_contiguous() || !src.device().is_cpu() ||
      !dst.device().is_cpu() || src.size(0) != dst.size(0) || src.size(1) != dst.size(2) ||
      src.size(2) != dst.size(1) || src.size(3) != dst.size(3) || (src.size(3) != 1 && src.size(3) != 2))
    throw RuntimeError("transpose_copy: expected contiguous CPU [B, M, N, E] -> [B, N, M, E] with E = 1 or 2");
  RECORD_FUNCTION("lli::transpose_copy", std::vector<c10::IValue>());
  const auto B = src.size(0), M = src.size(1), N = src.size(2);
  if (src.size(3) == 1) dispatch<1>(src, dst, B, M, N);
  else dispatch<2>(src, dst, B, M, N);
}

}  // namespace lli::nn
