// Named debug tap for activations (like llama.cpp's `cb(cur, "attn_norm", il)`): models call
// tap("name", index, tensor) at fixed points; parity tests record what they need. An empty tap
// costs one branch.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>

namespace lli::nn {

// index: layer number, or -1 when the point is not per-layer.
using Tap = std::function<void(const std::string& name, std::int64_t index, const torch::Tensor& t)>;

inline void tap_if(const Tap& tap, const char* name, std::int64_t index, const torch::Tensor& t) {
  if (tap) tap(name, index, t);
}

}  // namespace lli::nn
