// SentencePiece inside lli (text/sentencepiece.h): parity with libsentencepiece 0.1.97 on the
// LLaMA model of the llava-tiny-a fixture and four small models trained with it (unigram with
// normalization rules and user-defined pieces, BPE, BPE with whitespace as suffix and byte
// fallback, unigram with byte fallback; tests/data/sentencepiece/README.md), hand-built models
// for the BPE merge order, UNUSED pieces, byte fallback, unknown pieces and whitespace handling,
// and malformed model files (the bounded protobuf reader).
#include "test_util.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/protobuf_wire.h"
#include "lli/error.h"
#include "text/sentencepiece.h"
#include "text/sentencepiece_model.h"

using namespace lli::test;
using lli::text::SentencePiece;

namespace {

const fs::path kData = fs::path(LLI_TEST_DATA) / "sentencepiece";
const std::string kWs = "\xE2\x96\x81";  // "▁"

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string unhex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "[" + x + "]";
  return s;
}

// A protobuf message written field by field (the wire format of tokenizer.model).
struct Proto {
  std::string s;
  Proto& varint(std::uint64_t v) {
    while (v >= 0x80) {
      s += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    s += static_cast<char>(v);
    return *this;
  }
  Proto& num(std::uint32_t field, std::int64_t v) { return varint(field << 3).varint(static_cast<std::uint64_t>(v)); }
  Proto& str(std::uint32_t field, std::string_view b) {
    varint((field << 3) | 2).varint(b.size());
    s.append(b);
    return *this;
  }
  Proto& f32(std::uint32_t field, float f) {
    varint((field << 3) | 5);
    char b[4];
    std::memcpy(b, &f, 4);
    s.append(b, 4);
    return *this;
  }
};

enum Type { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

struct PieceDef {
  std::string piece;
  float score;
  int type;
};

struct ModelDef {
  std::vector<PieceDef> pieces;
  int model_type = 2;  // BPE
  bool byte_fallback = false;
  bool add_dummy_prefix = false;
  bool remove_extra_whitespaces = false;
  std::string charsmap;
  std::vector<std::pair<std::string, std::string>> self_test;

  std::string bytes() const {
    Proto m;
    for (const auto& p : pieces) m.str(1, Proto().str(1, p.piece).f32(2, p.score).num(3, p.type).s);
    m.str(2, Proto().num(3, model_type).num(35, byte_fallback).s);
    Proto n;
    n.str(1, "identity").num(3, add_dummy_prefix).num(4, remove_extra_whitespaces);
    if (!charsmap.empty()) n.str(2, charsmap);
    m.str(3, n.s);
    if (!self_test.empty()) {
      Proto t;
      for (const auto& [in, want] : self_test) t.str(1, Proto().str(1, in).str(2, want).s);
      m.str(4, t.s);
    }
    return m.s;
  }
};

// <unk> <s> </s> and the given pieces.
ModelDef with_specials(std::vector<PieceDef> pieces) {
  ModelDef d;
  d.pieces = {{"<unk>", 0, UNKNOWN}, {"<s>", 0, CONTROL}, {"</s>", 0, CONTROL}};
  d.pieces.insert(d.pieces.end(), pieces.begin(), pieces.end());
  return d;
}

void add_byte_pieces(ModelDef& d) {
  d.byte_fallback = true;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    d.pieces.push_back({name, 0, BYTE});
  }
}

SentencePiece load(const ModelDef& d) { return SentencePiece::from_bytes(d.bytes(), "hand.model"); }

std::string model_error(const std::string& bytes) {
  return error_of<lli::ModelError>([&] { SentencePiece::from_bytes(bytes, "bad.model"); });
}

}  // namespace

TEST_CASE("sentencepiece: ids, pieces and decoded text equal libsentencepiece's on six models") {
  const auto goldens = nlohmann::json::parse(read_bytes(kData / "goldens.json"));
  std::size_t n_encode = 0, n_decode = 0;
  for (const auto& m : goldens["models"]) {
    const std::string name = m["model"].get<std::string>();
    const fs::path path = name.rfind("llava-tiny-a/", 0) == 0 ? fixtures_dir() / name : kData / name;
    const bool dummy = m["add_dummy_prefix"].get<bool>();
    CAPTURE(name);
    CAPTURE(dummy);
    auto sp = SentencePiece::load(path.string(), dummy);
    for (const auto& e : m["encode"]) {
      const std::string text = unhex(e["text_hex"].get<std::string>());
      CAPTURE(e["text_hex"].get<std::string>());
      const auto want_ids = e["ids"].get<std::vector<int>>();
      std::vector<std::string> want_pieces;
      for (const auto& p : e["pieces_hex"]) want_pieces.push_back(unhex(p.get<std::string>()));
      const auto ids = sp.encode_ids(text);
      CHECK(ids == want_ids);
      CHECK(join(sp.encode_pieces(text)) == join(want_pieces));
      CHECK(sp.decode_ids(ids) == unhex(e["decoded_hex"].get<std::string>()));
      ++n_encode;
    }
    for (const auto& d : m["decode"]) {
      CHECK(sp.decode_ids(d["ids"].get<std::vector<int>>()) == unhex(d["text_hex"].get<std::string>()));
      ++n_decode;
    }
  }
  MESSAGE("compared " << n_encode << " encodings and " << n_decode << " decodings with libsentencepiece 0.1.97");
  CHECK(n_encode >= 400);
}

