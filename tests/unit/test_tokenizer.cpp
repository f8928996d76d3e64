// LLaMA tokenizer (llava-hf slow-tokenizer behaviour), <image> expansion, decoding, streaming,
// chat template and stop strings. Reference ids and texts come from the llava-tiny-a fixture
// (case.json and golden.safetensors, produced by transformers 4.45.1).
#include "test_util.h"

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "text/chat_template.h"
#include "text/llama_tokenizer.h"

using namespace lli::test;
using lli::text::ChatStyle;
using lli::text::ChatTemplate;
using lli::text::ChatTurn;
using lli::text::ImageTokenConfig;
using lli::text::LlamaTokenizer;
using lli::text::LlamaTokenizerOptions;
using lli::text::StopStringFilter;
using lli::text::StreamDecoder;
using lli::text::TokenId;

namespace {

fs::path llava_dir() { return fixtures_dir() / "llava-tiny-a"; }

nlohmann::json read_case() {
  std::ifstream f(llava_dir() / "case.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// An int64 tensor of golden.safetensors, flattened.
std::vector<TokenId> golden_ids(const std::string& name) {
  auto file = lli::st::File::open(llava_dir() / "golden.safetensors");
  for (const auto& t : file.tensors()) {
    if (t.name != name) continue;
    REQUIRE(t.dtype == lli::st::DType::I64);
    std::vector<TokenId> out(t.nbytes / sizeof(TokenId));
    std::memcpy(out.data(), t.data, t.nbytes);
    return out;
  }
  FAIL("golden.safetensors has no tensor " << name);
  return {};
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "[" + x + "]";
  return s;
}

bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

}  // namespace

TEST_CASE("llama tokenizer: legacy=true prompt gives the fixture slow-tokenizer ids and pieces") {
  auto tok = LlamaTokenizer::load(llava_dir());
  const auto c = read_case();
  CHECK(tok.legacy());
  CHECK(c["summary"]["tokenizer"]["legacy"].get<bool>());
  const std::string prompt = c["prompt"].get<std::string>();
  const auto ids = tok.encode(prompt);
  CHECK(ids == golden_ids("input_ids_prompt"));

  // convert_ids_to_tokens(input_ids) == case.json prompt_tokens (BOS included)
  const auto want = c["prompt_tokens"].get<std::vector<std::string>>();
  std::vector<std::string> got;
  for (TokenId id : ids) got.push_back(tok.id_to_piece(id));
  CHECK(join(got) == join(want));
  // tokenize() is the same without BOS
  std::vector<std::string> pieces = tok.tokenize(prompt);
  CHECK(join(pieces) == join(std::vector<std::string>(want.begin() + 1, want.end())));

  // special-token ids come from the checkpoint's files
  CHECK(tok.bos_id() == tok.piece_to_id("<s>"));
  CHECK(tok.eos_id() == tok.piece_to_id("</s>"));
  CHECK(tok.pad_id() == c["summary"]["llava"]["pad_token_id"].get<TokenId>());
  CHECK(tok.piece_to_id("<image>") == c["summary"]["tokenizer"]["added_tokens"]["<image>"].get<TokenId>());
  CHECK(tok.is_special(tok.piece_to_id("<image>")));
  CHECK(tok.is_special(tok.bos_id()));
  CHECK_FALSE(tok.is_special(tok.piece_to_id("What")));
  CHECK(tok.vocab_size() == tok.sp_vocab_size() + 2);
}

TEST_CASE("llama tokenizer: legacy=false gives the fixture other-setting ids") {
  auto tok = LlamaTokenizer::load(llava_dir(), LlamaTokenizerOptions{/*legacy=*/false});
  const auto c = read_case();
  CHECK_FALSE(tok.legacy());
  REQUIRE(c["other_legacy_setting_tokenization"]["legacy"].get<bool>() == false);
  const auto want = c["other_legacy_setting_tokenization"]["input_ids"].get<std::vector<TokenId>>();
  CHECK(tok.encode(c["prompt"].get<std::string>()) == want);
  // the two settings differ exactly by the "▁" after <image>
  auto legacy_ids = LlamaTokenizer::load(llava_dir()).encode(c["prompt"].get<std::string>());
  CHECK(legacy_ids.size() == want.size() + 1);
}

TEST_CASE("llama tokenizer: text after a special token in legacy and non-legacy mode and the prefix space") {
  auto legacy = LlamaTokenizer::load(llava_dir(), LlamaTokenizerOptions{/*legacy=*/true});
  auto modern = LlamaTokenizer::load(llava_dir(), LlamaTokenizerOptions{/*legacy=*/false});
  // transformers' LlamaTokenizer docstring example: "Hello <s>." -> "▁." (legacy) / "." (new)
  CHECK(join(legacy.tokenize("Hello <s>.")) == "[▁Hello][▁][<s>][▁.]");
  CHECK(join(modern.tokenize("Hello <s>.")) == "[▁Hello][▁][<s>][.]");
  // a leading special token: no prefix "▁" before it in either setting
  CHECK(join(legacy.tokenize("<image>hi")) == "[<image>][▁hi]");
  CHECK(join(modern.tokenize("<image>hi")) == "[<image>][hi]");
  CHECK(join(modern.tokenize("<image> hi")) == "[<image>][▁hi]");
  // dummy prefix on plain text; "▁" in the input is a space for the new behaviour
  CHECK(join(legacy.tokenize("Hello")) == "[▁Hello]");
  CHECK(join(modern.tokenize("Hello")) == "[▁Hello]");
  CHECK(join(modern.tokenize("\xE2\x96\x81Hello")) == join(modern.tokenize(" Hello")));
  CHECK(legacy.tokenize("").empty());
  CHECK(legacy.encode("") == std::vector<TokenId>{legacy.bos_id()});
  CHECK(legacy.encode("Hello", /*add_special_tokens=*/false).size() == 1);
  // an added token is matched exactly, also glued to text
  CHECK(join(legacy.tokenize("a</s>b")) == "[▁a][</s>][▁b]");
  CHECK(join(legacy.tokenize("<pad><pad>")) == "[<pad>][<pad>]");
}

TEST_CASE("llava prompt: image token expanded to image_seq_length copies equals the processor input_ids") {
  auto tok = LlamaTokenizer::load(llava_dir());
  auto img = ImageTokenConfig::load(llava_dir());
  const auto c = read_case();
  CHECK(img.image_token == "<image>");
  CHECK(img.image_token_id == c["summary"]["llava"]["image_token_index"].get<TokenId>());
  CHECK(img.image_seq_length == c["num_image_tokens"].get<std::int64_t>());
  const auto ids = lli::text::encode_llava_prompt(tok, img, c["prompt"].get<std::string>());
  CHECK(ids == golden_ids("input_ids"));
  CHECK(std::count(ids.begin(), ids.end(), img.image_token_id) == img.image_seq_length);
  // expansion of two placeholders, and n = 0
  const std::vector<TokenId> two = {1, 7, 7, 9};
  CHECK(lli::text::expand_image_tokens(two, 7, 3) == std::vector<TokenId>{1, 7, 7, 7, 7, 7, 7, 9});
  CHECK(lli::text::expand_image_tokens(two, 7, 0) == std::vector<TokenId>{1, 9});
}

TEST_CASE("llava prompt: image_seq_length computed from vision_config when config.json lacks it") {
  TempDir dir;
  auto write = [&](const std::string& text) { std::ofstream(dir / "config.json") << text; };
  write(R"({"image_token_index": 5, "vision_config": {"image_size": 336, "patch_size": 14}})");
  auto a = ImageTokenConfig::load(dir.path);
  CHECK(a.image_token_id == 5);
  CHECK(a.image_seq_length == 576);
  write(R"({"vision_feature_select_strategy": "full", "vision_config": {"image_size": 32, "patch_size": 8}})");
  auto b = ImageTokenConfig::load(dir.path);
  CHECK(b.image_token_id == 32000);
  CHECK(b.image_seq_length == 17);
  write(R"({"vision_config": {}})");  // CLIPVisionConfig defaults 224 / 32
  CHECK(ImageTokenConfig::load(dir.path).image_seq_length == 49);
  write(R"({"vision_feature_select_strategy": "cls"})");
  CHECK_THROWS_AS(ImageTokenConfig::load(dir.path), lli::ModelError);
  write("{not json");
  CHECK_THROWS_AS(ImageTokenConfig::load(dir.path), lli::ModelError);
  fs::remove(dir / "config.json");
  CHECK_THROWS_AS(ImageTokenConfig::load(dir.path), lli::ModelError);
}

TEST_CASE("llama tokenizer: a checkpoint directory without tokenizer.model is a ModelError") {
  TempDir dir;
  CHECK_THROWS_AS(LlamaTokenizer::load(dir.path), lli::ModelError);
  std::ofstream(dir / "tokenizer.model") << "version https://git-lfs.github.com/spec/v1\noid sha256:00\n";
  try {
    LlamaTokenizer::load(dir.path);
    FAIL("no error");
  } catch (const lli::ModelError& e) {
    CHECK(std::string(e.what()).find("Git LFS") != std::string::npos);
  }
}

TEST_CASE("llama tokenizer: decode of the generated ids equals the fixture generated_text") {
  auto tok = LlamaTokenizer::load(llava_dir());
  const auto c = read_case();
  const auto gen = golden_ids("generated_ids");
  const std::string want = c["generated_text"].get<std::string>();
  CHECK(tok.decode(gen) == want);
  // special tokens are skipped
  std::vector<TokenId> with_eos = gen;
  with_eos.insert(with_eos.begin(), tok.bos_id());
  with_eos.push_back(tok.eos_id());
  CHECK(tok.decode(with_eos) == want);
  // the prompt decodes back to itself (image token skipped; its legacy "▁" is a space)
  CHECK(tok.decode(tok.encode("What is shown?")) == "What is shown?");
  CHECK(tok.decode(golden_ids("input_ids_prompt"), /*skip_special_tokens=*/false).find("<image>") != std::string::npos);
  // streaming the generated ids gives the same text
  StreamDecoder sd(tok);
  std::string streamed;
  for (TokenId id : gen) streamed += sd.push(id);
  streamed += sd.finish();
  CHECK(streamed == want);
}

TEST_CASE("llama tokenizer: streaming decode never splits a UTF-8 character and equals full decode") {
  auto tok = LlamaTokenizer::load(llava_dir());
  const std::string text = "Grüße 😀🦙 from 東京! naïve café\nline two ∑x²";
  const auto ids = tok.encode(text, /*add_special_tokens=*/false);
  int n_bytes = 0;
  for (TokenId id : ids) n_bytes += tok.is_byte_piece(id) ? 1 : 0;
  REQUIRE(n_bytes >= 4);  // the emoji are byte-fallback pieces
  const std::string full = tok.decode(ids);
  CHECK(full == text);
  StreamDecoder sd(tok);
  std::string streamed;
  int held = 0;
  for (TokenId id : ids) {
    const std::string chunk = sd.push(id);
    CHECK(valid_utf8(chunk));
    if (chunk.empty()) ++held;
    streamed += chunk;
  }
  CHECK(held >= 3);  // 4-byte emoji: three pushes print nothing
  streamed += sd.finish();
  CHECK(streamed == full);
  CHECK(sd.text() == full);
  // an incomplete sequence at the end is flushed by finish() as SentencePiece decodes it
  StreamDecoder cut(tok);
  std::string part;
  for (TokenId id : ids) {
    part += cut.push(id);
    if (tok.is_byte_piece(id)) break;  // stop after the first byte of the first emoji
  }
  const std::string tail = cut.finish();
  CHECK(part + tail == tok.decode(cut.ids()));
  CHECK(lli::text::utf8_complete_prefix("ab\xF0\x9F\x98") == 2);
  CHECK(lli::text::utf8_complete_prefix("ab\xC3\xA9") == 4);
}

TEST_CASE("chat template: one turn equals the fixture prompt and system prompt and multi-turn strings") {
  const auto c = read_case();
  ChatTemplate t;
  const std::vector<ChatTurn> one = {{"What is shown?", std::nullopt, /*image=*/true}};
  CHECK(t.render(one) == c["prompt"].get<std::string>());

  ChatTemplate sys;
  sys.system = "A chat between a curious human and an artificial intelligence assistant.";
  CHECK(sys.render(one) ==
        "A chat between a curious human and an artificial intelligence assistant. USER: <image>\nWhat is shown? "
        "ASSISTANT:");

  const std::vector<ChatTurn> three = {{"What is shown?", std::string(" A cat. \n"), true},
                                       {"What color?", std::string("Black."), false},
                                       {"Is it sleeping?", std::nullopt, false}};
  CHECK(t.render(three) ==
        "USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>USER: What color? ASSISTANT: Black.</s>USER: Is it "
        "sleeping? ASSISTANT:");
  ChatTemplate hf;
  hf.style = ChatStyle::llava_hf;
  CHECK(hf.render(three) ==
        "USER: <image>\nWhat is shown? ASSISTANT: A cat. USER: What color? ASSISTANT: Black. USER: Is it sleeping? "
        "ASSISTANT:");
  // the image placeholder goes with the turn that introduced the image
  const std::vector<ChatTurn> late = {{"Hi", std::string("Hello."), false}, {"And this?", std::nullopt, true}};
  CHECK(t.render(late) == "USER: Hi ASSISTANT: Hello.</s>USER: <image>\nAnd this? ASSISTANT:");

  // the rendered multi-turn prompt tokenizes with </s> as the EOS token, one image token
  auto tok = LlamaTokenizer::load(llava_dir());
  const auto ids = tok.encode(t.render(three));
  CHECK(std::count(ids.begin(), ids.end(), tok.eos_id()) == 2);
  CHECK(std::count(ids.begin(), ids.end(), tok.piece_to_id("<image>")) == 1);

  CHECK_THROWS_AS(t.render({}), lli::InputError);
  CHECK_THROWS_AS(t.render({{"q1", std::nullopt, true}, {"q2", std::nullopt, false}}), lli::InputError);
  CHECK_THROWS_AS(t.render({{"look <image> here", std::nullopt, false}}), lli::InputError);
}

TEST_CASE("stop strings: trimming and the streaming filter") {
  ChatTemplate t;
  const auto stops = t.stop_strings();
  CHECK(std::find(stops.begin(), stops.end(), "</s>") != stops.end());
  CHECK(std::find(stops.begin(), stops.end(), "USER:") != stops.end());

  std::string s = "A cat.</s>USER: more";
  CHECK(lli::text::trim_at_stop(s, stops));
  CHECK(s == "A cat.");
  std::string s2 = "A cat. USER: x</s>";
  CHECK(lli::text::trim_at_stop(s2, stops));
  CHECK(s2 == "A cat. ");
  std::string s3 = "no stop here";
  CHECK_FALSE(lli::text::trim_at_stop(s3, stops));
  CHECK(s3 == "no stop here");

  // streaming: "US" is held back until it turns out not to be "USER:"
  StopStringFilter f(stops);
  CHECK(f.push("It is a ") == "It is a ");
  CHECK(f.push("US") == "");
  CHECK(f.push("B cable") == "USB cable");
  CHECK_FALSE(f.stopped());
  CHECK(f.push(". <") == ". ");
  CHECK(f.push("/s") == "");
  CHECK(f.push("> tail") == "");
  CHECK(f.stopped());
  CHECK(f.push("more") == "");
  CHECK(f.finish() == "");
  CHECK(f.text() == "It is a USB cable. ");

  // without a stop string the held-back tail comes out at finish()
  StopStringFilter g(stops);
  std::string out = g.push("ends with <");
  out += g.push("/");
  CHECK(out == "ends with ");
  CHECK(g.finish() == "</");
  CHECK_FALSE(g.stopped());

  // random chunking gives the same result as trimming the whole text
  const std::string whole = "Some answer with USE and </ and U then USER: next";
  std::string trimmed = whole;
  lli::text::trim_at_stop(trimmed, stops);
  for (std::size_t step = 1; step <= 7; ++step) {
    StopStringFilter h(stops);
    std::string acc;
    for (std::size_t i = 0; i < whole.size(); i += step) acc += h.push(whole.substr(i, step));
    acc += h.finish();
    CHECK(acc == trimmed);
  }
}
