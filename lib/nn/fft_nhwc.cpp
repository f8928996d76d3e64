// Channels-last 2-D real FFTs vectorized across channels (see fft_nhwc.h).
// Ref: torch.fft.rfftn / irfftn semantics (one-sided last axis, c2c on the other), Cooley-Tukey
// radix-2 decimation in time.
#include "nn/fft_nhwc.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <utility>
#include <vector>

#include "lli/error.h"
#include "nn/bf16_simd.h"
#include "nn/linear_bf16.h"

namespace lli::nn {
namespace {

bool pow2(std::int64_t n) { return n >= 2 && (n & (n - 1)) == 0; }

// cos / sin of 2 pi j / N for j < N/2, computed in double.
struct Twiddles {
  std::vector<float> c, s;
  explicit Twiddles(std::int64_t N) {
    const double two_pi = 6.283185307179586476925286766559;
    for (std::int64_t j = 0; j < N / 2; ++j) {
      c.push_back(static_cast<float>(std::cos(two_pi * static_cast<double>(j) / static_cast<double>(N))));
      s.push_back(static_cast<float>(std::sin(two_pi * static_cast<double>(j) / static_cast<double>(N))));
    }
  }
};

#if LLI_HAVE_BF16_SIMD

// In-place complex FFT over N rows of C channels (re, im: [N][C], C % 16 == 0). Forward: e^{-2 pi i
// jk / N}; inverse: e^{+...}, unnormalised.
LLI_BF16_SIMD_TARGET void fft_rows(float* re, float* im, std::int64_t N, std::int64_t C, const Twiddles& tw,
                                   bool inverse) {
  for (std::int64_t i = 1, j = 0; i < N; ++i) {  // bit-reversal permutation of the rows
    std::int64_t bit = N >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      std::swap_ranges(re + i * C, re + (i + 1) * C, re + j * C);
      std::swap_ranges(im + i * C, im + (i + 1) * C, im + j * C);
    }
  }
  for (std::int64_t len = 2; len <= N; len <<= 1) {
    const std::int64_t half = len / 2, step = N / len;
    for (std::int64_t j = 0; j < half; ++j) {
      const __m512 wr = _mm512_set1_ps(tw.c[static_cast<std::size_t>(j * step)]);
      const float s = tw.s[static_cast<std::size_t>(j * step)];
      const __m512 wi = _mm512_set1_ps(inverse ? s : -s);
      for (std::int64_t i = 0; i < N; i += len) {
        float* ur = re + (i + j) * C;
        float* ui = im + (i + j) * C;
        float* vr = re + (i + j + half) * C;
        float* vi = im + (i + j + half) * C;
        for (std::int64_t c = 0; c < C; c += 16) {
          const __m512 ar = _mm512_loadu_ps(ur + c), ai = _mm512_loadu_ps(ui + c);
          const __m512 br = _mm512_loadu_ps(vr + c), bi = _mm512_loadu_ps(vi + c);
          const __m512 tr = _mm512_fmsub_ps(wr, br, _mm512_mul_ps(wi, bi));  // (w * b).re
          const __m512 ti = _mm512_fmadd_ps(wr, bi, _mm512_mul_ps(wi, br));  // (w * b).im
          _mm512_storeu_ps(ur + c, _mm512_add_ps(ar, tr));
          _mm512_storeu_ps(ui + c, _mm512_add_ps(ai, ti));
          _mm512_storeu_ps(vr + c, _mm512_sub_ps(ar, tr));
          _mm512_storeu_ps(vi + c, _mm512_sub_ps(ai, ti));
        }
      }
    }
  }
}

// C channels (fp32 or bf16) -> fp32.
LLI_BF16_SIMD_TARGET void load_channels(const void* src, bool bf16, std::int64_t C, float* dst) {
  for (std::int64_t c = 0; c < C; c += 16) {
    const __m512 v = bf16 ? simd::load16(static_cast<const std::uint16_t*>(src) + c, 0xffff)
                          : _mm512_loadu_ps(static_cast<const float*>(src) + c);
    _mm512_storeu_ps(dst + c, v);
  }
}

// fp32 * scale -> C channels (fp32 or bf16, rounded to nearest even).
LLI_BF16_SIMD_TARGET void store_channels(const float* src, float scale, std::int64_t C, void* dst, bool bf16) {
  const __m512 k = _mm512_set1_ps(scale);
  for (std::int64_t c = 0; c < C; c += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(src + c), k);
    if (bf16) simd::store16(static_cast<std::uint16_t*>(dst) + c, v, 0xffff);
    else _mm512_storeu_ps(static_cast<float*>(dst) + c, v);
  }
}

