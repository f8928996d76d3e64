// Stable Diffusion VAE (diffusers 0.31 AutoencoderKL) parity with the gligen-gen-tiny-a golden
// fixture (fp32 CPU): decode, encode posterior (mean, std); tiled decode / encode equal diffusers'
// tile-and-blend procedure (re-implemented here with its per-row scalar loops) and are compared
// with the untiled result (reported, inside and across seams); bf16 drift (reported); config
// parsing and strict loading.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/vae.h"
#include "model_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using lli::test::error_of;
using lli::test::fixtures_dir;
using lli::test::has;
using lli::test::max_abs_diff;
using lli::test::TempDir;

fs::path vae_dir() { return fixtures_dir() / "gligen-gen-tiny-a" / "vae"; }
std::map<std::string, torch::Tensor> golden() {
  return lli::test::load_golden(fixtures_dir() / "gligen-gen-tiny-a" / "golden.safetensors");
}

double check_close(const torch::Tensor& got, const torch::Tensor& want, double atol, double rtol, const std::string& what) {
  const double d = max_abs_diff(got, want);
  auto excess = ((got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs() - (atol + rtol * want.to(torch::kFloat64).abs()))
                    .max()
                    .item<double>();
  MESSAGE(what << ": max |diff| = " << d);
  CHECK_MESSAGE(excess <= 0, what << " exceeds atol " << atol << " + rtol " << rtol << " (max |diff| " << d << ")");
  return d;
}

// diffusers' blend_v / blend_h, literally: one row (column) at a time with Python-float weights.
void blend_v(const torch::Tensor& a, torch::Tensor& b, std::int64_t e) {
  e = std::min({a.size(2), b.size(2), e});
  for (std::int64_t y = 0; y < e; ++y)
    b.select(2, y).copy_(a.select(2, a.size(2) - e + y) * (1 - static_cast<double>(y) / e) +
                         b.select(2, y) * (static_cast<double>(y) / e));
}
void blend_h(const torch::Tensor& a, torch::Tensor& b, std::int64_t e) {
  e = std::min({a.size(3), b.size(3), e});
  for (std::int64_t x = 0; x < e; ++x)
    b.select(3, x).copy_(a.select(3, a.size(3) - e + x) * (1 - static_cast<double>(x) / e) +
                         b.select(3, x) * (static_cast<double>(x) / e));
}

// The tiled procedure of AutoencoderKL._tiled_encode / tiled_decode with `run` as the per-tile model.
torch::Tensor reference_tiled(const torch::Tensor& in, std::int64_t tile_in, std::int64_t tile_out, double overlap_factor,
                              const std::function<torch::Tensor(const torch::Tensor&)>& run) {
  const auto overlap = static_cast<std::int64_t>(tile_in * (1 - overlap_factor));
  const auto extent = static_cast<std::int64_t>(tile_out * overlap_factor);
  const auto limit = tile_out - extent;
  std::vector<std::vector<torch::Tensor>> rows;
  for (std::int64_t i = 0; i < in.size(2); i += overlap) {
    std::vector<torch::Tensor> row;
    for (std::int64_t j = 0; j < in.size(3); j += overlap) {
      using torch::indexing::Slice;
      row.push_back(run(in.index({Slice(), Slice(), Slice(i, i + tile_in), Slice(j, j + tile_in)})).clone());
    }
    rows.push_back(row);
  }
  std::vector<torch::Tensor> out_rows;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::vector<torch::Tensor> r;
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      auto& t = rows[i][j];
      if (i > 0) blend_v(rows[i - 1][j], t, extent);
      if (j > 0) blend_h(rows[i][j - 1], t, extent);
      using torch::indexing::Slice;
      r.push_back(t.index({Slice(), Slice(), Slice(0, limit), Slice(0, limit)}));
    }
    out_rows.push_back(torch::cat(r, 3));
  }
  return torch::cat(out_rows, 2);
}

void write_vae_copy(const fs::path& out, const std::function<void(lli::TensorMap&)>& edit,
                    const std::function<void(nlohmann::json&)>& cfg_edit = {}) {
  auto j = m::read_json_file(vae_dir() / "config.json");
  if (cfg_edit) cfg_edit(j);
  std::ofstream(out / "config.json") << j.dump(2);
  auto t = lli::load_tensors(lli::st::Checkpoint::open(vae_dir() / "diffusion_pytorch_model.safetensors"));
  edit(t);
  lli::save_tensors(out / "diffusion_pytorch_model.safetensors", t);
}

}  // namespace

