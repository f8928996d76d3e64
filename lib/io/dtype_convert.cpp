// Ref: IEEE 754 binary16 / bfloat16 layouts; Intel intrinsics guide (_mm256_cvtph_ps, _mm256_cvtps_ph).
#include "io/dtype_convert.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define LLI_HAVE_F16C 1
#else
#define LLI_HAVE_F16C 0
#endif

namespace lli::st {

namespace {

inline std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#if LLI_HAVE_F16C
__attribute__((target("avx2,f16c"))) void f16_to_f32_f16c(const std::uint16_t* s, float* d, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
}
__attribute__((target("avx2,f16c"))) void f32_to_f16_f16c(const float* s, std::uint16_t* d, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) d[i] = f32_to_f16(s[i]);
}
bool have_f16c() {
  static const bool b = cpu_has_f16c() && __builtin_cpu_supports("avx2");
  return b;
}
#endif

}  // namespace

bool cpu_has_f16c() {
#if LLI_HAVE_F16C
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
#else
  return false;
#endif
}

namespace {

// src (any floating dtype) -> fp32.
void to_f32(const void* src, DType from, float* d, std::size_t n) {
  switch (from) {
    case DType::F32: std::memcpy(d, src, n * 4); return;
    case DType::F64: {
      const auto* s = static_cast<const double*>(src);
      for (std::size_t i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) d[i] = from_bits(static_cast<std::uint32_t>(s[i]) << 16);
      return;
    }
    case DType::F16: {
      const auto* s = static_cast<const std::uint16_t*>(src);
#if LLI_HAVE_F16C
      if (have_f16c()) return f16_to_f32_f16c(s, d, n);
#endif
      for (std::size_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
      return;
    }
    default: return;
  }
}

// fp32 -> dst (any floating dtype).
void from_f32(const float* s, void* dst, DType to, std::size_t n) {
  switch (to) {
    case DType::F32: std::memcpy(dst, s, n * 4); return;
    case DType::F64: {
      auto* d = static_cast<double*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) {  // branch-free so that the loop vectorizes
        const std::uint32_t u = bits(s[i]);
        const std::uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        d[i] = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
      }
      return;
    }
    case DType::F16: {
      auto* d = static_cast<std::uint16_t*>(dst);
#if LLI_HAVE_F16C
      if (have_f16c()) return f32_to_f16_f16c(s, d, n);
#endif
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
      return;
    }
    default: return;
  }
}

}  // namespace

bool is_floating(DType d) { return d == DType::F64 || d == DType::F32 || d == DType::F16 || d == DType::BF16; }

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return from_bits(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return from_bits(sign | ((exp + 112) << 23) | (man << 13));
  if (man == 0) return from_bits(sign);
  // Subnormal: man * 2^-24, exact in fp32.
  const float v = static_cast<float>(man) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

std::uint16_t f32_to_f16(float f) {
  const std::uint32_t u = bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // below the smallest normal fp16 (2^-14): subnormal or zero
    // Round a * 2^24 to an integer, nearest even (exact arithmetic in fp32 up to 2^10).
    const float scaled = from_bits(a) * 16777216.0f;
    const float r = scaled + 8388608.0f - 8388608.0f;  // round to nearest even at integer precision
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  const std::uint32_t v = a - (112u << 23);
  const std::uint32_t r = (v + 0xfffu + ((v >> 13) & 1u)) >> 13;
  return static_cast<std::uint16_t>(sign | r);
}


void convert_floats(const void* src, DType from, void* dst, DType to, std::size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
    return;
  }
  if (from == DType::F32) return from_f32(static_cast<const float*>(src), dst, to, n);
  if (to == DType::F32) return to_f32(src, from, static_cast<float*>(dst), n);
  constexpr std::size_t kChunk = 2048;  // through an fp32 buffer on the stack
  float buf[kChunk];
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(dst);
  for (std::size_t i = 0; i < n; i += kChunk) {
    const std::size_t m = std::min(kChunk, n - i);
    to_f32(s + i * dtype_size(from), from, buf, m);
    from_f32(buf, d + i * dtype_size(to), to, m);
  }
}

}  // namespace lli::st
