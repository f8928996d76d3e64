// Sampling settings of text generation (torch-free, so that flag parsing needs no libtorch).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "lli/error.h"

namespace lli {

// Defaults are LLaVA's demo settings (temperature 0.2, top_p 0.7, 512 new tokens); top_k 50 is
// transformers' GenerationConfig default, which LLaVA's generate() call inherits. Each processor
// is off at its neutral value (top_p 1, top_k 0, repetition_penalty 1); temperature 0 = greedy.
struct SamplerConfig {
  double temperature = 0.2;         // 0: greedy (argmax)
  double top_p = 0.7;               // (0, 1]; 1: off
  std::int64_t top_k = 50;          // 0: off
  double repetition_penalty = 1.0;  // > 0; 1: off (HF: logit < 0 ? logit * p : logit / p)
  std::int64_t max_new_tokens = 512;
  std::uint64_t seed = 0;  // seeds the multinomial draws

  bool greedy() const { return temperature == 0.0; }

  // UsageError naming the first invalid field.
  void validate() const {
    auto bad = [](const std::string& what) { throw UsageError("sampler: " + what); };
    if (!std::isfinite(temperature) || temperature < 0)
      bad("temperature = " + std::to_string(temperature) + " must be >= 0 (0 = greedy)");
    if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1)
      bad("top_p = " + std::to_string(top_p) + " must be in (0, 1]");
    if (top_k < 0) bad("top_k = " + std::to_string(top_k) + " must be >= 0 (0 = off)");
    if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0)
      bad("repetition_penalty = " + std::to_string(repetition_penalty) + " must be > 0 (1 = off)");
    if (max_new_tokens < 1) bad("max_new_tokens = " + std::to_string(max_new_tokens) + " must be >= 1");
  }
};

}  // namespace lli
