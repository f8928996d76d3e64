// Chat pipeline (pipelines/chat.h) on the llava-tiny-a fixture: the golden greedy answer, streamed
// chunks, multi-turn with the KV cache reused equal to a fresh full prefill of the same
// conversation, reset / new image, sampling determinism and limits.
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "models/llava.h"
#include "models/llava_preprocess.h"
#include "pipelines/chat.h"
#include "pipelines/ground_llava.h"
#include "core/quote.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using lli::pipelines::ChatAnswer;
using lli::pipelines::ChatExchange;
using lli::pipelines::ChatOptions;
using lli::pipelines::ChatSession;
using lli::test::fixtures_dir;

fs::path llava_dir() { return fixtures_dir() / "llava-tiny-a"; }

std::vector<std::int64_t> golden_ids(const std::string& name) {
  auto file = lli::st::File::open(llava_dir() / "golden.safetensors");
  for (const auto& t : file.tensors()) {
    if (t.name != name) continue;
    REQUIRE(t.dtype == lli::st::DType::I64);
    std::vector<std::int64_t> out(t.nbytes / sizeof(std::int64_t));
    std::memcpy(out.data(), t.data, t.nbytes);
    return out;
  }
  FAIL("golden.safetensors has no tensor " << name);
  return {};
}

nlohmann::json read_case() {
  std::ifstream f(llava_dir() / "case.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

ChatOptions f32_options() {
  ChatOptions o;
  o.dtype = lli::DTypeChoice::f32;
  return o;
}

lli::SamplerConfig greedy(std::int64_t max_new) {
  lli::SamplerConfig c;
  c.temperature = 0;
  c.max_new_tokens = max_new;
  return c;
}

cv::Mat fixture_image() {
  cv::Mat bgr = cv::imread((llava_dir() / "image.png").string(), cv::IMREAD_COLOR);
  REQUIRE(!bgr.empty());
  return bgr;
}

}  // namespace

TEST_CASE("chat pipeline: one greedy turn gives the golden 16 tokens and text, streamed chunks concatenate to it") {
  ChatSession chat = ChatSession::load(llava_dir(), f32_options());
  CHECK(chat.dtype_name() == "f32");
  chat.set_image(fixture_image());
  CHECK(chat.render_prompt("What is shown?") == read_case()["prompt"].get<std::string>());
  CHECK(chat.prompt_tokens("What is shown?") == golden_ids("input_ids"));

  std::string streamed;
  int chunks = 0;
  ChatAnswer a = chat.ask("What is shown?", greedy(16), [&](const std::string& c) {
    CHECK(!c.empty());
    streamed += c;
    ++chunks;
  });
  CHECK(a.tokens == golden_ids("generated_ids"));
  CHECK(a.text == read_case()["generated_text"].get<std::string>());
  CHECK(streamed == a.text);
  CHECK(chunks > 1);
  CHECK(a.n_prompt_tokens == static_cast<std::int64_t>(golden_ids("input_ids").size()));
  CHECK(a.n_reused_tokens == 0);
  CHECK(a.finish == lli::pipelines::FinishReason::length);
  CHECK(a.timings.image_ms > 0);
  CHECK(a.timings.prefill_ms >= a.timings.image_ms);
  CHECK(a.timings.decode_tokens_per_s > 0);
  REQUIRE(chat.history().size() == 1);
  CHECK(chat.history()[0].question == "What is shown?");
  CHECK(chat.history()[0].answer == a.text);
  // The cache holds the prompt and every generated token but the last (never fed).
  CHECK(chat.cached_tokens().size() == golden_ids("input_ids").size() + 15);
}

TEST_CASE("chat pipeline: a follow-up reuses the KV cache and equals a fresh full prefill of the conversation") {
  const std::string q1 = "What is shown?", q2 = "What color is it?", q3 = "Is it big?";
  ChatSession chat = ChatSession::load(llava_dir(), f32_options());
  chat.set_image(fixture_image());
  ChatAnswer a1 = chat.ask(q1, greedy(16));
  ChatAnswer a2 = chat.ask(q2, greedy(24));
  CHECK(a2.n_reused_tokens > a1.n_prompt_tokens);  // the first prompt (with the image) and part of its answer
  CHECK(a2.timings.image_ms == 0);                 // the image was not encoded again
  ChatAnswer a3 = chat.ask(q3, greedy(24));
  CHECK(a3.n_reused_tokens > a2.n_prompt_tokens);
  MESSAGE("turn 2: " << a2.n_prompt_tokens << " prompt tokens, " << a2.n_reused_tokens << " reused; turn 3: "
                     << a3.n_prompt_tokens << ", " << a3.n_reused_tokens << " reused");

  // A fresh session given the same history prefills everything and must agree token for token.
  ChatSession fresh = ChatSession::load(llava_dir(), f32_options());
  fresh.set_image(fixture_image());
  fresh.set_history({{q1, a1.text}, {q2, a2.text}});
  const auto ids3 = fresh.prompt_tokens(q3);
  ChatAnswer f3 = fresh.ask(q3, greedy(24));
  CHECK(f3.n_reused_tokens == 0);
  CHECK(f3.n_prompt_tokens == a3.n_prompt_tokens);
  CHECK(f3.tokens == a3.tokens);
  CHECK(f3.text == a3.text);

  // And the model alone (no pipeline): full prefill of the same ids, greedy decoding.
  namespace m = lli::models;
  torch::NoGradGuard ng;
  auto model = m::load_llava(llava_dir());
  auto proc = m::load_image_processor_config(llava_dir());
  auto feats = model->image_features(m::pixel_values_from_bgr(fixture_image(), proc, m::ImageAspect::resize_crop));
  auto emb = model->embed_inputs(torch::tensor(ids3, torch::kInt64).view({1, -1}), feats);
  auto cache = model->make_cache(emb.size(1) + 24);
  auto ids = m::generate_greedy(*model, emb, cache, 24, {2});
  REQUIRE(ids.size() >= a3.tokens.size());
  CHECK(std::vector<std::int64_t>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(a3.tokens.size())) ==
        a3.tokens);
}

