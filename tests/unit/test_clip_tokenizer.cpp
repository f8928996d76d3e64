// CLIP BPE tokenizer (HF slow CLIPTokenizer behaviour) against the clip-text-tiny and
// gligen-gen-tiny-a fixtures (transformers 4.45.1), OWL's "!" pad token, Unicode edge cases,
// truncation, padding, decoding, and the loader's error messages. Also the Python-compatible
// Unicode helpers (text/unicode.h) it is built on.
#include "test_util.h"

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "text/clip_tokenizer.h"
#include "text/unicode.h"

using namespace lli::test;
using lli::text::CLIPTokenizer;
using lli::text::TokenId;
using Padding = CLIPTokenizer::Padding;
namespace uc = lli::text::unicode;

namespace {

fs::path clip_dir() { return fixtures_dir() / "clip-text-tiny"; }
fs::path gligen_dir() { return fixtures_dir() / "gligen-gen-tiny-a"; }

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// An int64 tensor of a golden.safetensors file as rows of `cols`.
std::vector<std::vector<TokenId>> golden_rows(const fs::path& file, const std::string& name) {
  auto f = lli::st::File::open(file);
  for (const auto& t : f.tensors()) {
    if (t.name != name) continue;
    REQUIRE(t.dtype == lli::st::DType::I64);
    REQUIRE(t.shape.size() == 2);
    std::vector<TokenId> flat(t.nbytes / sizeof(TokenId));
    std::memcpy(flat.data(), t.data, t.nbytes);
    std::vector<std::vector<TokenId>> rows;
    const auto cols = static_cast<std::size_t>(t.shape[1]);
    for (std::size_t i = 0; i < flat.size(); i += cols) rows.emplace_back(flat.begin() + i, flat.begin() + i + cols);
    return rows;
  }
  FAIL("golden.safetensors has no tensor " << name);
  return {};
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// A tokenizer directory with the fixture's vocab.json and merges.txt and the given extra files.
void make_dir(const TempDir& d, const std::string& config = "", const std::string& special_map = "") {
  fs::copy_file(clip_dir() / "vocab.json", d / "vocab.json");
  fs::copy_file(clip_dir() / "merges.txt", d / "merges.txt");
  if (!config.empty()) write_text(d / "tokenizer_config.json", config);
  if (!special_map.empty()) write_text(d / "special_tokens_map.json", special_map);
}

std::u32string u32(const std::string& s) { return uc::decode_utf8(s); }

}  // namespace

// ---- text/unicode.h -------------------------------------------------------------------------

TEST_CASE("unicode: UTF-8, categories, NFC and lower() as Python 3.11") {
  CHECK(std::string(uc::version()) == "14.0.0");
  CHECK(uc::encode_utf8(u32("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80")) == "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  // Invalid bytes, a truncated sequence, an overlong form and a surrogate become U+FFFD.
  CHECK(uc::decode_utf8("\xFF"
                        "a\xC3") == std::u32string{0xFFFD, 'a', 0xFFFD});
  CHECK(uc::decode_utf8("\xC0\xAF").front() == 0xFFFD);
  CHECK(uc::decode_utf8("\xED\xA0\x80").front() == 0xFFFD);

  CHECK(uc::char_class(U'\u00E9') == uc::CharClass::letter);
  CHECK(uc::char_class(U'\u0661') == uc::CharClass::number);  // ARABIC-INDIC DIGIT ONE
  CHECK(uc::char_class(U'\u00BD') == uc::CharClass::number);  // VULGAR FRACTION ONE HALF (No)
  CHECK(uc::char_class(U'\u3000') == uc::CharClass::space_separator);
  CHECK(uc::char_class(U'\u200B') == uc::CharClass::control);  // ZERO WIDTH SPACE (Cf)
  CHECK(uc::char_class(0x0378) == uc::CharClass::control);     // unassigned in 14.0
  CHECK(uc::char_class(U'\u2028') == uc::CharClass::other);    // LINE SEPARATOR (Zl)
  CHECK(uc::is_python_space(U'\u2028'));
  CHECK(uc::is_python_space(U'\x1c'));
  CHECK_FALSE(uc::is_python_space(U'\u200B'));

  CHECK(uc::nfc(u32("e\xCC\x81")) == u32("\xC3\xA9"));                                 // e + acute -> é
  CHECK(uc::nfc(u32("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8")) == u32("\xEA\xB0\x81"));  // Hangul L V T -> 각
  CHECK(uc::nfc(u32("a\xCC\xA3\xCC\x87")) == u32("\xE1\xBA\xA1\xCC\x87"));             // canonical order, then compose
  CHECK(uc::nfc(u32("\xE0\xA5\x98")) == u32("\xE0\xA4\x95\xE0\xA4\xBC"));  // excluded composite stays decomposed

  CHECK(uc::to_lower(u32("\xC4\xB0")) == u32("i\xCC\x87"));  // İ -> i + combining dot
  // Final sigma: after a cased letter and not before one.
  CHECK(uc::to_lower(u32("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3")) == u32("\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82"));
  CHECK(uc::to_lower(u32("\xCE\xA3")) == u32("\xCF\x83"));
  CHECK(uc::to_lower(u32("\xCE\xA3\xCE\x91")) == u32("\xCF\x83\xCE\xB1"));
  CHECK(uc::to_lower(u32("A\xCE\xA3'")) == u32("a\xCF\x82'"));
  CHECK(uc::lstrip("\xE3\x80\x80 \tx ") == "x ");
  CHECK(uc::rstrip(" x\xC2\xA0\n") == " x");
}

// ---- fixtures -------------------------------------------------------------------------------

TEST_CASE("clip tokenizer: clip-text-tiny prompts give the reference ids, pieces and padded batch") {
  const auto tok = CLIPTokenizer::load(clip_dir());
  const auto c = read_json(clip_dir() / "case.json");
  CHECK(tok.bos_id() == 49406);
  CHECK(tok.eos_id() == 49407);
  CHECK(tok.pad_id() == 49407);
  CHECK(tok.unk_id() == 49407);
  CHECK(tok.model_max_length() == 77);
  CHECK(tok.vocab_size() == 49408);

  const auto prompts = c["prompts"].get<std::vector<std::string>>();
  REQUIRE(prompts.size() == 5);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i << ": " << prompts[i]);
    const auto want = c["token_ids_unpadded"][i].get<std::vector<TokenId>>();
    const auto ids = tok.encode(prompts[i], 77);
    CHECK(ids == want);
    std::vector<std::string> pieces;
    for (TokenId id : ids) pieces.push_back(tok.id_to_token(id));
    CHECK(pieces == c["tokens_unpadded"][i].get<std::vector<std::string>>());
    CHECK(static_cast<std::int64_t>(tok.encode(prompts[i]).size()) == c["untruncated_lengths_with_bos_eos"][i]);
  }