TEST_CASE("sentencepiece: model metadata of the LLaMA tokenizer.model") {
  auto sp = SentencePiece::load((fixtures_dir() / "llava-tiny-a" / "tokenizer.model").string());
  CHECK(sp.piece_size() == 32000);
  CHECK(sp.unk_id() == 0);
  CHECK(sp.bos_id() == 1);
  CHECK(sp.eos_id() == 2);
  CHECK(sp.pad_id() == -1);
  CHECK(sp.is_unknown(0));
  CHECK(sp.is_control(1));
  CHECK(sp.is_byte(sp.piece_to_id("<0x0A>")));
  CHECK(sp.id_to_piece(sp.piece_to_id("<0x0A>")) == "<0x0A>");
  CHECK(sp.piece_to_id("no such piece") == sp.unk_id());
  CHECK(sp.id_to_piece(-1).empty());
  CHECK(sp.id_to_piece(32000).empty());
  CHECK_FALSE(sp.is_byte(32000));
  CHECK(sp.score(sp.piece_to_id(kWs + "the")) < 0.0f);
  // ids outside the vocabulary are skipped by decode_ids
  CHECK(sp.decode_ids({-5, sp.piece_to_id(kWs + "Hello"), 99999}) == "Hello");
}

TEST_CASE("sentencepiece: BPE merges the highest-scoring pair first, the leftmost on a tie") {
  auto d = with_specials({{"a", -10, NORMAL},
                          {"b", -10, NORMAL},
                          {"c", -10, NORMAL},
                          {"ab", -1, NORMAL},
                          {"bc", -0.5f, NORMAL},
                          {"abc", -2, NORMAL},
                          {"aa", -1, NORMAL}});
  auto sp = load(d);
  CHECK(join(sp.encode_pieces("abc")) == "[abc]");     // bc first, then a+bc
  CHECK(join(sp.encode_pieces("aaa")) == "[aa][a]");   // two equal pairs: the left one
  CHECK(join(sp.encode_pieces("abab")) == "[ab][ab]");
  CHECK(sp.decode_pieces({"ab", "c"}) == "abc");

  // without "abc" the first merge decides: a + bc
  d.pieces.erase(d.pieces.begin() + 8);
  CHECK(join(load(d).encode_pieces("abc")) == "[a][bc]");

  // an UNUSED piece is merged through but split back into the pieces it came from
  auto u = with_specials({{"a", -10, NORMAL}, {"b", -10, NORMAL}, {"c", -10, NORMAL}, {"bc", -0.5f, UNUSED},
                          {"abc", -2, NORMAL}});
  auto us = load(u);
  CHECK(join(us.encode_pieces("abc")) == "[abc]");
  CHECK(join(us.encode_pieces("bc")) == "[b][c]");
  CHECK(us.is_unused(us.piece_to_id("bc")));
}

TEST_CASE("sentencepiece: byte fallback and its decoding, malformed bytes as U+FFFD") {
  auto d = with_specials({{kWs, -1, NORMAL}, {"a", -2, NORMAL}, {kWs + "a", -1, NORMAL}});
  add_byte_pieces(d);
  d.add_dummy_prefix = true;
  auto sp = load(d);
  CHECK(join(sp.encode_pieces("a\xC3\xA9")) == "[" + kWs + "a][<0xC3>][<0xA9>]");
  const auto ids = sp.encode_ids("a \xF0\x9F\xA6\x99");  // "a 🦙"
  REQUIRE(ids.size() == 6);
  for (std::size_t i = 2; i < 6; ++i) CHECK(sp.is_byte(ids[i]));
  CHECK(sp.decode_ids(ids) == "a \xF0\x9F\xA6\x99");
  // a cut or malformed sequence: each bad byte is one U+FFFD, a good byte after it survives
  const int c3 = sp.piece_to_id("<0xC3>"), x41 = sp.piece_to_id("<0x41>"), a = sp.piece_to_id("a");
  CHECK(sp.decode_ids({c3}) == "\xEF\xBF\xBD");
  CHECK(sp.decode_ids({c3, x41}) == "\xEF\xBF\xBD" "A");
  CHECK(sp.decode_ids({c3, a, c3}) == "\xEF\xBF\xBD" "a\xEF\xBF\xBD");
  // malformed input text is normalized to U+FFFD first, then falls back to its bytes
  CHECK(join(sp.encode_pieces("\xFF")) == "[" + kWs + "][<0xEF>][<0xBF>][<0xBD>]");
}

