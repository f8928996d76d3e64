// CLIP text encoder parity with the clip-text-tiny and gligen-gen-tiny-a goldens (transformers
// 4.45.1, fp32): hidden states, final-layer-normed states and pooled outputs with and without the
// padding mask, the EOS pooling rules, tokenizer + encoder end to end, fp16 checkpoints, the bf16
// drift (reported, loosely bounded), config defaults and strict-loading / input errors.
#include <torch/torch.h>

#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/tensor_io.h"
#include "model_test_util.h"
#include "models/clip_text.h"
#include "nn/grad_mode.h"
#include "test_util.h"
#include "text/clip_tokenizer.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
using lli::test::error_of;
using lli::test::fixtures_dir;
using lli::test::has;
using lli::test::max_abs_diff;
using lli::test::Recorder;
using lli::test::TempDir;

fs::path clip_dir() { return fixtures_dir() / "clip-text-tiny"; }
fs::path gligen_dir() { return fixtures_dir() / "gligen-gen-tiny-a"; }

// max(|a - b| - rtol * |b|): <= atol means allclose(a, b, rtol, atol).
double allclose_excess(const torch::Tensor& a, const torch::Tensor& b, double rtol) {
  auto a64 = a.to(torch::kCPU, torch::kFloat64), b64 = b.to(torch::kCPU, torch::kFloat64);
  REQUIRE(a64.sizes() == b64.sizes());
  return ((a64 - b64).abs() - rtol * b64.abs()).max().item<double>();
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// A copy of clip-text-tiny's text encoder with config.json edited by `edit` and the weights
// passed through `weights`.
fs::path copy_model(const TempDir& d, const std::function<void(nlohmann::json&)>& edit,
                    const std::function<void(lli::TensorMap&)>& weights = {}) {
  auto cfg = m::read_json_file(clip_dir() / "config.json");
  edit(cfg);
  write_text(d / "config.json", cfg.dump(2));
  auto ckpt = lli::st::Checkpoint::open(clip_dir());
  auto tensors = lli::load_tensors(ckpt);
  if (weights) weights(tensors);
  lli::save_tensors(d / "model.safetensors", tensors);
  return d.path;
}

}  // namespace

TEST_CASE("clip text encoder: clip-text-tiny hidden states, last hidden state and pooled output") {
  auto g = lli::test::load_golden(clip_dir() / "golden.safetensors");
  auto model = m::load_clip_text(clip_dir());
  CHECK(model->cfg.pooling() == m::CLIPTextPooling::argmax_id);  // eos_token_id 2 (legacy config)
  Recorder rec;
  auto out = model->forward(g["input_ids"], {}, rec.tap());
  const auto& hs = rec.seen["text.hidden_state"];
  REQUIRE(hs.size() == 4);
  for (std::size_t i = 0; i < hs.size(); ++i) {
    const double d = max_abs_diff(hs[i], g["hidden_states"][static_cast<std::int64_t>(i)]);
    MESSAGE("hidden_states[" << i << "] max |diff| = " << d);
    CHECK(d <= 2e-5);
  }
  const double dl = max_abs_diff(out.last_hidden_state, g["last_hidden_state"]);
  const double dp = max_abs_diff(out.pooler_output, g["pooler_output"]);
  MESSAGE("last_hidden_state max |diff| = " << dl << ", pooler_output " << dp);
  CHECK(dl <= 2e-5);
  CHECK(dp <= 2e-5);
  // The pooled rows are the states at pooled_index.
  auto idx = g["pooled_index"];
  CHECK(max_abs_diff(out.pooler_output, out.last_hidden_state.index({torch::arange(5), idx})) == 0);

  auto masked = model->forward(g["input_ids"], g["attention_mask"]);
  const double dml = max_abs_diff(masked.last_hidden_state, g["last_hidden_state_with_attention_mask"]);
  const double dmp = max_abs_diff(masked.pooler_output, g["pooler_output_with_attention_mask"]);
  MESSAGE("with attention_mask: last_hidden_state max |diff| = " << dml << ", pooler_output " << dmp);
  CHECK(dml <= 2e-5);
  CHECK(dmp <= 2e-5);
  // The mask matters (padding keys are hidden from the positions after EOS) but not before EOS.
  CHECK(max_abs_diff(masked.last_hidden_state, out.last_hidden_state) > 1e-3);
  CHECK(max_abs_diff(masked.pooler_output, out.pooler_output) <= 2e-5);
}

