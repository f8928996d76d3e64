// Next-token selection from logits: greedy or transformers' sampling chain.
//
// Ref: transformers 4.45 generation/logits_process.py (RepetitionPenaltyLogitsProcessor,
//      TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper) and generation/utils.py
//      (_get_logits_processor order, _sample: softmax + torch.multinomial).
//
// Order: repetition penalty (also in greedy mode, as in transformers), then, when sampling,
// temperature, top-k, top-p, softmax and one multinomial draw from the state's seeded generator.
// The config (settings) and the state (generator, tokens seen) are separate objects; the pipeline
// owns the state for one generation.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <cstdint>
#include <set>
#include <vector>

#include "sampling/sampler_config.h"

namespace lli {

class SamplerState {
 public:
  // A CPU generator seeded like Python's torch.Generator().manual_seed(seed).
  explicit SamplerState(std::uint64_t seed);

  // Context tokens (the prompt): seen by the repetition penalty, as transformers' input_ids.
  void add_context(const std::vector<std::int64_t>& ids);
  // A generated token (sample_next() calls this itself).
  void accept(std::int64_t id);

  const std::set<std::int64_t>& seen() const { return seen_; }
  std::int64_t n_generated() const { return n_generated_; }
  at::Generator& generator() { return gen_; }

 private:
  at::Generator gen_;
  std::set<std::int64_t> seen_;
  std::int64_t n_generated_ = 0;
};

// The processed scores [V] (float32, CPU) the draw is made from: repetition penalty, and when
// cfg is not greedy, temperature, top-k and top-p (removed tokens = -inf).
// logits: [V] or [1, V], any floating dtype and device.
torch::Tensor process_logits(const SamplerConfig& cfg, const SamplerState& state, const torch::Tensor& logits);

// Picks the next token (argmax when cfg.greedy(), else a multinomial draw) and records it in
// `state`. InputError when logits is not [V] / [1, V] or holds NaN.
std::int64_t sample_next(const SamplerConfig& cfg, SamplerState& state, const torch::Tensor& logits);

}  // namespace lli