TEST_CASE("sentencepiece: unknown pieces without byte fallback are merged and decode to unk_surface") {
  auto d = with_specials({{"a", -1, NORMAL}, {"b", -1, NORMAL}});
  auto sp = load(d);
  CHECK(join(sp.encode_pieces("axyb")) == "[a][xy][b]");
  const auto ids = sp.encode_ids("axyb");
  REQUIRE(ids.size() == 3);
  CHECK(ids[1] == sp.unk_id());
  CHECK(sp.decode_ids(ids) == "a \xE2\x81\x87 b");   // " ⁇ " replaces the unknown text
  CHECK(sp.decode_pieces({"a", "xy", "b"}) == "axyb");  // a piece that is not <unk> itself is kept
  CHECK(sp.decode_pieces({"<s>", "a", "</s>"}) == "a");  // control pieces vanish
}

TEST_CASE("sentencepiece: whitespace: dummy prefix, escaping, removal of extra spaces") {
  auto d = with_specials({{kWs, -5, NORMAL}, {"a", -5, NORMAL}, {"b", -5, NORMAL}, {kWs + "a", -1, NORMAL},
                          {kWs + "b", -1, NORMAL}});
  d.add_dummy_prefix = true;
  d.remove_extra_whitespaces = true;
  auto tidy = load(d);
  CHECK(join(tidy.encode_pieces("  a   b  ")) == "[" + kWs + "a][" + kWs + "b]");
  CHECK(tidy.encode_ids("   ").empty());
  CHECK(tidy.decode_ids(tidy.encode_ids(" a  b ")) == "a b");

  d.remove_extra_whitespaces = false;
  auto keep = load(d);
  CHECK(join(keep.encode_pieces("a  b")) == "[" + kWs + "a][" + kWs + "][" + kWs + "b]");
  CHECK(keep.decode_ids(keep.encode_ids("a  b ")) == "a  b ");
  // add_dummy_prefix switched off at load (LLaMA legacy = false)
  auto bare = SentencePiece::from_bytes(d.bytes(), "hand.model", /*add_dummy_prefix=*/false);
  CHECK(join(bare.encode_pieces("a b")) == "[a][" + kWs + "b]");
  CHECK(bare.decode_pieces({kWs + "a"}) == " a");  // the first "▁" is kept without the prefix
  CHECK(keep.decode_pieces({kWs + "a"}) == "a");
}

TEST_CASE("sentencepiece: unigram picks the best-scoring segmentation, unknown characters score min - 10") {
  auto d = with_specials({{"a", -1, NORMAL}, {"b", -1, NORMAL}, {"ab", -1.5f, NORMAL}, {"<sep>", 0, USER_DEFINED}});
  d.model_type = 1;
  auto sp = load(d);
  CHECK(join(sp.encode_pieces("abab")) == "[ab][ab]");
  CHECK(join(sp.encode_pieces("a<sep>b")) == "[a][<sep>][b]");
  const auto ids = sp.encode_ids("azzb");
  CHECK(ids == std::vector<int>{sp.piece_to_id("a"), sp.unk_id(), sp.piece_to_id("b")});
  d.pieces[5].score = -2.5f;  // "ab" now worse than "a" + "b"
  CHECK(join(load(d).encode_pieces("ab")) == "[a][b]");
  // the trained unigram model's rules: "ﬁ" -> "fi", fullwidth -> ASCII, "ABC" -> "xy"; <sep> kept
  auto uni = SentencePiece::load((kData / "uni.model").string());
  CHECK(uni.encode_ids("\xEF\xAC\x81ne") == uni.encode_ids("fine"));
  CHECK(uni.encode_ids("ABC") == uni.encode_ids("xy"));                            // a multi-character rule
  CHECK(uni.encode_ids("\xEF\xBC\xA1\xEF\xBC\xA2") == uni.encode_ids("AB"));  // fullwidth, one by one
  CHECK(join(uni.encode_pieces("a<sep>b")).find("[<sep>]") != std::string::npos);
}