// The H-direction pass shared by both transforms: src and dst are [B, H, Wf, 2, C] (real parts,
// then imaginary parts, per frequency), fp32 or bf16 each; one frequency column per task.
void column_pass(const void* src, bool src_bf16, void* dst, bool dst_bf16, std::int64_t B, std::int64_t H,
                 std::int64_t Wf, std::int64_t C, const Twiddles& tw, bool inverse, float scale) {
  const std::int64_t ses = src_bf16 ? 2 : 4, des = dst_bf16 ? 2 : 4;
  at::parallel_for(0, B * Wf, 1, [&](std::int64_t q0, std::int64_t q1) {
    std::vector<float> re(static_cast<std::size_t>(H * C)), im(static_cast<std::size_t>(H * C));
    for (std::int64_t q = q0; q < q1; ++q) {
      const std::int64_t b = q / Wf, k = q % Wf;
      for (std::int64_t h = 0; h < H; ++h) {
        const char* s = static_cast<const char*>(src) + ((b * H + h) * Wf + k) * 2 * C * ses;
        load_channels(s, src_bf16, C, re.data() + h * C);
        load_channels(s + C * ses, src_bf16, C, im.data() + h * C);
      }
      fft_rows(re.data(), im.data(), H, C, tw, inverse);
      for (std::int64_t h = 0; h < H; ++h) {
        char* d = static_cast<char*>(dst) + ((b * H + h) * Wf + k) * 2 * C * des;
        store_channels(re.data() + h * C, scale, C, d, dst_bf16);
        store_channels(im.data() + h * C, scale, C, d + C * des, dst_bf16);
      }
    }
  });
}

#endif  // LLI_HAVE_BF16_SIMD

void check_dtype(torch::Dtype d, const char* what) {
  if (d != torch::kFloat32 && d != torch::kBFloat16)
    throw RuntimeError(std::string(what) + ": fp32 or bf16 expected, got " + c10::toString(d));
}

}  // namespace

bool fft_nhwc_supported(std::int64_t H, std::int64_t W, std::int64_t C, torch::Dtype dtype) {
#if LLI_HAVE_BF16_SIMD
  return pow2(H) && pow2(W) && C > 0 && C % 16 == 0 && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) &&
         bf16_kernels_available();
#else
  (void)H, (void)W, (void)C, (void)dtype;
  return false;
#endif
}

torch::Tensor rfft2_nhwc(const torch::Tensor& x0, double scale, torch::Dtype out) {
  RECORD_FUNCTION("lli::rfft2_nhwc", std::vector<c10::IValue>());
  const auto B = x0.size(0), C = x0.size(1), H = x0.size(2), W = x0.size(3), Wf = W / 2 + 1;
  if (x0.dim() != 4 || !x0.device().is_cpu() || !fft_nhwc_supported(H, W, C, x0.scalar_type()))
    throw RuntimeError("rfft2_nhwc: unsupported input (4-D CPU fp32/bf16, H and W powers of two, C % 16 == 0)");
  check_dtype(out, "rfft2_nhwc");
#if LLI_HAVE_BF16_SIMD
  const auto x = x0.contiguous(at::MemoryFormat::ChannelsLast);  // memory [B, H, W, C]
  const bool in_bf16 = x.scalar_type() == torch::kBFloat16, out_bf16 = out == torch::kBFloat16;
  const auto ies = static_cast<std::int64_t>(x.element_size());
  auto y = torch::empty({B, H, Wf, 2 * C}, x.options().dtype(out));  // channel ri * C + c
  std::vector<float> t(static_cast<std::size_t>(B * H * Wf * 2 * C));  // rows done: [B, H, Wf, 2, C]
  const Twiddles tw_w(W), tw_h(H);
  const char* xs = static_cast<const char*>(x.data_ptr());
  char* ys = static_cast<char*>(y.data_ptr());
  // Along W (real input): one image row per task.
  at::parallel_for(0, B * H, 1, [&](std::int64_t r0, std::int64_t r1) {
    std::vector<float> re(static_cast<std::size_t>(W * C)), im(static_cast<std::size_t>(W * C));
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t w = 0; w < W; ++w) load_channels(xs + (r * W + w) * C * ies, in_bf16, C, re.data() + w * C);
      std::fill(im.begin(), im.end(), 0.0f);
      fft_rows(re.data(), im.data(), W, C, tw_w, /*inverse=*/false);
      float* dst = t.data() + r * Wf * 2 * C;
      for (std::int64_t k = 0; k < Wf; ++k) {
        std::copy_n(re.data() + k * C, C, dst + (2 * k) * C);
        std::copy_n(im.data() + k * C, C, dst + (2 * k + 1) * C);
      }
    }
  });
  // Along H (complex), scaled on the way out.
  column_pass(t.data(), false, ys, out_bf16, B, H, Wf, C, tw_h, /*inverse=*/false, static_cast<float>(scale));
  return y.permute({0, 3, 1, 2});  // [B, 2C, H, Wf] channels-last