TEST_CASE("clip text encoder: gligen-gen-tiny-a prompt, negative prompt and phrase embeddings from text") {
  auto g = lli::test::load_golden(gligen_dir() / "golden.safetensors");
  auto tok = lli::text::CLIPTokenizer::load(gligen_dir() / "tokenizer");
  auto model = m::load_clip_text(gligen_dir() / "text_encoder");
  auto ids_of = [](const std::vector<std::vector<lli::text::TokenId>>& rows) {
    auto t = torch::empty({static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows[0].size())},
                          torch::kInt64);
    for (std::size_t i = 0; i < rows.size(); ++i)
      for (std::size_t j = 0; j < rows[i].size(); ++j)
        t[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(j)] = rows[i][j];
    return t;
  };
  using P = lli::text::CLIPTokenizer::Padding;
  auto prompt = tok.encode_batch({"A photo of a Cat sitting next to a green lamp, photorealistic!"}, P::max_length);
  auto negative = tok.encode_batch({""}, P::max_length);
  auto phrases = tok.encode_batch({"a cat", "a green lamp"}, P::longest);
  CHECK(max_abs_diff(ids_of(prompt.ids), g["prompt_input_ids"]) == 0);

  auto pe = model->forward(ids_of(prompt.ids)).last_hidden_state;
  auto ne = model->forward(ids_of(negative.ids)).last_hidden_state;
  auto pp = model->forward(ids_of(phrases.ids), ids_of(phrases.attention_mask)).pooler_output;
  const double ep = allclose_excess(pe, g["prompt_embeds"], 1e-5);
  const double en = allclose_excess(ne, g["negative_prompt_embeds"], 1e-5);
  const double eph = allclose_excess(pp, g["phrase_pooled"], 1e-5);
  MESSAGE("prompt_embeds max |diff| = " << max_abs_diff(pe, g["prompt_embeds"]) << ", negative_prompt_embeds "
                                        << max_abs_diff(ne, g["negative_prompt_embeds"]) << ", phrase_pooled "
                                        << max_abs_diff(pp, g["phrase_pooled"]));
  CHECK(ep <= 1e-5);  // atol 1e-5, rtol 1e-5 (case.json)
  CHECK(en <= 1e-5);
  CHECK(eph <= 1e-5);
}

TEST_CASE("clip text encoder: bf16 compute and fp16 checkpoints stay close to fp32") {
  auto g = lli::test::load_golden(clip_dir() / "golden.safetensors");
  m::CLIPTextLoadOptions o;
  o.dtype = torch::kBFloat16;
  auto bf = m::load_clip_text(clip_dir(), o);
  CHECK((bf->text_model->final_layer_norm->weight.scalar_type() == torch::kBFloat16));
  auto out = bf->forward(g["input_ids"], g["attention_mask"]);
  const double scale = g["last_hidden_state_with_attention_mask"].abs().max().item<double>();
  const double dl = max_abs_diff(out.last_hidden_state, g["last_hidden_state_with_attention_mask"]);
  const double dp = max_abs_diff(out.pooler_output, g["pooler_output_with_attention_mask"]);
  MESSAGE("bf16 last_hidden_state max |diff| = " << dl << ", pooler_output " << dp << " (max |value| " << scale << ")");
  CHECK(dl <= 0.05 * scale);
  CHECK(dp <= 0.05 * scale);

  TempDir d;
  copy_model(
      d, [](nlohmann::json&) {},
      [](lli::TensorMap& t) {
        for (auto& [k, v] : t) v = v.to(torch::kHalf);
      });
  auto half = m::load_clip_text(d.path);
  CHECK((half->text_model->final_layer_norm->weight.scalar_type() == torch::kFloat32));
  const double dh = max_abs_diff(half->forward(g["input_ids"]).last_hidden_state, g["last_hidden_state"]);
  MESSAGE("fp16 checkpoint, fp32 compute: last_hidden_state max |diff| = " << dh);
  CHECK(dh <= 0.01 * scale);

  o.dtype = torch::kHalf;
  CHECK(has(error_of<lli::ModelError>([&] { m::load_clip_text(clip_dir(), o); }),
            "fp16 compute is not supported on CPU"));
}

TEST_CASE("clip text encoder: config defaults and the two EOS pooling rules") {
  const nlohmann::json empty = nlohmann::json::object();
  auto c = m::parse_clip_text_config(m::ConfigReader(empty, "config.json"));
  CHECK(c.vocab_size == 49408);
  CHECK(c.hidden_size == 512);
  CHECK(c.intermediate_size == 2048);
  CHECK(c.num_hidden_layers == 12);
  CHECK(c.num_attention_heads == 8);
  CHECK(c.max_position_embeddings == 77);
  CHECK(c.hidden_act == lli::nn::Activation::quick_gelu);
  CHECK(c.layer_norm_eps == 1e-5);
  CHECK(c.eos_token_id == 49407);
  CHECK(c.pooling() == m::CLIPTextPooling::first_eos);
  CHECK(c.layer_config().causal);
  const nlohmann::json bad = {{"hidden_size", 30}, {"num_attention_heads", 4}};
  CHECK(has(error_of<lli::ModelError>([&] { m::parse_clip_text_config(m::ConfigReader(bad, "config.json")); }),
            "config.json: hidden_size: 30 is not divisible by num_attention_heads 4"));

  // eos_token_id other than 2: the first position holding that id, not argmax(input_ids).
  TempDir d;
  copy_model(d, [](nlohmann::json& j) { j["eos_token_id"] = 320; });
  auto model = m::load_clip_text(d.path);
  CHECK(model->cfg.pooling() == m::CLIPTextPooling::first_eos);
  auto ids = torch::tensor({49406, 1125, 320, 2368, 320, 49407, 49407}, torch::kInt64).view({1, 7});
  auto out = model->forward(ids);
  CHECK(max_abs_diff(out.pooler_output[0], out.last_hidden_state[0][2]) == 0);
  auto none = model->forward(torch::tensor({49406, 1125, 49407}, torch::kInt64).view({1, 3}));
  CHECK(max_abs_diff(none.pooler_output[0], none.last_hidden_state[0][0]) == 0);  // no EOS: position 0
}

