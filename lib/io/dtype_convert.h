// Floating-point element conversion between safetensors dtypes (F64, F32, F16, BF16), without
// libtorch: used by the `copy` reader to convert weights while reading them. Rounding as libtorch's
// Tensor::to: through fp32, round to nearest even; NaN stays NaN (bf16 NaN = 0x7fc0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lli/safetensors.h"

namespace lli::st {

bool is_floating(DType d);  // F64, F32, F16, BF16

// dst[i] = convert(src[i]) for i < n; from and to must be floating dtypes (any pair, equal ones copy).
void convert_floats(const void* src, DType from, void* dst, DType to, std::size_t n);

// Whether the CPU has the F16C conversion instructions (cpuid; clang 14's __builtin_cpu_supports
// does not know "f16c").
bool cpu_has_f16c();

// Single values (tests, scalars): IEEE fp16 and bf16 bit patterns.
float f16_to_f32(std::uint16_t h);
std::uint16_t f32_to_f16(float f);
inline float bf16_to_f32(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace lli::st