#else
  (void)scale, (void)B, (void)Wf;
  throw RuntimeError("rfft2_nhwc: not compiled for this architecture");
#endif
}

torch::Tensor irfft2_nhwc(const torch::Tensor& s0, std::int64_t W, double scale, torch::Dtype out) {
  RECORD_FUNCTION("lli::irfft2_nhwc", std::vector<c10::IValue>());
  const auto B = s0.size(0), C = s0.size(1) / 2, H = s0.size(2), Wf = s0.size(3);
  if (s0.dim() != 4 || !s0.device().is_cpu() || s0.size(1) % 2 != 0 || Wf != W / 2 + 1 ||
      !fft_nhwc_supported(H, W, C, s0.scalar_type()))
    throw RuntimeError("irfft2_nhwc: unsupported input (4-D CPU fp32/bf16 [B, 2C, H, W/2+1], H and W powers of two, "
                       "C % 16 == 0)");
  check_dtype(out, "irfft2_nhwc");
#if LLI_HAVE_BF16_SIMD
  const auto s = s0.contiguous(at::MemoryFormat::ChannelsLast);  // memory [B, H, Wf, 2, C]
  const bool in_bf16 = s.scalar_type() == torch::kBFloat16, out_bf16 = out == torch::kBFloat16;
  auto y = torch::empty({B, H, W, C}, s.options().dtype(out));
  const auto oes = static_cast<std::int64_t>(y.element_size());
  std::vector<float> t(static_cast<std::size_t>(B * H * Wf * 2 * C));  // columns done: [B, H, Wf, 2, C]
  const Twiddles tw_w(W), tw_h(H);
  const char* ss = static_cast<const char*>(s.data_ptr());
  char* ys = static_cast<char*>(y.data_ptr());
  // Inverse along H (complex).
  column_pass(ss, in_bf16, t.data(), false, B, H, Wf, C, tw_h, /*inverse=*/true, 1.0f);
  // Inverse along W of a one-sided spectrum: the other half by conjugate symmetry; the imaginary
  // parts of bins 0 and W/2 are ignored (as a c2r transform does); the real part is the result.
  at::parallel_for(0, B * H, 1, [&](std::int64_t r0, std::int64_t r1) {
    std::vector<float> re(static_cast<std::size_t>(W * C)), im(static_cast<std::size_t>(W * C));
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* src = t.data() + r * Wf * 2 * C;
      for (std::int64_t k = 0; k < Wf; ++k) {
        std::copy_n(src + (2 * k) * C, C, re.data() + k * C);
        std::copy_n(src + (2 * k + 1) * C, C, im.data() + k * C);
      }
      std::fill_n(im.data(), C, 0.0f);
      std::fill_n(im.data() + (W / 2) * C, C, 0.0f);
      for (std::int64_t k = Wf; k < W; ++k) {
        std::copy_n(re.data() + (W - k) * C, C, re.data() + k * C);
        const float* m = im.data() + (W - k) * C;
        float* d = im.data() + k * C;
        for (std::int64_t c = 0; c < C; ++c) d[c] = -m[c];
      }
      fft_rows(re.data(), im.data(), W, C, tw_w, /*inverse=*/true);
      for (std::int64_t w = 0; w < W; ++w)
        store_channels(re.data() + w * C, static_cast<float>(scale), C, ys + (r * W + w) * C * oes, out_bf16);
    }
  });
  return y.permute({0, 3, 1, 2});  // [B, C, H, W] channels-last
#else
  (void)scale, (void)B, (void)H, (void)C;
  throw RuntimeError("irfft2_nhwc: not compiled for this architecture");
#endif
}

}  // namespace lli::nn