  const auto batch = tok.encode_batch(prompts, Padding::max_length);
  CHECK(batch.ids == golden_rows(clip_dir() / "golden.safetensors", "input_ids"));
  CHECK(batch.attention_mask == golden_rows(clip_dir() / "golden.safetensors", "attention_mask"));
}

TEST_CASE("clip tokenizer: gligen-gen-tiny-a prompt, empty negative prompt and phrases padded to the longest") {
  const auto tok = CLIPTokenizer::load(gligen_dir() / "tokenizer");
  const auto c = read_json(gligen_dir() / "case.json");
  const fs::path golden = gligen_dir() / "golden.safetensors";
  const auto& call = c["pipeline_call"];

  const auto prompt = tok.encode_batch({call["prompt"].get<std::string>()}, Padding::max_length, 77);
  CHECK(prompt.ids == golden_rows(golden, "prompt_input_ids"));
  const auto negative = tok.encode_batch({""}, Padding::max_length, 77);
  CHECK(negative.ids == golden_rows(golden, "negative_input_ids"));
  CHECK(tok.encode("") == std::vector<TokenId>{49406, 49407});

  const auto phrases = call["gligen_phrases"].get<std::vector<std::string>>();
  const auto pb = tok.encode_batch(phrases, Padding::longest, -1, /*truncation=*/false);
  CHECK(pb.ids == golden_rows(golden, "phrase_input_ids"));
  CHECK(pb.attention_mask == golden_rows(golden, "phrase_attention_mask"));
}

// ---- behaviour ------------------------------------------------------------------------------

