// Sampler: greedy, seeded sampling, top-k / top-p / temperature / repetition penalty (transformers
// semantics), and greedy on the fixture's real logits.
#include "test_util.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstring>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "sampling/sampler.h"

using lli::SamplerConfig;
using lli::SamplerState;

namespace {

torch::Tensor random_logits(std::int64_t vocab, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randn({vocab}, gen) * 3.0;
}

SamplerConfig sampling_config(double temperature = 1.0, double top_p = 1.0, std::int64_t top_k = 0) {
  SamplerConfig c;
  c.temperature = temperature;
  c.top_p = top_p;
  c.top_k = top_k;
  return c;
}

std::vector<std::int64_t> draw(const SamplerConfig& cfg, std::uint64_t seed, const torch::Tensor& logits, int n) {
  SamplerState st(seed);
  std::vector<std::int64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(lli::sample_next(cfg, st, logits));
  return out;
}

}  // namespace

TEST_CASE("sampler: defaults and greedy flag and validation") {
  SamplerConfig d;
  CHECK(d.temperature == doctest::Approx(0.2));
  CHECK(d.top_p == doctest::Approx(0.7));
  CHECK(d.max_new_tokens == 512);
  CHECK_FALSE(d.greedy());
  CHECK_NOTHROW(d.validate());
  auto bad = [](auto mutate) {
    SamplerConfig c;
    mutate(c);
    CHECK_THROWS_AS(c.validate(), lli::UsageError);
  };
  bad([](SamplerConfig& c) { c.temperature = -0.1; });
  bad([](SamplerConfig& c) { c.top_p = 0.0; });
  bad([](SamplerConfig& c) { c.top_p = 1.5; });
  bad([](SamplerConfig& c) { c.top_k = -1; });
  bad([](SamplerConfig& c) { c.repetition_penalty = 0.0; });
  bad([](SamplerConfig& c) { c.max_new_tokens = 0; });
}

TEST_CASE("sampler: greedy at temperature 0 is argmax and ignores the seed") {
  auto logits = random_logits(1000, 7);
  SamplerConfig g = sampling_config(/*temperature=*/0.0);
  CHECK(g.greedy());
  const std::int64_t argmax = logits.argmax().item<std::int64_t>();
  CHECK(draw(g, 1, logits, 5) == std::vector<std::int64_t>(5, argmax));
  CHECK(draw(g, 999, logits, 5) == std::vector<std::int64_t>(5, argmax));
  // [1, V] logits and other dtypes are accepted
  SamplerState st(0);
  CHECK(lli::sample_next(g, st, logits.unsqueeze(0).to(torch::kBFloat16)) ==
        logits.to(torch::kBFloat16).argmax().item<std::int64_t>());
  CHECK(st.n_generated() == 1);
  CHECK(st.seen().count(argmax) == 1);
}

TEST_CASE("sampler: the same seed gives the same tokens and another seed other tokens") {
  auto logits = random_logits(50, 3) * 0.1;  // nearly flat: draws vary
  auto cfg = sampling_config(1.0);
  const auto a = draw(cfg, 1234, logits, 32);
  const auto b = draw(cfg, 1234, logits, 32);
  const auto c = draw(cfg, 4321, logits, 32);
  CHECK(a == b);
  CHECK(a != c);
  std::set<std::int64_t> distinct(a.begin(), a.end());
  CHECK(distinct.size() > 5);
  // the caller's logits are not modified
  CHECK(torch::equal(logits, random_logits(50, 3) * 0.1));
}

TEST_CASE("sampler: top-k = 1 and a tiny top-p equal greedy") {
  for (std::uint64_t s = 0; s < 5; ++s) {
    auto logits = random_logits(300, 100 + s);
    const std::int64_t argmax = logits.argmax().item<std::int64_t>();
    CHECK(draw(sampling_config(1.0, 1.0, /*top_k=*/1), s, logits, 4) == std::vector<std::int64_t>(4, argmax));
    CHECK(draw(sampling_config(1.5, /*top_p=*/1e-6, 0), s, logits, 4) == std::vector<std::int64_t>(4, argmax));
  }
}

