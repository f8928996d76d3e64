// The bf16 GEMV fast path (nn/linear_bf16.h) against torch::linear in bf16 and an fp64 reference;
// nn::Linear's dispatch (bf16 few rows -> fast path; fp32 and many rows -> torch::linear); the
// decode attention kernel (nn/attention_bf16.h) against the eager bf16 path.
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/attention_bf16.h"
#include "nn/layers.h"
#include "nn/linear_bf16.h"
#include "test_util.h"

namespace {

namespace nn = lli::nn;

// ||a - b|| / ||b|| in fp64.
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  return ((a64 - b64).norm() / b64.norm()).item<double>();
}

// Restores the process-wide switch at scope exit.
struct FastLinearGuard {
  ~FastLinearGuard() { nn::set_bf16_kernels_enabled(true); }
};

}  // namespace

TEST_CASE("linear_bf16: matches torch::linear in bf16 for decode shapes, tails, bias and batch dims") {
  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  struct Shape {
    std::int64_t M, N, K;
    bool bias;
  };
  // K: multiples of 128, of 32 only, and with a masked tail; N below and above the thread split.
  const std::vector<Shape> shapes{{1, 4096, 4096, false}, {1, 11008, 4096, false}, {1, 4096, 11008, false},
                                  {1, 1000, 4096, true},  {2, 300, 1024, true},    {3, 77, 96, false},
                                  {4, 129, 100, true},    {5, 64, 33, false},      {8, 513, 1, true},
                                  {7, 17, 4127, true},    {1, 3, 31, false},       {6, 40000, 64, false}};
  for (const auto& s : shapes) {
    CAPTURE(s.M);
    CAPTURE(s.N);
    CAPTURE(s.K);
    CAPTURE(s.bias);
    auto x = torch::randn({s.M, s.K}).to(torch::kBFloat16);
    auto w = (torch::randn({s.N, s.K}) * 0.05).to(torch::kBFloat16);
    auto b = s.bias ? torch::randn({s.N}).to(torch::kBFloat16) : torch::Tensor();
    // linear() takes the kernel up to kLinearBF16MaxRows rows; linear_bf16 itself accepts any M.
    REQUIRE(nn::linear_bf16_applicable(x, w, b) == (s.M <= nn::kLinearBF16MaxRows));
    auto fast = nn::linear_bf16(x, w, b);
    auto ref = torch::linear(x, w, b);  // oneDNN (or the reference kernel) in bf16
    auto exact = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64),
                               s.bias ? b.to(torch::kFloat64) : torch::Tensor());
    REQUIRE((fast.scalar_type() == torch::kBFloat16));
    REQUIRE((fast.sizes() == ref.sizes()));
    const double e_fast = rel_err(fast, exact), e_torch = rel_err(ref, exact), e_vs = rel_err(fast, ref);
    MESSAGE("M=" << s.M << " N=" << s.N << " K=" << s.K << ": rel err fast " << e_fast << ", torch " << e_torch
                 << ", fast vs torch " << e_vs);
    CHECK(e_fast < 3e-3);  // one bf16 rounding of each output (2^-9 at most, ~1e-3 rms)
    CHECK(e_vs < 4e-3);
    CHECK(e_fast < e_torch * 1.5 + 1e-4);
  }

  // Batch dims are kept: [B, L, K] -> [B, L, N]; non-contiguous x is accepted.
  auto w = (torch::randn({96, 64}) * 0.05).to(torch::kBFloat16);
  auto x3 = torch::randn({2, 64, 3}).to(torch::kBFloat16).transpose(1, 2);  // [2, 3, 64], strided
  auto y3 = nn::linear_bf16(x3, w, {});
  CHECK((y3.sizes() == torch::IntArrayRef({2, 3, 96})));
  CHECK(rel_err(y3, torch::linear(x3, w)) < 4e-3);

  // Non-finite inputs propagate like a dot product does.
  auto xi = torch::ones({1, 64}).to(torch::kBFloat16);
  xi[0][5] = std::numeric_limits<float>::infinity();
  auto wi = torch::ones({4, 64}).to(torch::kBFloat16);
  CHECK(torch::isinf(nn::linear_bf16(xi, wi, {})).all().item<bool>());
}