TEST_CASE("clip tokenizer: Unicode clean-up, lower-casing and the pre-tokenisation regex") {
  const auto tok = CLIPTokenizer::load(clip_dir());
  // Expected ids computed with Python 3.11 (unicodedata 14.0, the `regex` module) following
  // CLIPTokenizer's slow path step by step.
  const std::vector<std::pair<std::string, std::vector<TokenId>>> cases = {
      // final sigma (ς = 139 480) versus σ (139 225)
      {"\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91\xCE\xA3",
       {49406, 138, 123, 138, 112, 138, 123, 139, 480, 139, 225, 138, 109, 139, 480, 49407}},
      {"\xC4\xB0stanbul", {49406, 328, 16384, 11231, 49407}},  // İ -> i + U+0307
      {"it'\xC5\xBF", {49406, 585, 6, 129, 379, 49407}},       // 'ſ matches the 's branch
      {"x\xCD\x85y", {49406, 343, 344, 49407}},                // U+0345 matches no branch: dropped
      {"e\xCC\x81t\xC3\xA9", {49406, 3459, 39694, 49407}},     // NFC: e + acute == é
      {"\xE6\xBC\xA2\xE5\xAD\x97"
       "abc",
       {49406, 162, 120, 351, 35751, 501, 5334, 49407}},  // CJK split off
      {"a\xE2\x80\xA8"
       "b\xC2\xA0"
       "c\xE3\x80\x80"
       "d",
       {49406, 320, 321, 322, 323, 49407}},                                            // Python whitespace
      {"soft\xC2\xADhyphen\xE2\x80\x8Bzero", {49406, 1571, 7804, 7718, 5848, 49407}},  // Cf removed
      {"<|ENDOFTEXT|>", {49406, 49407, 49407}},              // lower-cased, then the regex's special branch
      {"x<|endoftext|>y", {49406, 343, 49407, 344, 49407}},  // split out as an added token
      {"\xEF\xAC\x81ne \xC2\xBD \xC2\xB2", {49406, 171, 105, 223, 1422, 33613, 41175, 49407}},
      {"tab\t\x01\x7Fx\r\ny", {49406, 14724, 343, 344, 49407}},  // controls removed, \t \r \n are spaces
  };
  for (const auto& [text, want] : cases) {
    INFO(text);
    CHECK(tok.encode(text) == want);
  }
}

TEST_CASE("clip tokenizer: truncation keeps EOS last and bounds the work on absurd input") {
  const auto tok = CLIPTokenizer::load(clip_dir());
  std::string words;
  for (int i = 0; i < 200; ++i) words += "red cat, ";
  const auto full = tok.encode(words);
  REQUIRE(full.size() == 602);
  auto cut = tok.encode(words, 10);
  REQUIRE(cut.size() == 10);
  CHECK(std::vector<TokenId>(cut.begin(), cut.end() - 1) == std::vector<TokenId>(full.begin(), full.begin() + 9));
  CHECK(cut.back() == tok.eos_id());
  CHECK(tok.encode("a cat", 2) == std::vector<TokenId>{49406, 49407});
  CHECK(has(error_of<lli::InputError>([&] { tok.encode("a cat", 1); }), "max_length 1"));

  // One 300,000-letter word (BPE is O(n log n) here, quadratic in the reference) and 1 MB of text.
  const std::string word(300000, 'a');
  const auto w = tok.encode(word, 77);
  CHECK(w.size() == 77);
  CHECK(w[1] == tok.token_to_id("aaaaaaaa"));
  std::string big;
  while (big.size() < 1000000) big += "the quick brown fox jumps over 12 lazy dogs! ";
  const auto b = tok.encode(big, 77);
  CHECK(b.size() == 77);
  CHECK(std::vector<TokenId>(b.begin(), b.begin() + 5) == std::vector<TokenId>{49406, 518, 3712, 2866, 3240});

  // encode_batch: truncation on by default to model_max_length; off keeps everything.
  const auto batch = tok.encode_batch({words, "a"}, Padding::longest);
  CHECK(batch.ids[0].size() == 77);
  CHECK(batch.ids[1].size() == 77);
  CHECK(batch.ids[1][2] == tok.eos_id());
  CHECK(batch.attention_mask[1][2] == 1);
  CHECK(batch.attention_mask[1][3] == 0);
  CHECK(tok.encode_batch({words}, Padding::none, -1, /*truncation=*/false).ids[0].size() == 602);
  CHECK(tok.encode_batch({"a"}, Padding::none).ids[0].size() == 3);
}

