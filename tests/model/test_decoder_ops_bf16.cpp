// The fused bf16 decoder-layer ops (nn/decoder_ops_bf16.h) against the eager bf16 sequences they
// replace (transformers' LlamaRMSNorm, apply_rotary_pos_emb, act(gate) * up), on odd widths.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config_json.h"
#include "models/llama.h"
#include "nn/decoder_ops_bf16.h"
#include "nn/linear_bf16.h"
#include "nn/rms_norm.h"
#include "model/model_test_util.h"
#include "test_util.h"

namespace {

namespace nn = lli::nn;

torch::Tensor eager_rms(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto h = x.to(torch::kFloat32);
  auto var = h.pow(2).mean(-1, true);
  return w * (h * torch::rsqrt(var + eps)).to(x.scalar_type());
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

// Elements that differ, and the largest difference in bf16 units of the reference's magnitude.
struct Diff {
  std::int64_t count;
  double max_abs;
};
Diff diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kFloat32) - b.to(torch::kFloat32)).abs();
  return {(d > 0).sum().item<std::int64_t>(), d.max().item<double>()};
}

struct KernelsOn {
  KernelsOn() {
    nn::set_bf16_kernels_enabled(true);
    nn::set_decoder_ops_enabled(true);
  }
  ~KernelsOn() {
    nn::set_bf16_kernels_enabled(true);
    nn::set_decoder_ops_enabled(true);
  }
};

}  // namespace

TEST_CASE("decoder_ops_bf16: rotary and silu*up equal the eager bf16 expressions bit for bit") {
  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  struct S {
    std::int64_t B, L, H, hd;
  };
  for (const auto& s : std::vector<S>{{1, 1, 32, 128}, {1, 7, 4, 64}, {2, 3, 3, 18}, {1, 601, 2, 40}, {1, 2, 5, 2}}) {
    CAPTURE(s.L);
    CAPTURE(s.hd);
    auto x = torch::randn({s.B, s.L, s.H, s.hd}).mul(3).to(torch::kBFloat16);
    auto ang = torch::randn({s.L, s.hd}).mul(4);
    auto c = ang.cos().to(torch::kBFloat16), sn = ang.sin().to(torch::kBFloat16);
    auto xt = x.transpose(1, 2);  // [B, H, L, hd], as the attention computes it
    auto ref = (xt * c.unsqueeze(0).unsqueeze(0) + rotate_half(xt) * sn.unsqueeze(0).unsqueeze(0)).transpose(1, 2);
    auto fused = x.clone();
    REQUIRE(nn::decoder_ops_bf16_applicable({&fused, &c, &sn}));
    nn::rotary_bf16_(fused, c, sn);
    const auto d = diff(fused, ref);
    MESSAGE("rotary B=" << s.B << " L=" << s.L << " H=" << s.H << " hd=" << s.hd << ": " << d.count << " elements differ");
    CHECK(d.count == 0);
  }
  for (std::int64_t F : {1, 15, 16, 17, 5632, 11008}) {
    CAPTURE(F);
    auto g = torch::randn({2, F}).mul(4).to(torch::kBFloat16), u = torch::randn({2, F}).to(torch::kBFloat16);
    auto ref = torch::silu(g) * u;
    auto fused = nn::silu_mul_bf16(g, u);
    const auto d = diff(fused, ref);
    // silu's exp is a polynomial here and Sleef's in libtorch: a rare last-bit difference of the
    // fp32 value may round silu(g) to the neighbouring bf16.
    MESSAGE("silu*up F=" << F << ": " << d.count << " of " << ref.numel() << " elements differ, max " << d.max_abs);
    CHECK(d.count <= ref.numel() / 10000 + 1);  // measured: 0
    CHECK(torch::allclose(fused.to(torch::kFloat32), ref.to(torch::kFloat32), 1e-2, 1e-2));
  }
  CHECK_THROWS(nn::silu_mul_bf16(torch::zeros({2, 3}, torch::kBFloat16), torch::zeros({3, 2}, torch::kBFloat16)));
  auto f32 = torch::zeros({1, 1, 2, 4});
  CHECK_FALSE(nn::decoder_ops_bf16_applicable({&f32}));
}