TEST_CASE("clip text encoder: strict loading and input errors") {
  {  // a stored position_ids buffer is accepted
    TempDir d;
    copy_model(
        d, [](nlohmann::json&) {},
        [](lli::TensorMap& t) {
          t["text_model.embeddings.position_ids"] = torch::arange(77, torch::kInt64).view({1, 77});
        });
    CHECK_NOTHROW(m::load_clip_text(d.path));
  }
  {
    TempDir d;
    copy_model(
        d, [](nlohmann::json&) {},
        [](lli::TensorMap& t) {
          t.erase("text_model.final_layer_norm.weight");
          t["text_model.text_projection.weight"] = torch::zeros({32, 32});
        });
    const auto msg = error_of<lli::ModelError>([&] { m::load_clip_text(d.path); });
    CHECK(has(msg, "text_model.final_layer_norm.weight"));
    CHECK(has(msg, "text_model.text_projection.weight"));
  }
  {
    TempDir d;
    copy_model(d, [](nlohmann::json& j) { j["intermediate_size"] = 64; });
    CHECK(has(error_of<lli::ModelError>([&] { m::load_clip_text(d.path); }),
              "text_model.encoder.layers.0.mlp.fc1.weight"));
  }
  CHECK(has(error_of<lli::ModelError>([&] { m::load_clip_text(fixtures_dir() / "no-such-model"); }), "config.json"));

  auto model = m::load_clip_text(clip_dir());
  auto long_ids = torch::full({1, 78}, 320, torch::kInt64);
  CHECK(has(error_of<lli::InputError>([&] { model->forward(long_ids); }),
            "78 tokens, more than max_position_embeddings 77"));
  auto bad_id = torch::tensor({49406, 49408}, torch::kInt64).view({1, 2});
  CHECK(has(error_of<lli::InputError>([&] { model->forward(bad_id); }), "token id 49408 is outside [0, 49408)"));
  auto ok = torch::tensor({49406, 49407}, torch::kInt64).view({1, 2});
  CHECK(has(error_of<lli::InputError>([&] {
              model->forward(ok, torch::ones({1, 3}, torch::kInt64));
            }),
            "attention_mask has shape [1, 3]"));
  CHECK(has(error_of<lli::InputError>([&] { model->forward(torch::zeros({2}, torch::kInt64)); }), "[B, T] integer"));
}

TEST_CASE("clip text encoder: gradients flow inside a TrainingScope only, and match finite differences") {
  auto g = lli::test::load_golden(clip_dir() / "golden.safetensors");
  auto model = m::load_clip_text(clip_dir());
  model->to(torch::kFloat64);
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  const auto ids = g["input_ids"], mask = g["attention_mask"];
  // Inference (every tool): no graph is recorded, whatever the parameters say.
  CHECK_FALSE(model->forward(ids, mask).pooler_output.requires_grad());

  lli::nn::TrainingScope training;
  CHECK(lli::nn::training_enabled());
  auto weights = torch::randn({ids.size(0), ids.size(1), model->cfg.hidden_size}, torch::kFloat64);
  auto loss_of = [&] { return (model->forward(ids, mask).last_hidden_state * weights).sum(); };
  auto loss = loss_of();
  REQUIRE(loss.requires_grad());
  loss.backward();
  auto& p = model->text_model->encoder->layer_list[0]->mlp->fc1->weight;
  REQUIRE(p.grad().defined());
  const double analytic = p.grad()[0][0].item<double>();
  const double eps = 1e-6;
  double up = 0, down = 0;
  {
    torch::NoGradGuard ng;
    p[0][0] += eps;
    up = loss_of().item<double>();
    p[0][0] -= 2 * eps;
    down = loss_of().item<double>();
    p[0][0] += eps;
  }
  const double numeric = (up - down) / (2 * eps);
  MESSAGE("d loss / d fc1.weight[0][0]: autograd " << analytic << ", finite difference " << numeric);
  CHECK(std::abs(analytic - numeric) <= 1e-5 * std::max(1.0, std::abs(numeric)));
}