TEST_CASE("gligen-gen-tiny-a fp32: VAE decode and encode posterior match AutoencoderKL") {
  auto g = golden();
  auto vae = m::load_vae(vae_dir());
  CHECK(vae->cfg.scale_factor() == 8);
  CHECK(vae->cfg.scaling_factor == doctest::Approx(0.18215));
  auto x = vae->decode(g["vae_decode_in"]);
  CHECK((x.scalar_type() == torch::kFloat32));
  check_close(x, g["vae_decode_out"], 1e-4, 1e-4, "vae_decode_out");
  auto p = vae->encode(g["vae_encode_in"]);
  check_close(p.mean, g["vae_encode_mean"], 1e-4, 1e-4, "vae_encode_mean");
  check_close(p.std, g["vae_encode_std"], 1e-4, 1e-4, "vae_encode_std");
  CHECK(max_abs_diff(p.std, torch::exp(0.5 * p.logvar)) == 0);

  // Tiling enabled but the input fits one tile: the untiled path.
  m::VAETiling on;
  on.enabled = true;
  CHECK(max_abs_diff(vae->decode(g["vae_decode_in"], on), x) == 0);

  // Query chunking in the mid-block attention changes nothing.
  m::VAELoadOptions o;
  o.attention_q_chunk = 5;
  auto chunked = m::load_vae(vae_dir(), o);
  check_close(chunked->decode(g["vae_decode_in"]), g["vae_decode_out"], 1e-4, 1e-4, "vae_decode_out (q_chunk 5)");
}

TEST_CASE("VAE tiled decode: diffusers' tile-and-blend procedure, compared with the untiled decode (reported)") {
  auto vae = m::load_vae(vae_dir());
  torch::manual_seed(7);
  auto z = torch::randn({1, 4, 20, 28});  // 160 x 224 pixels: 4 x 5 tiles of 8 latents, stride 6
  m::VAETiling on;
  on.enabled = true;
  auto tiled = vae->decode(z, on);
  REQUIRE(tiled.sizes() == torch::IntArrayRef({1, 3, 160, 224}));
  auto ref = reference_tiled(z, 8, 64, 0.25, [&](const torch::Tensor& t) { return vae->decode(t); });
  const double d_ref = max_abs_diff(tiled, ref);
  MESSAGE("tiled decode vs diffusers' procedure: max |diff| = " << d_ref);
  CHECK(d_ref < 1e-6);

  // Against the untiled decode: tiles see only their own context (and their own GroupNorm
  // statistics), so even tile interiors differ; the blended bands (16 px after every 48) differ more.
  auto full = vae->decode(z);
  auto diff = (tiled - full).abs().amax(1).squeeze(0);  // [H, W]
  auto seam = torch::zeros({160, 224}, torch::kBool);
  for (std::int64_t s = 48; s < 160; s += 48) seam.narrow(0, s, 16).fill_(true);
  for (std::int64_t s = 48; s < 224; s += 48) seam.narrow(1, s, 16).fill_(true);
  const double inside = diff.masked_select(seam.logical_not()).max().item<double>();
  const double across = diff.masked_select(seam).max().item<double>();
  const double scale = full.abs().max().item<double>();
  const double mean_inside = diff.masked_select(seam.logical_not()).mean().item<double>();
  MESSAGE("tiled vs untiled decode: max |diff| inside tiles " << inside << " (mean " << mean_inside << "), in blended bands "
          << across << "; max |value| " << scale);
  CHECK(inside < scale);
  CHECK(across < 2 * scale);
}

TEST_CASE("VAE tiled encode: diffusers' tile-and-blend procedure on the moments, posterior from the blend") {
  auto vae = m::load_vae(vae_dir());
  torch::manual_seed(11);
  auto x = torch::rand({1, 3, 136, 200}) * 2 - 1;  // uneven edge tiles
  m::VAETiling on;
  on.enabled = true;
  auto p = vae->encode(x, on);
  REQUIRE(p.mean.sizes() == torch::IntArrayRef({1, 4, 17, 25}));
  // Moments of each tile = [mean | logvar] before the clamp; diffusers blends the moments.
  auto ref = reference_tiled(x, 64, 8, 0.25, [&](const torch::Tensor& t) {
    auto q = vae->encode(t);
    return torch::cat({q.mean, q.logvar}, 1);  // logvar clamp is a no-op at these values
  });
  auto want_mean = ref.narrow(1, 0, 4), want_logvar = torch::clamp(ref.narrow(1, 4, 4), -30, 20);
  const double dm = max_abs_diff(p.mean, want_mean), dl = max_abs_diff(p.logvar, want_logvar);
  MESSAGE("tiled encode vs diffusers' procedure: mean " << dm << ", logvar " << dl);
  CHECK(dm < 1e-6);
  CHECK(dl < 1e-6);
  auto full = vae->encode(x);
  MESSAGE("tiled vs untiled encode: mean max |diff| " << max_abs_diff(p.mean, full.mean) << " (max |value| "
                                                     << full.mean.abs().max().item<double>() << ")");
}