TEST_CASE("linear_bf16: applicability rules and nn::Linear dispatch, and fp32 path unchanged") {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  FastLinearGuard restore;
  nn::Linear lin(256, 128, /*bias=*/true);
  lin->weight.set_data(torch::randn({128, 256}) * 0.05);
  lin->bias.set_data(torch::randn({128}));

  // fp32: always torch::linear, bit for bit.
  auto xf = torch::randn({1, 1, 256});
  CHECK(torch::equal(lin(xf), torch::linear(xf, lin->weight, lin->bias)));
  CHECK_FALSE(nn::linear_bf16_applicable(xf, lin->weight, lin->bias));

  lin->weight.set_data(lin->weight.to(torch::kBFloat16));
  lin->bias.set_data(lin->bias.to(torch::kBFloat16));
  auto xb = torch::randn({1, 1, 256}).to(torch::kBFloat16);
  auto many = torch::randn({1, nn::kLinearBF16MaxRows + 1, 256}).to(torch::kBFloat16);
  // Many rows: oneDNN, bit for bit.
  CHECK_FALSE(nn::linear_bf16_applicable(many, lin->weight, lin->bias));
  CHECK(torch::equal(lin(many), torch::linear(many, lin->weight, lin->bias)));
  // Non-contiguous weight, dtype mismatch, wrong K: not taken.
  auto wt = torch::randn({256, 128}).to(torch::kBFloat16).t();
  CHECK_FALSE(nn::linear_bf16_applicable(xb, wt, {}));
  CHECK_FALSE(nn::linear_bf16_applicable(xb, lin->weight, lin->bias.to(torch::kFloat32)));
  CHECK_FALSE(nn::linear_bf16_applicable(torch::randn({1, 255}).to(torch::kBFloat16), lin->weight, {}));

  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  CHECK(nn::linear_bf16_applicable(xb, lin->weight, lin->bias));
  CHECK(torch::equal(lin(xb), nn::linear_bf16(xb, lin->weight, lin->bias)));
  // The switch turns the fast path off for the whole process.
  nn::set_bf16_kernels_enabled(false);
  CHECK_FALSE(nn::bf16_kernels_available());
  CHECK(torch::equal(lin(xb), torch::linear(xb, lin->weight, lin->bias)));
}

