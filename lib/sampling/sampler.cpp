// Ref: transformers 4.45 generation/logits_process.py, generation/utils.py (_sample).
#include "sampling/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <fmt/format.h>

#include "lli/error.h"

namespace lli {

SamplerState::SamplerState(std::uint64_t seed) : gen_(at::detail::createCPUGenerator(seed)) {}

void SamplerState::add_context(const std::vector<std::int64_t>& ids) { seen_.insert(ids.begin(), ids.end()); }

void SamplerState::accept(std::int64_t id) {
  seen_.insert(id);
  ++n_generated_;
}

namespace {

// logits: [V] or [1, V] -> [V] float32 CPU (a copy: the caller's tensor is never modified)
torch::Tensor as_scores(const torch::Tensor& logits) {
  if (!logits.defined() || !(logits.dim() == 1 || (logits.dim() == 2 && logits.size(0) == 1)))
    throw InputError(fmt::format("sampler: logits must be [V] or [1, V], got {}",
                                 logits.defined() ? c10::str(logits.sizes()) : std::string("none")));
  if (!logits.is_floating_point()) throw InputError("sampler: logits must be a floating tensor");
  torch::Tensor s = logits.reshape({-1}).to(torch::kCPU, torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  if (s.numel() == 0) throw InputError("sampler: logits are empty");
  if (s.isnan().any().item<bool>()) throw InputError("sampler: logits contain NaN");
  return s;
}

// RepetitionPenaltyLogitsProcessor: scores of seen ids: s < 0 ? s * p : s / p.
void apply_repetition_penalty(torch::Tensor& scores, const SamplerState& state, double penalty) {
  if (penalty == 1.0 || state.seen().empty()) return;
  const std::int64_t vocab = scores.size(0);
  std::vector<std::int64_t> ids;
  for (std::int64_t id : state.seen())
    if (id >= 0 && id < vocab) ids.push_back(id);  // ids beyond the logits (none in practice) are ignored
  if (ids.empty()) return;
  auto index = torch::tensor(ids, torch::kLong);
  auto s = scores.index_select(0, index);
  s = torch::where(s < 0, s * penalty, s / penalty);
  scores.index_copy_(0, index, s);
}

}  // namespace

torch::Tensor process_logits(const SamplerConfig& cfg, const SamplerState& state, const torch::Tensor& logits) {
  // scores: [V]
  torch::Tensor scores = as_scores(logits);
  apply_repetition_penalty(scores, state, cfg.repetition_penalty);
  if (cfg.greedy()) return scores;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (cfg.temperature != 1.0) scores = scores / cfg.temperature;
  if (cfg.top_k > 0) {
    // TopKLogitsWarper: keep scores >= the k-th largest (ties at the threshold are kept).
    const std::int64_t k = std::min<std::int64_t>(cfg.top_k, scores.size(0));
    auto kth = std::get<0>(torch::topk(scores, k)).index({k - 1});
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (cfg.top_p < 1.0) {
    // TopPLogitsWarper: drop the ascending-sorted tokens whose cumulative probability is
    // <= 1 - top_p; the most likely token is always kept.
    auto [sorted, order] = torch::sort(scores, /*dim=*/0, /*descending=*/false);
    auto cumulative = sorted.softmax(0).cumsum(0);
    auto remove_sorted = cumulative <= (1.0 - cfg.top_p);
    remove_sorted.index_put_({-1}, false);
    auto remove = remove_sorted.scatter(0, order, remove_sorted);
    scores = scores.masked_fill(remove, neg_inf);
  }
  return scores;
}

std::int64_t sample_next(const SamplerConfig& cfg, SamplerState& state, const torch::Tensor& logits) {
  torch::Tensor scores = process_logits(cfg, state, logits);
  std::int64_t id;
  if (cfg.greedy()) {
    id = scores.argmax().item<std::int64_t>();
  } else {
    auto probs = scores.softmax(0);
    id = torch::multinomial(probs, /*num_samples=*/1, /*replacement=*/false, state.generator()).item<std::int64_t>();
  }
  state.accept(id);
  return id;
}

}  // namespace lli