TEST_CASE("sampler: top-p keeps the smallest set reaching top_p and top-k keeps ties") {
  // probabilities 0.5, 0.3, 0.2
  auto logits = torch::log(torch::tensor({0.5f, 0.3f, 0.2f}));
  SamplerState st(0);
  auto s07 = lli::process_logits(sampling_config(1.0, 0.7), st, logits);
  CHECK(std::isfinite(s07[0].item<float>()));
  CHECK(std::isfinite(s07[1].item<float>()));
  CHECK(std::isinf(s07[2].item<float>()));
  auto s04 = lli::process_logits(sampling_config(1.0, 0.4), st, logits);
  CHECK(std::isfinite(s04[0].item<float>()));
  CHECK(std::isinf(s04[1].item<float>()));
  CHECK(std::isinf(s04[2].item<float>()));
  // top-k = 2 with a tie at the threshold keeps three
  auto ties = torch::tensor({1.0f, 3.0f, 2.0f, 2.0f, 0.0f});
  auto k2 = lli::process_logits(sampling_config(1.0, 1.0, 2), st, ties);
  CHECK(torch::isinf(k2).sum().item<std::int64_t>() == 2);
  CHECK(std::isinf(k2[0].item<float>()));
  CHECK(std::isinf(k2[4].item<float>()));
  // top-k larger than the vocabulary keeps everything
  CHECK(torch::isinf(lli::process_logits(sampling_config(1.0, 1.0, 100), st, ties)).sum().item<std::int64_t>() == 0);
  // temperature divides the logits
  auto t05 = lli::process_logits(sampling_config(0.5), st, ties);
  CHECK(torch::allclose(t05, ties / 0.5));
}

TEST_CASE("sampler: repetition penalty on a hand-made logits vector with HF semantics") {
  auto logits = torch::tensor({2.0f, -1.0f, 0.5f, 3.0f});
  SamplerConfig cfg = sampling_config(/*temperature=*/0.0);
  cfg.repetition_penalty = 2.0;
  SamplerState st(0);
  st.add_context({0, 1, 1});
  auto s = lli::process_logits(cfg, st, logits);
  CHECK(torch::allclose(s, torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})));
  // the generated token is penalised from the next step on: 3.0 -> 1.5 (still the largest)
  CHECK(lli::sample_next(cfg, st, logits) == 3);
  auto s2 = lli::process_logits(cfg, st, logits);
  CHECK(torch::allclose(s2, torch::tensor({1.0f, -2.0f, 0.5f, 1.5f})));
  CHECK(lli::sample_next(cfg, st, logits) == 3);
  // a penalty that flips the argmax
  auto l2 = torch::tensor({3.0f, 2.0f});
  SamplerState st2(0);
  st2.add_context({0});
  CHECK(lli::sample_next(cfg, st2, l2) == 1);
  // penalty 1 changes nothing
  SamplerConfig off = cfg;
  off.repetition_penalty = 1.0;
  CHECK(torch::equal(lli::process_logits(off, st, logits), logits));
}

TEST_CASE("sampler: sampled frequencies follow the softmax of logits over temperature") {
  auto logits = torch::log(torch::tensor({0.5f, 0.3f, 0.2f}));
  SamplerState st(42);
  auto cfg = sampling_config(1.0);
  std::vector<int> counts(3, 0);
  const int n = 6000;
  for (int i = 0; i < n; ++i) ++counts[lli::sample_next(cfg, st, logits)];
  CHECK(counts[0] / double(n) == doctest::Approx(0.5).epsilon(0.06));
  CHECK(counts[1] / double(n) == doctest::Approx(0.3).epsilon(0.08));
  CHECK(counts[2] / double(n) == doctest::Approx(0.2).epsilon(0.1));
  CHECK_THROWS_AS(lli::sample_next(cfg, st, torch::zeros({2, 3})), lli::InputError);
  CHECK_THROWS_AS(lli::sample_next(cfg, st, torch::tensor({1.0f, NAN})), lli::InputError);
}

TEST_CASE("sampler: greedy on the fixture last-position logits gives its first generated token") {
  const lli::test::fs::path golden = lli::test::fixtures_dir() / "llava-tiny-a" / "golden.safetensors";
  auto file = lli::st::File::open(golden);
  const lli::st::TensorRef* logits_ref = nullptr;
  const lli::st::TensorRef* gen_ref = nullptr;
  for (const auto& t : file.tensors()) {
    if (t.name == "logits") logits_ref = &t;
    if (t.name == "generated_ids") gen_ref = &t;
  }
  REQUIRE(logits_ref);
  REQUIRE(gen_ref);
  REQUIRE(logits_ref->dtype == lli::st::DType::F32);
  REQUIRE(logits_ref->shape.size() == 3);
  // logits: [1, L, V]
  auto logits = torch::from_blob(const_cast<void*>(logits_ref->data), logits_ref->shape, torch::kFloat32).clone();
  std::int64_t first = 0;
  std::memcpy(&first, gen_ref->data, sizeof(first));
  SamplerState st(0);
  CHECK(lli::sample_next(sampling_config(0.0), st, logits[0][-1]) == first);
}