TEST_CASE("decoder_ops_bf16: RMSNorm and residual + RMSNorm match LlamaRMSNorm in bf16, and the module dispatches") {
  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  KernelsOn guard;
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  for (std::int64_t D : {1, 31, 32, 100, 2048, 4096}) {
    CAPTURE(D);
    auto x = torch::randn({3, 5, D}).mul(2).to(torch::kBFloat16);
    auto delta = torch::randn({3, 5, D}).to(torch::kBFloat16);
    auto w = torch::randn({D}).to(torch::kBFloat16);
    const double eps = 1e-5;
    auto ref = eager_rms(x, w, eps);
    REQUIRE(nn::rms_norm_bf16_applicable(x, w));  // libtorch's sum order was reproduced
    auto fused = nn::rms_norm_bf16(x, w, eps);
    const auto d = diff(fused, ref);
    // The fp32 sum of squares is added in another order: a normalised value next to a rounding
    // boundary may round to the neighbouring bf16 (then times w).
    MESSAGE("rms D=" << D << ": " << d.count << " of " << ref.numel() << " elements differ, max " << d.max_abs);
    CHECK(d.count <= ref.numel() / 10000 + 1);  // measured: 0
    CHECK(torch::allclose(fused.to(torch::kFloat32), ref.to(torch::kFloat32), 2e-2, 1e-2));

    auto h_ref = x + delta;
    auto [h, n] = nn::add_rms_norm_bf16(x, delta, w, eps);
    CHECK(torch::equal(h, h_ref));
    CHECK(diff(n, eager_rms(h_ref, w, eps)).count <= ref.numel() / 10000 + 1);

    nn::RMSNorm mod(D, eps);
    mod->weight = w;
    auto [h2, n2] = mod->forward_add(x, delta);
    CHECK(torch::equal(h2, h_ref));
    CHECK(torch::equal(n2, n));
    CHECK(torch::equal(mod->forward(x), fused));
    nn::set_bf16_kernels_enabled(false);  // the eager path, exactly
    CHECK(torch::equal(mod->forward(x), ref));
    nn::set_bf16_kernels_enabled(true);
  }
}

TEST_CASE("decoder_ops_bf16: a bf16 GQA LLaMA gives the same logits with and without the fused ops, prefill and decode") {
  if (!nn::bf16_kernels_available()) LLI_SKIP("this CPU has no AVX512-BF16 (or LLI_FAST_BF16=0)");
  KernelsOn guard;
  namespace m = lli::models;
  torch::NoGradGuard ng;
  auto j = nlohmann::json::parse(R"({"vocab_size": 300, "hidden_size": 256, "intermediate_size": 344,
      "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2})");
  auto cfg = m::parse_llama_config(m::ConfigReader(j, "config.json", "text_config"));
  m::LlamaForCausalLM lm(cfg);
  torch::manual_seed(11);
  for (auto& p : lm->named_parameters()) p.value().set_data((torch::randn(p.value().sizes()) * 0.1).to(torch::kBFloat16));
  auto ids = torch::randint(0, cfg.vocab_size, {1, 12}, torch::kInt64);
  auto emb = lm->embed(ids);  // [1, 12, D] bf16
  // Prefill of 9 positions, then 3 decode steps, with the fused ops on (1) and off (0).
  std::vector<torch::Tensor> out[2];
  for (int on : {1, 0}) {
    nn::set_decoder_ops_enabled(on == 1);
    auto cache = lm->make_cache(16);
    out[on].push_back(lm->forward(emb.narrow(1, 0, 9), &cache));
    for (std::int64_t t = 9; t < 12; ++t) out[on].push_back(lm->forward(emb.narrow(1, t, 1), &cache, true));
  }
  nn::set_decoder_ops_enabled(true);
  for (std::size_t i = 0; i < out[0].size(); ++i) {
    const double d = lli::test::max_abs_diff(out[1][i], out[0][i]);
    const double scale = out[0][i].abs().max().item<double>();
    MESSAGE("step " << i << ": max |fused - eager| = " << d << " (logits up to " << scale << ")");
    CHECK(d <= 1e-6 * scale);  // measured: 0 (the fused ops round where the eager ops round)
  }
}