TEST_CASE("chat pipeline: reset keeps the image features, a new image starts over, history is replaceable") {
  ChatSession chat = ChatSession::load(llava_dir(), f32_options());
  chat.set_image(fixture_image());
  ChatAnswer a1 = chat.ask("What is shown?", greedy(16));
  (void)chat.ask("Anything else?", greedy(8));
  chat.reset();
  CHECK(chat.history().empty());
  ChatAnswer again = chat.ask("What is shown?", greedy(16));
  CHECK(again.tokens == a1.tokens);
  CHECK(again.timings.image_ms == 0);
  CHECK(again.n_reused_tokens == again.n_prompt_tokens - 1);  // all but the last prompt token

  // A new (flipped) image: history cleared, cache and features dropped.
  cv::Mat flipped;
  cv::flip(fixture_image(), flipped, 1);
  chat.set_image(flipped);
  CHECK(chat.history().empty());
  CHECK(chat.cached_tokens().empty());
  ChatAnswer other = chat.ask("What is shown?", greedy(16));
  CHECK(other.timings.image_ms > 0);
  CHECK(other.n_reused_tokens == 0);
  CHECK(other.tokens != a1.tokens);

  CHECK_THROWS_AS(chat.set_image(cv::Mat()), lli::InputError);
  CHECK_THROWS_AS(chat.ask("   ", greedy(4)), lli::InputError);
  CHECK_THROWS_AS(chat.ask("look at <image>", greedy(4)), lli::InputError);
  lli::SamplerConfig bad = greedy(4);
  bad.top_p = 0;
  CHECK_THROWS_AS(chat.ask("ok?", bad), lli::UsageError);
  // A conversation longer than the context is refused before any compute.
  std::string huge;
  for (int i = 0; i < 3000; ++i) huge += "word ";
  CHECK_THROWS_AS(chat.ask(huge + huge, greedy(4)), lli::InputError);
  CHECK(chat.history().size() == 1);  // failed asks leave the history as it was
}