TEST_CASE("clip tokenizer: OWL's pad token '!' is split out of queries and pads to model_max_length") {
  TempDir d;
  // tokenizer_config.json / special_tokens_map.json as google/owlv2-base-patch16-ensemble ships them.
  make_dir(d, R"({
    "added_tokens_decoder": {
      "0": {"content": "!", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true},
      "49406": {"content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "special": true},
      "49407": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "special": true}},
    "bos_token": "<|startoftext|>", "do_lower_case": true, "eos_token": "<|endoftext|>", "errors": "replace",
    "model_max_length": 16, "pad_token": "!", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"})",
           R"({"bos_token": {"content": "<|startoftext|>"}, "eos_token": {"content": "<|endoftext|>"},
               "pad_token": "!", "unk_token": {"content": "<|endoftext|>"}})");
  const auto tok = CLIPTokenizer::load(d.path);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.model_max_length() == 16);
  const auto b = tok.encode_batch({"a ball", "wow!! a cat"}, Padding::max_length);
  CHECK(b.ids[0] == std::vector<TokenId>{49406, 320, 1069, 49407, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(b.attention_mask[0] == std::vector<std::int64_t>{1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  // "!!" would be one BPE token (748) with the plain CLIP tokenizer; here each '!' is id 0.
  CHECK(b.ids[1] == std::vector<TokenId>{49406, 2781, 0, 0, 320, 2368, 49407, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(CLIPTokenizer::load(clip_dir()).encode("wow!! a cat") ==
        std::vector<TokenId>{49406, 2781, 748, 320, 2368, 49407});
}

TEST_CASE("clip tokenizer: owlv2-tiny-a and owlvit-tiny-a queries give the reference input_ids") {
  for (const char* name : {"owlv2-tiny-a", "owlvit-tiny-a"}) {
    INFO(name);
    const fs::path owl = lli::test::fixtures_dir() / name;
    const auto tok = CLIPTokenizer::load(owl);
    const auto queries = read_json(owl / "case.json")["queries"].get<std::vector<std::string>>();
    const auto b = tok.encode_batch(queries, Padding::max_length);
    CHECK(b.ids == golden_rows(owl / "golden.safetensors", "input_ids"));
    CHECK(b.attention_mask == golden_rows(owl / "golden.safetensors", "attention_mask"));
  }
}

TEST_CASE("clip tokenizer: decode and token lookups") {
  const auto tok = CLIPTokenizer::load(clip_dir());
  const auto ids = tok.encode("A photo of a Caf\xC3\xA9, 4K!");
  CHECK(tok.decode(ids) == "<|startoftext|>a photo of a caf\xC3\xA9 , 4 k ! <|endoftext|>");
  CHECK(tok.decode(ids, /*skip_special_tokens=*/true) == "a photo of a caf\xC3\xA9 , 4 k !");
  CHECK(tok.token_to_id("photo</w>") == 1125);
  CHECK(tok.token_to_id("no such token") == tok.unk_id());
  CHECK(tok.id_to_token(1125) == "photo</w>");
  CHECK(tok.id_to_token(999999).empty());
  CHECK(tok.tokenize("A photo") == std::vector<std::string>{"a</w>", "photo</w>"});
}

TEST_CASE("clip tokenizer: missing and malformed files are ModelErrors naming the file") {
  CHECK(has(error_of<lli::RuntimeError>([] { CLIPTokenizer().encode("x"); }), "before CLIPTokenizer::load"));
  {
    TempDir d;
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "vocab.json: missing"));
    fs::copy_file(clip_dir() / "vocab.json", d / "vocab.json");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "merges.txt: missing"));
  }
  {
    TempDir d;
    make_dir(d);
    write_text(d / "vocab.json", "{\"a\": 1,");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "vocab.json:1:9: invalid JSON"));
    write_text(d / "vocab.json", "[1, 2]");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "vocab.json: expected a non-empty"));
    write_text(d / "vocab.json", "{\"a\": \"x\"}");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "vocab.json: \"a\" = \"x\" is not"));
    write_text(d / "vocab.json", "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 10\n");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "vocab.json: is a Git LFS pointer"));
  }
  {
    TempDir d;
    make_dir(d);
    write_text(d / "merges.txt", "#version: 0.2\ni n\nt h e\n");
    const auto msg = error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); });
    CHECK(has(msg, "merges.txt:3: expected two symbols"));
    write_text(d / "merges.txt", "#version: 0.2\n");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }), "merges.txt: no merges"));
  }
  {
    TempDir d;
    make_dir(d, "{\"model_max_length\": \"77\"}");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }),
              "tokenizer_config.json: model_max_length = \"77\" is not a number"));
    write_text(d / "tokenizer_config.json", "{\"bos_token\": 5}");
    CHECK(has(error_of<lli::ModelError>([&] { CLIPTokenizer::load(d.path); }),
              "tokenizer_config.json: bos_token = 5 is neither a string"));
    write_text(d / "tokenizer_config.json", "{\"model_max_length\": 1e30, \"pad_token\": null}");
    const auto tok = CLIPTokenizer::load(d.path);
    CHECK(tok.model_max_length() == -1);  // transformers' "no limit"
    CHECK(tok.pad_id() == -1);
    CHECK(tok.encode_batch({"a"}, Padding::max_length).ids[0].size() == 3);  // nothing to pad to
    CHECK(has(error_of<lli::InputError>([&] { tok.encode_batch({"a", "a cat"}, Padding::longest); }), "no pad_token"));
  }
}