TEST_CASE("attention_bf16: decode and prefill attention over KV-cache views match the eager bf16 path") {
  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  torch::NoGradGuard ng;
  torch::manual_seed(11);
  FastLinearGuard restore;
  struct Case {
    std::int64_t H, Hkv, Lq, Lk, D;
    bool llama, causal;
  };
  // Decode shapes (few rows: in-place kernel) and prefill shapes (>= 16 rows: packed kernel),
  // grouped-query heads, causal offsets, head dims with tails.
  const std::vector<Case> cases{{32, 32, 1, 617, 128, true, false}, {8, 2, 1, 40, 64, true, false},
                                {4, 4, 3, 20, 80, true, true},      {4, 1, 2, 9, 16, true, true},
                                {16, 16, 1, 577, 64, false, false}, {2, 2, 5, 5, 33, false, true},
                                {8, 8, 120, 120, 128, true, true},  {8, 2, 20, 50, 64, true, true},
                                {3, 3, 17, 17, 33, true, true},     {4, 4, 40, 77, 64, false, false},
                                {2, 1, 16, 31, 250, true, true},    {2, 2, 64, 64, 7, false, true}};
  for (const auto& c : cases) {
    CAPTURE(c.H);
    CAPTURE(c.Hkv);
    CAPTURE(c.Lq);
    CAPTURE(c.Lk);
    CAPTURE(c.D);
    const std::int64_t cap = c.Lk + 13;  // a preallocated cache, as KVCache holds it
    auto kc = torch::randn({1, c.Hkv, cap, c.D}).to(torch::kBFloat16);
    auto vc = torch::randn({1, c.Hkv, cap, c.D}).to(torch::kBFloat16);
    auto k = kc.narrow(2, 0, c.Lk), v = vc.narrow(2, 0, c.Lk);  // strided views
    auto q = (torch::randn({1, c.H, c.Lq, c.D}) * 2).to(torch::kBFloat16);
    nn::AttentionOptions opt;
    if (c.llama) {
      opt.scale_mode = nn::AttentionScale::divide_scores;
      opt.scale = std::sqrt(static_cast<double>(c.D));
      opt.softmax_fp32 = true;
    } else {
      opt.scale_mode = nn::AttentionScale::multiply_query;
      opt.scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    }
    opt.causal = c.causal;
    opt.causal_offset = c.causal ? c.Lk - c.Lq : 0;
    auto fast = nn::attention_bf16(q, k, v, opt);
    // nn::attention dispatches here for few rows, and for many rows with an fp32 softmax.
    const bool dispatched = c.Lq <= nn::kAttentionBF16MaxQueries || c.llama;
    CHECK(nn::attention_bf16_applicable(q, k, v, {}, opt) == dispatched);
    if (dispatched) CHECK(torch::equal(fast, nn::attention(q, k, v, {}, opt)));
    nn::set_bf16_kernels_enabled(false);
    auto eager = nn::attention(q, k, v, {}, opt);
    auto exact = nn::attention(q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64), {}, opt);
    nn::set_bf16_kernels_enabled(true);
    REQUIRE((fast.sizes() == eager.sizes()));
    const double e_fast = rel_err(fast, exact), e_eager = rel_err(eager, exact), e_vs = rel_err(fast, eager);
    MESSAGE("H=" << c.H << "/" << c.Hkv << " Lq=" << c.Lq << " Lk=" << c.Lk << " D=" << c.D << ": rel err fast "
                 << e_fast << ", eager " << e_eager << ", fast vs eager " << e_vs);
    CHECK(e_fast < e_eager * 1.5 + 1e-3);
    CHECK(e_vs < 2e-2);
  }
  {
    // CLIP self-attention over a long sequence (OWLv2's 3,601 tokens): fused_long dispatches to
    // the kernel, which stays as close to float64 as the eager bf16 path.
    auto q = (torch::randn({1, 2, 1100, 64}) * 2).to(torch::kBFloat16);
    auto k = torch::randn({1, 2, 1100, 64}).to(torch::kBFloat16), v = torch::randn({1, 2, 1100, 64}).to(torch::kBFloat16);
    nn::AttentionOptions opt;
    opt.scale = 0.125;
    CHECK_FALSE(nn::attention_bf16_applicable(q, k, v, {}, opt));
    opt.fused_long = true;
    CHECK(nn::attention_bf16_applicable(q, k, v, {}, opt));
    auto fused = nn::attention(q, k, v, {}, opt);
    CHECK(torch::equal(fused, nn::attention_bf16(q, k, v, opt)));
    opt.fused_long = false;
    auto eager = nn::attention(q, k, v, {}, opt);
    auto exact = nn::attention(q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64), {}, opt);
    const double e_fused = rel_err(fused, exact), e_eager = rel_err(eager, exact);
    MESSAGE("CLIP long (2 heads, 1100 tokens): rel err fused " << e_fused << ", eager " << e_eager);
    CHECK(e_fused < e_eager * 1.5 + 1e-3);
  }
  // Not taken: a mask, too many query rows, fp32.
  auto q = torch::randn({1, 2, 1, 16}).to(torch::kBFloat16), k = torch::randn({1, 2, 4, 16}).to(torch::kBFloat16);
  nn::AttentionOptions opt;
  CHECK_FALSE(nn::attention_bf16_applicable(q, k, k, torch::zeros({1, 4}), opt));
  CHECK_FALSE(nn::attention_bf16_applicable(torch::randn({1, 2, nn::kAttentionBF16MaxQueries + 1, 16})
                                                .to(torch::kBFloat16), k, k, {}, opt));
  CHECK_FALSE(nn::attention_bf16_applicable(q.to(torch::kFloat32), k.to(torch::kFloat32), k.to(torch::kFloat32), {},
                                            opt));
}