TEST_CASE("chat pipeline: seeded sampling is reproducible, system prompt and pad aspect change the prompt") {
  lli::SamplerConfig s;
  s.temperature = 0.9;
  s.top_p = 0.95;
  s.max_new_tokens = 12;
  s.seed = 7;
  auto run = [&](const ChatOptions& o) {
    ChatSession chat = ChatSession::load(llava_dir(), o);
    chat.set_image(fixture_image());
    return chat.ask("What is shown?", s);
  };
  ChatAnswer x = run(f32_options()), y = run(f32_options());
  CHECK(x.tokens == y.tokens);
  s.seed = 8;
  ChatAnswer z = run(f32_options());
  CHECK(z.tokens != x.tokens);

  ChatOptions sys = f32_options();
  sys.system = "A chat.";
  ChatSession chat = ChatSession::load(llava_dir(), sys);
  chat.set_image(fixture_image());
  CHECK(chat.render_prompt("Q?") == "A chat. USER: <image>\nQ? ASSISTANT:");

  ChatOptions pad = f32_options();
  pad.image_aspect = lli::pipelines::ChatImageAspect::pad;
  ChatSession padded = ChatSession::load(llava_dir(), pad);
  padded.set_image(fixture_image());
  ChatAnswer p = padded.ask("What is shown?", greedy(16));
  CHECK(p.tokens.size() == 16);
  const std::string same = p.tokens == golden_ids("generated_ids") ? "the same" : "other";
  MESSAGE("pad aspect: " << same << " tokens than crop");

  CHECK(lli::pipelines::parse_chat_image_aspect("pad") == lli::pipelines::ChatImageAspect::pad);
  CHECK_THROWS_AS(lli::pipelines::parse_chat_image_aspect("stretch"), lli::UsageError);
  CHECK_THROWS_AS(ChatSession::load(fixtures_dir() / "no-such-model", f32_options()), lli::ModelError);
}

TEST_CASE("chat pipeline: the KV cache grows across turns keeping what it holds") {
  // Turn 1 allocates a small cache; turn 2's long answer needs more positions: the cache is
  // reallocated with the reused prefix copied, and the tokens equal a fresh full prefill's.
  ChatSession chat = ChatSession::load(llava_dir(), f32_options());
  chat.set_image(fixture_image());
  ChatAnswer a1 = chat.ask("What is shown?", greedy(16));
  ChatAnswer a2 = chat.ask("Tell me more.", greedy(400));
  CHECK(a2.n_reused_tokens >= a1.n_prompt_tokens);
  CHECK(a2.n_prompt_tokens + static_cast<std::int64_t>(a2.tokens.size()) > 256);  // beyond the first allocation
  MESSAGE("turn 2: " << a2.tokens.size() << " tokens (" << std::string(lli::pipelines::finish_reason_name(a2.finish)) << ")");

  ChatSession fresh = ChatSession::load(llava_dir(), f32_options());
  fresh.set_image(fixture_image());
  fresh.set_history({{"What is shown?", a1.text}});
  ChatAnswer f2 = fresh.ask("Tell me more.", greedy(400));
  CHECK(f2.tokens == a2.tokens);
}

// The LLaVA grounder's plumbing on llava-tiny-a (random weights: the answer is not a real box, so
// this checks the path — the question asked, the padded image, the answer quoted in the error or a
// box mapped into the photo — not where the box is).
TEST_CASE("chat pipeline: the LLaVA grounder asks LLaVA-1.5's box question on the padded image") {
  const cv::Mat img = fixture_image();
  {
    ChatSession crop = ChatSession::load(llava_dir(), f32_options());
    CHECK_THROWS_AS(lli::pipelines::ground_with_llava(crop, img, "the ball"), lli::UsageError);
  }
  ChatOptions o = f32_options();
  o.image_aspect = lli::pipelines::ChatImageAspect::pad;
  ChatSession chat = ChatSession::load(llava_dir(), o);
  CHECK((chat.image_aspect() == lli::pipelines::ChatImageAspect::pad));
  std::string error;
  lli::pipelines::LlavaGrounding g;
  try {
    g = lli::pipelines::ground_with_llava(chat, img, "the ball");
  } catch (const lli::RuntimeError& e) {
    error = e.what();
  }
  REQUIRE(chat.history().size() == 1);
  const auto& ex = chat.history().back();
  CHECK(ex.question == lli::pipelines::llava_grounding_question("the ball"));
  CHECK(chat.render_prompt("x").find("Please provide the bounding box coordinate") != std::string::npos);
  const auto parsed = lli::pipelines::parse_llava_box(ex.answer);
  MESSAGE("llava-tiny-a's answer: " << lli::quote_excerpt(ex.answer, 200));
  if (parsed) {
    CHECK(error.empty());
    CHECK(g.answer == ex.answer);
    CHECK_FALSE(g.box.empty());
    CHECK(g.box.x1 <= img.cols);
    CHECK(g.box.y1 <= img.rows);
  } else {
    CHECK(error.find("llava grounder: no box") != std::string::npos);
    CHECK(error.find(lli::quote_excerpt(ex.answer)) != std::string::npos);
    CHECK(error.find('\n') == std::string::npos);
  }
  // The answer was generated greedily within the grounding budget.
  CHECK(chat.prompt_tokens("x").size() > 0);
}