TEST_CASE("sentencepiece: a self-test sample that the model fails is a ModelError") {
  auto d = with_specials({{"a", -1, NORMAL}, {"b", -1, NORMAL}, {"ab", -0.5f, NORMAL}});
  d.self_test = {{"ab", "ab"}};
  CHECK_NOTHROW(load(d));
  d.self_test = {{"ab", "a b"}};
  CHECK(has(model_error(d.bytes()), "self-test failed"));
}

TEST_CASE("sentencepiece: malformed model files are ModelErrors naming the file and what is wrong") {
  const auto good = with_specials({{"a", -1, NORMAL}});
  CHECK_NOTHROW(load(good));
  auto err = [](const std::string& bytes) { return model_error(bytes); };
  auto expect = [&](const std::string& bytes, const std::string& what) {
    const std::string e = err(bytes);
    CAPTURE(e);
    CHECK(has(e, "bad.model"));
    CHECK(has(e, what));
  };
  // wire format
  expect(std::string(11, '\x80'), "varint");
  expect(good.bytes() + std::string("\x0a\x05" "ab", 4), "runs past the end");
  expect(good.bytes() + "\x0b", "group wire type");
  expect(good.bytes() + "\x0e", "invalid wire type 6");
  expect(std::string("\x00\x00", 2), "field number 0");
  expect(Proto().str(1, Proto().str(1, "x").num(2, 5).s).s, "wire type varint, expected fixed32");
  expect(good.bytes() + Proto().num(1, 3).s, "wire type varint, expected bytes");
  expect(good.bytes().substr(0, good.bytes().size() - 2), "ModelProto");
  // model
  auto d = good;
  d.pieces[3].type = 9;
  expect(d.bytes(), "piece type 9");
  d = good;
  d.model_type = 3;
  expect(d.bytes(), "model_type WORD is not supported");
  d.model_type = 7;
  expect(d.bytes(), "model_type 7");
  d = good;
  d.pieces.erase(d.pieces.begin());
  expect(d.bytes(), "no <unk>");
  d = good;
  d.pieces.push_back({"<unk2>", 0, UNKNOWN});
  expect(d.bytes(), "<unk> is defined twice");
  d = good;
  d.pieces.push_back({"a", -2, NORMAL});
  expect(d.bytes(), "is already defined");
  d = good;
  d.pieces.push_back({"<s>", -2, NORMAL});  // a control piece's text again as a normal piece
  expect(d.bytes(), "is already defined");
  d = good;
  d.pieces.push_back({"", -2, NORMAL});
  expect(d.bytes(), "is empty");
  d = good;
  d.pieces.push_back({"<0x41>", 0, BYTE});
  expect(d.bytes(), "byte_fallback is false");
  d = good;
  add_byte_pieces(d);
  d.pieces.pop_back();
  expect(d.bytes(), "no byte piece <0xFF>");
  d = good;
  d.byte_fallback = true;
  d.pieces.push_back({"<0xzz>", 0, BYTE});
  expect(d.bytes(), "is invalid");
  expect(Proto().s, "has no pieces");
  // charsmap: too short, trie larger than the blob
  d = good;
  d.charsmap = "abc";
  expect(d.bytes(), "precompiled_charsmap of 3 bytes");
  d.charsmap = std::string("\xff\x00\x00\x00xxxx", 8);
  expect(d.bytes(), "exceeds the blob");
  // a rule whose replacement lies outside the strings: refused when it is used
  {
    // root unit: offset 1 (unit 0 = 1 << 10); 'a' at 1 ^ 0x61 = 0x60 with label 'a', leaf, offset 0x60 ^ 0x62 = 2
    // leaf unit at 0x60 ^ 2 = 0x62 holding value 999 (no such string)
    std::vector<std::uint32_t> units(0x80, 0);
    units[0] = 1u << 10;
    units[0x60] = 0x61u | (1u << 8) | (0x02u << 10);
    units[0x62] = (1u << 31) | 999u;
    std::string trie(reinterpret_cast<const char*>(units.data()), units.size() * 4);
    const std::uint32_t n = static_cast<std::uint32_t>(trie.size());
    d = good;
    d.charsmap = std::string(reinterpret_cast<const char*>(&n), 4) + trie + std::string("x\0", 2);
    auto sp = load(d);
    CHECK(sp.encode_ids("b") == std::vector<int>{sp.unk_id()});
    CHECK(has(error_of<lli::ModelError>([&] { sp.encode_ids("a"); }), "outside its 2 bytes of strings"));
  }
  CHECK(has(error_of<lli::ModelError>([] { SentencePiece::load("/nonexistent/tokenizer.model"); }), "not found"));
}

