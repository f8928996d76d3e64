// Ref: transformers 4.45 models/clip/tokenization_clip.py (CLIPTokenizer, BasicTokenizer),
//      tokenization_utils.py, tokenization_utils_base.py; see clip_tokenizer.h.
#include "text/clip_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <queue>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/bounded_parse.h"
#include "lli/error.h"
#include "text/unicode.h"

namespace lli::text {

namespace fs = std::filesystem;
using nlohmann::json;

// One BPE merge: (left, right) -> result, applied in rank order.
struct BPEMerge {
  int rank;
  int result;  // interned symbol
};

struct CLIPTokenizer::Data {
  std::string source;  // the tokenizer directory, for messages
  std::unordered_map<std::string, TokenId> vocab;
  std::unordered_map<TokenId, std::string> id_to_token;
  std::unordered_map<std::string, int> symbols;        // interned BPE symbols
  std::unordered_map<std::uint64_t, BPEMerge> merges;  // (left << 32 | right) -> merge
  AddedVocab added;
  std::int64_t model_max_length = -1;
  TokenId bos = -1, eos = -1, unk = -1, pad = -1;
  std::string byte_char[256];                             // UTF-8 of bytes_to_unicode()[b]
  std::unordered_map<char32_t, unsigned char> char_byte;  // its inverse
};

namespace {

// The reference reads merges.txt lines [1, 49152 - 256 - 2 + 1): at most this many merges.
constexpr std::size_t kMaxMerges = 49152 - 256 - 2;

const std::string kStartOfText = "<|startoftext|>";
const std::string kEndOfText = "<|endoftext|>";

// ---- files ----------------------------------------------------------------------------------

std::string read_required(const fs::path& path, const char* what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw ModelError(fmt::format("{}: missing ({})", path.string(), what));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ModelError(fmt::format("{}: cannot open file", path.string()));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw ModelError(fmt::format("{}: read error", path.string()));
  if (text.rfind("version https://git-lfs", 0) == 0)
    throw ModelError(fmt::format("{}: is a Git LFS pointer, not the file (run `git lfs pull`)", path.string()));
  return text;
}

// Python str.split() / str.strip() whitespace among ASCII (merges.txt symbols are printable).
bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f'); }

std::vector<std::string_view> split_ascii_space(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && ascii_space(s[i])) ++i;
    std::size_t j = i;
    while (j < s.size() && !ascii_space(s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

int intern(CLIPTokenizer::Data& d, std::string_view s) {
  auto [it, fresh] = d.symbols.emplace(std::string(s), static_cast<int>(d.symbols.size()));
  return it->second;
}

int find_symbol(const CLIPTokenizer::Data& d, std::string_view s) {
  auto it = d.symbols.find(std::string(s));
  return it == d.symbols.end() ? -1 : it->second;
}

std::uint64_t pair_key(int a, int b) { return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint32_t>(b); }

void load_vocab(CLIPTokenizer::Data& d, const fs::path& path) {
  const std::string text = read_required(path, "the CLIP BPE vocabulary");
  json j = parse_json_bounded(text, path.string(), ExitCode::model, "invalid JSON: ");
  if (!j.is_object() || j.empty())
    throw ModelError(fmt::format("{}: expected a non-empty JSON object of token -> id", path.string()));
  d.vocab.reserve(j.size());
  for (const auto& [token, id] : j.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0)
      throw ModelError(fmt::format("{}: {} = {} is not a token id", path.string(), json_excerpt(json(token)), json_excerpt(id)));
    d.vocab[token] = id.get<TokenId>();
    d.id_to_token[id.get<TokenId>()] = token;
  }
}

void load_merges(CLIPTokenizer::Data& d, const fs::path& path) {
  const std::string text = read_required(path, "the CLIP BPE merges");
  // text.strip().split("\n")[1 : kMaxMerges + 1]: the first line (#version) is skipped.
  std::size_t b = 0, e = text.size();
  while (b < e && ascii_space(text[b])) ++b;
  while (e > b && ascii_space(text[e - 1])) --e;
  const std::string_view body(text.data() + b, e - b);
  std::size_t pos = body.find('\n');
  std::size_t line_no = 1, rank = 0;
  while (pos != std::string_view::npos && rank < kMaxMerges) {
    const std::size_t start = pos + 1;
    pos = body.find('\n', start);
    const std::string_view line = body.substr(start, pos == std::string_view::npos ? body.size() - start : pos - start);
    ++line_no;
    const auto parts = split_ascii_space(line);
    if (parts.size() != 2)
      throw ModelError(fmt::format("{}:{}: expected two symbols separated by a space, got {} ('{}')", path.string(),
                                   line_no, parts.size(), std::string(line.substr(0, 40))));
    const int a = intern(d, parts[0]), c = intern(d, parts[1]);
    std::string merged(parts[0]);
    merged += parts[1];
    const int r = intern(d, merged);
    d.merges[pair_key(a, c)] = BPEMerge{static_cast<int>(rank), r};  // a repeated pair keeps its last rank
    ++rank;
  }
  if (rank == 0) throw ModelError(fmt::format("{}: no merges (expected '#version' then 'a b' lines)", path.string()));
}

// transformers' bytes_to_unicode(): printable bytes map to themselves, the others to U+0100...
void init_byte_alphabet(CLIPTokenizer::Data& d) {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
    d.byte_char[b].clear();
    unicode::append_utf8(d.byte_char[b], c);
    d.char_byte[c] = static_cast<unsigned char>(b);
  }
}

// ---- BasicTokenizer clean-up ----------------------------------------------------------------

bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// " ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text)).
std::u32string basic_clean(std::string_view text) {
  using unicode::CharClass;
  std::u32string cleaned;
  for (char32_t c : unicode::decode_utf8(text)) {
    const bool tab_nl_cr = c == '\t' || c == '\n' || c == '\r';
    const CharClass k = unicode::char_class(c);
    if (c == 0 || c == 0xFFFD || (k == CharClass::control && !tab_nl_cr)) continue;  // _clean_text
    if (tab_nl_cr || k == CharClass::space_separator) {
      cleaned.push_back(' ');
    } else if (is_cjk(c)) {  // _tokenize_chinese_chars
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  const std::u32string normalized = unicode::nfc(cleaned);
  std::u32string out;
  out.reserve(normalized.size());
  for (std::size_t i = 0; i < normalized.size();) {  // whitespace_tokenize, lower() per word
    if (unicode::is_python_space(normalized[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < normalized.size() && !unicode::is_python_space(normalized[j])) ++j;
    if (!out.empty()) out.push_back(' ');
    out += unicode::to_lower(std::u32string_view(normalized).substr(i, j - i));
    i = j;
  }
  return out;
}

// ---- pre-tokenisation regex -----------------------------------------------------------------

// Case-insensitive comparison as the `regex` module folds: ASCII letters, and U+017F (long s)
// matches 's'.
bool char_matches(char32_t c, char lower) {
  if (c == static_cast<char32_t>(lower)) return true;
  if (lower >= 'a' && lower <= 'z' && c == static_cast<char32_t>(lower - 32)) return true;
  return lower == 's' && c == 0x17F;
}

bool literal_at(const std::u32string& t, std::size_t i, std::string_view lit) {
  if (i + lit.size() > t.size()) return false;
  for (std::size_t k = 0; k < lit.size(); ++k)
    if (!char_matches(t[i + k], lit[k])) return false;
  return true;
}

enum class RegexClass { space, letter, number, other, none };

RegexClass regex_class(char32_t c) {
  if (c == 0x345) return RegexClass::none;  // `regex` IGNORECASE: matches neither \p{L} nor its complement
  if (unicode::is_python_space(c)) return RegexClass::space;
  switch (unicode::char_class(c)) {
    case unicode::CharClass::letter:
      return RegexClass::letter;
    case unicode::CharClass::number:
      return RegexClass::number;
    default:
      return RegexClass::other;
  }
}

// Length of the regex match starting at t[i], 0 when no branch matches there (findall skips it).
std::size_t match_at(const std::u32string& t, std::size_t i) {
  static const std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  if (t[i] == '<') {
    if (literal_at(t, i, kStartOfText)) return kStartOfText.size();
    if (literal_at(t, i, kEndOfText)) return kEndOfText.size();
  }
  if (t[i] == '\'')
    for (auto c : kContractions)
      if (literal_at(t, i, c)) return c.size();
  const RegexClass k = regex_class(t[i]);
  if (k == RegexClass::number) return 1;
  if (k == RegexClass::letter || k == RegexClass::other) {
    std::size_t j = i + 1;
    while (j < t.size() && regex_class(t[j]) == k) ++j;
    return j - i;
  }
  return 0;
}

// ---- BPE ------------------------------------------------------------------------------------

// CLIPTokenizer.bpe(token) for the byte-mapped word: each iteration merges every occurrence
// (left to right) of the lowest-ranked adjacent pair. Done with a heap, one rank per batch, so a
// long word costs O(n log n) instead of O(n^2).
void bpe(const CLIPTokenizer::Data& d, std::string_view word, std::vector<std::string>& out) {
  if (word == kStartOfText || word == kEndOfText) {  // the reference's pre-seeded cache
    out.emplace_back(word);
    return;
  }
  std::string w;
  struct Node {
    std::size_t begin, end;  // [begin, end) in w
    int sym;                 // interned symbol, -1 when no merge involves it
    int prev, next;          // -1 at the ends
    bool alive;
  };
  std::vector<Node> nodes;
  nodes.reserve(word.size());
  for (std::size_t i = 0; i < word.size(); ++i) {
    const std::size_t begin = w.size();
    w += d.byte_char[static_cast<unsigned char>(word[i])];
    if (i + 1 == word.size()) w += "</w>";
    const int idx = static_cast<int>(nodes.size());
    nodes.push_back({begin, w.size(), -1, idx - 1, i + 1 < word.size() ? idx + 1 : -1, true});
  }
  for (auto& n : nodes) n.sym = find_symbol(d, std::string_view(w).substr(n.begin, n.end - n.begin));

  struct Candidate {
    int rank;
    int left, right;  // node indices; node order is text order, so ties in rank merge left to right
    int left_sym, right_sym, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int l, int r) {
    if (l < 0 || r < 0 || nodes[l].sym < 0 || nodes[r].sym < 0) return;
    auto it = d.merges.find(pair_key(nodes[l].sym, nodes[r].sym));
    if (it == d.merges.end()) return;
    heap.push({it->second.rank, l, r, nodes[l].sym, nodes[r].sym, it->second.result});
  };
  for (std::size_t i = 0; i + 1 < nodes.size(); ++i) push(static_cast<int>(i), static_cast<int>(i + 1));

  std::vector<Candidate> batch;
  while (!heap.empty()) {
    // All current occurrences of the lowest-ranked pair; pairs they create wait for the next round.
    batch.clear();
    const int rank = heap.top().rank;
    while (!heap.empty() && heap.top().rank == rank) {
      batch.push_back(heap.top());
      heap.pop();
    }
    for (const auto& c : batch) {
      Node& l = nodes[c.left];
      Node& r = nodes[c.right];
      if (!l.alive || !r.alive || l.next != c.right || l.sym != c.left_sym || r.sym != c.right_sym) continue;
      l.end = r.end;
      l.sym = c.result;
      l.next = r.next;
      if (r.next >= 0) nodes[r.next].prev = c.left;
      r.alive = false;
      push(l.prev, c.left);
      push(c.left, l.next);
    }
  }
  for (int i = 0; i >= 0; i = nodes[i].next) out.push_back(w.substr(nodes[i].begin, nodes[i].end - nodes[i].begin));
}

// Python CLIPTokenizer._tokenize on a piece without added tokens, appending BPE pieces until
// `limit` pieces are in `out`.
void tokenize_plain(const CLIPTokenizer::Data& d, std::string_view text, std::size_t limit,
                    std::vector<std::string>& out) {
  const std::u32string t = basic_clean(text);
  for (std::size_t i = 0; i < t.size() && out.size() < limit;) {
    const std::size_t n = match_at(t, i);
    if (n == 0) {
      ++i;
      continue;
    }
    bpe(d, unicode::encode_utf8(std::u32string_view(t).substr(i, n)), out);
    i += n;
  }
  if (out.size() > limit) out.resize(limit);
}

std::vector<std::string> tokenize_limited(const CLIPTokenizer::Data& d, std::string_view text, std::size_t limit) {
  std::vector<std::string> out;
  for (const auto& seg : d.added.split(text)) {
    if (out.size() >= limit) break;
    if (seg.token)
      out.push_back(seg.text);
    else
      tokenize_plain(d, seg.text, limit, out);
  }
  return out;
}

TokenId piece_id(const CLIPTokenizer::Data& d, const std::string& piece) {
  if (const AddedToken* t = d.added.by_content(piece)) return t->id;
  auto it = d.vocab.find(piece);
  return it == d.vocab.end() ? d.unk : it->second;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Loading

CLIPTokenizer::CLIPTokenizer() = default;

CLIPTokenizer CLIPTokenizer::load(const fs::path& dir) {
  auto d = std::make_shared<Data>();
  d->source = dir.string();
  load_vocab(*d, dir / "vocab.json");
  load_merges(*d, dir / "merges.txt");
  init_byte_alphabet(*d);

  const fs::path cfg_path = dir / "tokenizer_config.json";
  const std::optional<json> cfg = read_tokenizer_json(cfg_path);
  const json c = cfg ? *cfg : json::object();
  // CLIPTokenizer.__init__ defaults.
  SpecialDefaults defaults;
  defaults[static_cast<std::size_t>(SpecialSlot::bos)] = kStartOfText;
  defaults[static_cast<std::size_t>(SpecialSlot::eos)] = kEndOfText;
  defaults[static_cast<std::size_t>(SpecialSlot::unk)] = kEndOfText;
  defaults[static_cast<std::size_t>(SpecialSlot::pad)] = kEndOfText;
  const auto& vocab = d->vocab;
  d->added = AddedVocab::load(
      dir, c, cfg_path, defaults,
      [&vocab](const std::string& s) -> std::optional<TokenId> {
        auto it = vocab.find(s);
        return it == vocab.end() ? std::nullopt : std::optional<TokenId>(it->second);
      },
      static_cast<TokenId>(vocab.size()));
  d->bos = d->added.slot_id(SpecialSlot::bos);
  d->eos = d->added.slot_id(SpecialSlot::eos);
  d->unk = d->added.slot_id(SpecialSlot::unk);
  d->pad = d->added.slot_id(SpecialSlot::pad);
  for (auto [slot, key] : {std::pair{d->bos, "bos_token"}, {d->eos, "eos_token"}, {d->unk, "unk_token"}})
    if (slot < 0) throw ModelError(fmt::format("{}: {} is null (CLIP needs one)", cfg_path.string(), key));

  if (auto it = c.find("model_max_length"); it != c.end() && !it->is_null()) {
    if (!it->is_number())
      throw ModelError(fmt::format("{}: model_max_length = {} is not a number", cfg_path.string(), json_excerpt(*it)));
    const double v = it->get<double>();
    if (v < 2) throw ModelError(fmt::format("{}: model_max_length = {} is below 2", cfg_path.string(), json_excerpt(*it)));
    // transformers' "no limit" is int(1e30).
    d->model_max_length = v > 1e18 ? -1 : static_cast<std::int64_t>(v);
  }
  CLIPTokenizer tok;
  tok.d_ = std::move(d);
  return tok;
}

const CLIPTokenizer::Data& CLIPTokenizer::data() const {
  if (!d_) throw RuntimeError("CLIP tokenizer: used before CLIPTokenizer::load()");
  return *d_;
}

// ---------------------------------------------------------------------------------------------
// Queries

std::int64_t CLIPTokenizer::model_max_length() const { return data().model_max_length; }
TokenId CLIPTokenizer::bos_id() const { return data().bos; }
TokenId CLIPTokenizer::eos_id() const { return data().eos; }
TokenId CLIPTokenizer::unk_id() const { return data().unk; }
TokenId CLIPTokenizer::pad_id() const { return data().pad; }
std::int64_t CLIPTokenizer::vocab_size() const {
  return data().added.size_with(static_cast<TokenId>(data().vocab.size()));
}
TokenId CLIPTokenizer::token_to_id(const std::string& token) const { return piece_id(data(), token); }

std::string CLIPTokenizer::id_to_token(TokenId id) const {
  const Data& d = data();
  if (const AddedToken* t = d.added.by_id(id)) return t->content;
  auto it = d.id_to_token.find(id);
  return it == d.id_to_token.end() ? std::string() : it->second;
}

// ---------------------------------------------------------------------------------------------
// Encoding

std::vector<std::string> CLIPTokenizer::tokenize(std::string_view text) const {
  return tokenize_limited(data(), text, SIZE_MAX);
}

std::vector<TokenId> CLIPTokenizer::encode(std::string_view text, std::int64_t max_length) const {
  const Data& d = data();
  if (max_length > 0 && max_length < 2)
    throw InputError(fmt::format("CLIP tokenizer: max_length {} leaves no room for BOS and EOS", max_length));
  const std::size_t limit = max_length > 0 ? static_cast<std::size_t>(max_length - 2) : SIZE_MAX;
  const auto pieces = tokenize_limited(d, text, limit);
  std::vector<TokenId> ids;
  ids.reserve(pieces.size() + 2);
  ids.push_back(d.bos);
  for (const auto& p : pieces) ids.push_back(piece_id(d, p));
  ids.push_back(d.eos);
  return ids;
}

CLIPTokenizer::Batch CLIPTokenizer::encode_batch(const std::vector<std::string>& texts, Padding padding,
                                                 std::int64_t max_length, bool truncation) const {
  const Data& d = data();
  const std::int64_t limit = max_length > 0 ? max_length : d.model_max_length;  // -1: none
  Batch b;
  std::size_t longest = 0;
  for (const auto& t : texts) {
    b.ids.push_back(encode(t, truncation ? limit : -1));
    longest = std::max(longest, b.ids.back().size());
  }
  std::size_t target = 0;
  if (padding == Padding::longest) target = longest;
  if (padding == Padding::max_length && limit > 0) target = static_cast<std::size_t>(limit);
  for (auto& ids : b.ids) {
    const std::size_t n = ids.size();
    b.attention_mask.emplace_back(std::max(n, target), 0);
    std::fill_n(b.attention_mask.back().begin(), n, 1);
    if (n >= target) continue;
    if (d.pad < 0) throw InputError(fmt::format("{}: padding requested but the tokenizer has no pad_token", d.source));
    ids.resize(target, d.pad);
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Decoding

std::string CLIPTokenizer::decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
  const Data& d = data();
  // CLIPTokenizer.convert_tokens_to_string: byte alphabet back to bytes, UTF-8 with replacement,
  // "</w>" -> " ", stripped.
  auto pieces_to_string = [&d](const std::vector<std::string>& pieces) {
    std::string bytes;
    for (const auto& p : pieces)
      for (char32_t c : unicode::decode_utf8(p)) {
        auto it = d.char_byte.find(c);
        if (it != d.char_byte.end()) bytes.push_back(static_cast<char>(it->second));
      }
    std::string text = unicode::encode_utf8(unicode::decode_utf8(bytes));
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "</w>") == 0) {
        out.push_back(' ');
        i += 4;
      } else {
        out.push_back(text[i++]);
      }
    }
    return std::string(unicode::rstrip(unicode::lstrip(out)));
  };
  return d.added.decode(
      ids, skip_special_tokens, static_cast<TokenId>(d.vocab.size()), [this](TokenId id) { return id_to_token(id); },
      pieces_to_string);
}

}  // namespace lli::text