TEST_CASE("VAE bf16: decode and encode drift vs the fp32 golden (reported)") {
  auto g = golden();
  m::VAELoadOptions o;
  o.dtype = torch::kBFloat16;
  auto vae = m::load_vae(vae_dir(), o);
  CHECK((vae->dtype() == torch::kBFloat16));
  auto x = vae->decode(g["vae_decode_in"]);
  CHECK((x.scalar_type() == torch::kFloat32));
  const double d = max_abs_diff(x, g["vae_decode_out"]);
  const double scale = g["vae_decode_out"].abs().max().item<double>();
  // The part due to the weights alone: bf16-rounded weights, fp32 compute.
  auto rounded = m::load_vae(vae_dir());
  {
    torch::NoGradGuard ng;
    for (auto& p : rounded->parameters()) p.set_data(p.to(torch::kBFloat16).to(torch::kFloat32));
  }
  const double dw = max_abs_diff(rounded->decode(g["vae_decode_in"]), g["vae_decode_out"]);
  MESSAGE("bf16 vae_decode_out max |diff| = " << d << " (max |value| " << scale
                                              << "); with bf16-rounded weights and fp32 compute: " << dw);
  CHECK(d < 0.1 * scale);
  auto p = vae->encode(g["vae_encode_in"]);
  const double dm = max_abs_diff(p.mean, g["vae_encode_mean"]);
  MESSAGE("bf16 vae_encode_mean max |diff| = " << dm);
  CHECK(dm < 0.05 * g["vae_encode_mean"].abs().max().item<double>());
}

TEST_CASE("VAEConfig: defaults, levels, refused keys, and load_vae names missing weights") {
  auto c = m::load_vae_config(vae_dir());
  CHECK(c.block_out_channels == std::vector<std::int64_t>{8, 16, 32, 32});
  CHECK(c.layers_per_block == 1);
  CHECK(c.norm_num_groups == 8);
  CHECK(c.sample_size == 64);
  CHECK(c.latent_channels == 4);
  auto d = m::parse_vae_config(nlohmann::json::parse("{}"), "vae/config.json");
  CHECK(d.block_out_channels == std::vector<std::int64_t>{64});
  CHECK(d.scale_factor() == 1);
  CHECK(d.scaling_factor == doctest::Approx(0.18215));
  for (const auto& [kv, key] : std::vector<std::pair<std::string, std::string>>{
           {R"("shift_factor": 0.1159)", "shift_factor"},
           {R"("latents_mean": [0, 0, 0, 0])", "latents_mean"},
           {R"("down_block_types": ["DownBlock2D"])", "down_block_types"},
           {R"("block_out_channels": [48])", "norm_num_groups"},
           {R"("act_fn": "mish")", "act_fn"}}) {
    const auto msg = error_of<lli::ModelError>([&] { m::parse_vae_config(nlohmann::json::parse("{" + kv + "}"), "vae/config.json"); });
    INFO(kv << " -> " << msg);
    CHECK(has(msg, "vae/config.json: " + key));
  }

  TempDir tmp;
  write_vae_copy(tmp.path, [](lli::TensorMap& t) {
    t.erase("decoder.mid_block.attentions.0.to_k.bias");
    t.erase("post_quant_conv.weight");
  });
  const auto msg = error_of<lli::ModelError>([&] { m::load_vae(tmp.path); });
  INFO(msg);
  CHECK(has(msg, "decoder.mid_block.attentions.0.to_k.bias"));
  CHECK(has(msg, "post_quant_conv.weight"));

  // use_post_quant_conv false / mid_block_add_attention false: the keys become unexpected.
  TempDir tmp2;
  write_vae_copy(tmp2.path, [](lli::TensorMap&) {}, [](nlohmann::json& j) { j["use_post_quant_conv"] = false; });
  CHECK(has(error_of<lli::ModelError>([&] { m::load_vae(tmp2.path); }), "unexpected keys: post_quant_conv"));
  TempDir tmp3;
  write_vae_copy(
      tmp3.path,
      [](lli::TensorMap& t) {
        for (auto it = t.begin(); it != t.end();)
          it = it->first.find("mid_block.attentions") != std::string::npos ? t.erase(it) : std::next(it);
      },
      [](nlohmann::json& j) { j["mid_block_add_attention"] = false; });
  auto plain = m::load_vae(tmp3.path);
  CHECK_FALSE(plain->decoder->mid_block->attention);
  CHECK(plain->decode(torch::zeros({1, 4, 2, 2})).sizes() == torch::IntArrayRef({1, 3, 16, 16}));
}