TEST_CASE("sentencepiece: truncated and bit-flipped models are refused or loaded, never a crash") {
  const std::string good = read_bytes(kData / "uni.model");
  std::size_t refused = 0, loaded = 0;
  for (std::size_t n = 0; n < good.size(); n += 7) {
    try {
      auto sp = SentencePiece::from_bytes(good.substr(0, n), "cut.model");
      (void)sp.decode_ids(sp.encode_ids("Hello world"));
      ++loaded;
    } catch (const lli::ModelError&) {
      ++refused;
    }
  }
  MESSAGE("uni.model cut at " << refused + loaded << " lengths: " << refused << " refused, " << loaded
                              << " loaded (cut between pieces, with <unk> present)");
  CHECK(refused > 0);
  std::mt19937 g(11);
  std::size_t flips_refused = 0, flips_loaded = 0;
  for (int i = 0; i < 600; ++i) {
    std::string m = good;
    const int n_flips = 1 + static_cast<int>(g() % 8);
    for (int k = 0; k < n_flips; ++k) m[g() % m.size()] ^= static_cast<char>(1u << (g() % 8));
    try {
      auto sp = SentencePiece::from_bytes(m, "flip.model");
      (void)sp.decode_ids(sp.encode_ids("Grüße, \xF0\x9F\xA6\x99 ABC  \xEF\xAC\x81ne <sep>"));
      ++flips_loaded;
    } catch (const lli::ModelError&) {
      ++flips_refused;
    }
  }
  MESSAGE("600 bit-flipped uni.model: " << flips_refused << " refused, " << flips_loaded << " loaded");
  CHECK(flips_refused + flips_loaded == 600);
}

TEST_CASE("sentencepiece: the protobuf reader's typed fields and bounds") {
  Proto p;
  p.num(1, -1).str(2, "xy").f32(3, 1.5f).num(4, 1).varint((5 << 3) | 1).s.append(8, '\x01');
  lli::pb::WireReader r(p.s, "t.bin", "Msg");
  lli::pb::Field f;
  REQUIRE(r.next(f));
  CHECK(f.number == 1);
  CHECK(r.as_int32(f) == -1);  // a negative int32 is a 10-byte varint
  REQUIRE(r.next(f));
  CHECK(r.as_bytes(f) == "xy");
  CHECK(has(error_of<lli::ModelError>([&] { r.as_float(f); }), "t.bin: Msg at byte 11: field 2: wire type bytes"));
  REQUIRE(r.next(f));
  CHECK(r.as_float(f) == 1.5f);
  REQUIRE(r.next(f));
  CHECK(r.as_bool(f));
  REQUIRE(r.next(f));
  CHECK(f.type == lli::pb::WireType::fixed64);
  CHECK(f.value == 0x0101010101010101ull);
  CHECK_FALSE(r.next(f));
  // a nested message reports its own path and absolute offsets
  Proto outer;
  outer.num(1, 7).str(2, Proto().str(1, "abc").s + "\x0b");
  lli::pb::WireReader o(outer.s, "t.bin", "Outer");
  REQUIRE(o.next(f));
  REQUIRE(o.next(f));
  auto inner = o.sub(f, "Outer.inner", 3);
  REQUIRE(inner.next(f));
  CHECK(has(error_of<lli::ModelError>([&] { inner.next(f); }), "t.bin: Outer.inner[3] at byte 9: field 1: group"));
}

TEST_CASE("sentencepiece: encoding 100 KB with the LLaMA model (speed, round trip)") {
  auto sp = SentencePiece::load((fixtures_dir() / "llava-tiny-a" / "tokenizer.model").string());
  const std::string base = read_bytes(fs::path(LLI_SAMPLES).parent_path() / "README.md");
  std::string text;
  while (text.size() < 100000) text += base;
  text.resize(100000);
  while (text.size() > 1 && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = sp.encode_ids(text);
  const auto t1 = std::chrono::steady_clock::now();
  const std::string back = sp.decode_ids(ids);
  const auto t2 = std::chrono::steady_clock::now();
  CHECK(back == text);
  MESSAGE("LLaMA tokenizer.model: " << text.size() << " bytes -> " << ids.size() << " ids, encode "
                                    << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms, decode "
                                    << std::chrono::duration<double, std::milli>(t2 - t1).count() << " ms");
}
