// Ref: google/sentencepiece src/normalizer.cc, bpe_model.cc, unigram_model.cc, model_interface.cc,
//      sentencepiece_processor.cc, util.cc (DecodeUTF8), third_party/darts_clone/darts.h.
#include "text/sentencepiece.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <queue>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "core/quote.h"
#include "lli/error.h"
#include "text/sentencepiece_model.h"

namespace lli::text {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // "▁" U+2581
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr char32_t kUnicodeError = 0xFFFD;
constexpr std::size_t kMaxModelBytes = std::size_t{256} << 20;
// The longest input a charsmap rule may match. Real rules match a few characters; the bound
// keeps a hostile double array (a path that loops) from making normalization quadratic.
constexpr std::size_t kMaxRuleBytes = 1024;
constexpr float kUnkPenalty = 10.0f;

bool consume_prefix(std::string_view& s, std::string_view p) {
  if (s.substr(0, p.size()) != p) return false;
  s.remove_prefix(p.size());
  return true;
}

bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// string_util::OneCharLen: the sequence length its lead byte announces (1 for a stray byte).
std::size_t one_char_len(char c) {
  static constexpr std::uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[static_cast<unsigned char>(c) >> 4];
}

bool is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }
bool is_valid_codepoint(char32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

// string_util::DecodeUTF8 on a non-empty `s`: the code point and its length; a malformed
// sequence (overlong, surrogate, cut, stray continuation byte) is U+FFFD of length 1.
char32_t decode_utf8(std::string_view s, std::size_t* mblen) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t len = s.size();
  if (b[0] < 0x80) {
    *mblen = 1;
    return b[0];
  } else if (len >= 2 && (b[0] & 0xE0) == 0xC0) {
    const char32_t cp = (static_cast<char32_t>(b[0] & 0x1F) << 6) | (b[1] & 0x3F);
    if (is_trail(b[1]) && cp >= 0x80 && is_valid_codepoint(cp)) {
      *mblen = 2;
      return cp;
    }
  } else if (len >= 3 && (b[0] & 0xF0) == 0xE0) {
    const char32_t cp =
        (static_cast<char32_t>(b[0] & 0x0F) << 12) | (static_cast<char32_t>(b[1] & 0x3F) << 6) | (b[2] & 0x3F);
    if (is_trail(b[1]) && is_trail(b[2]) && cp >= 0x800 && is_valid_codepoint(cp)) {
      *mblen = 3;
      return cp;
    }
  } else if (len >= 4 && (b[0] & 0xF8) == 0xF0) {
    const char32_t cp = (static_cast<char32_t>(b[0] & 0x07) << 18) | (static_cast<char32_t>(b[1] & 0x3F) << 12) |
                        (static_cast<char32_t>(b[2] & 0x3F) << 6) | (b[3] & 0x3F);
    if (is_trail(b[1]) && is_trail(b[2]) && is_trail(b[3]) && cp >= 0x10000 && is_valid_codepoint(cp)) {
      *mblen = 4;
      return cp;
    }
  }
  *mblen = 1;
  return kUnicodeError;
}

// string_util::IsValidDecodeUTF8: a well-formed character (a literal U+FFFD included).
bool valid_utf8_prefix(std::string_view s, std::size_t* mblen) {
  return decode_utf8(s, mblen) != kUnicodeError || *mblen == 3;
}

// "<0x0A>" -> 10 (upper-case hex only, as sentencepiece's PieceToByte); -1 otherwise.
int piece_to_byte(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  int v = 0;
  for (std::size_t i = 3; i < 5; ++i) {
    const char c = p[i];
    if (c >= '0' && c <= '9')
      v = v * 16 + (c - '0');
    else if (c >= 'A' && c <= 'F')
      v = v * 16 + (c - 'A' + 10);
    else
      return -1;
  }
  return v;
}

// A trie over byte strings (the vocabulary for the unigram lattice, the user-defined pieces for
// the normalizer and BPE): nodes in breadth-first order, the children of a node contiguous and
// sorted by label. Built without recursion, so a long piece cannot exhaust the stack.
class PieceTrie {
 public:
  // `keys`: distinct, non-empty.
  void build(std::vector<std::pair<std::string_view, int>> keys) {
    nodes_.clear();
    if (keys.empty()) return;
    std::sort(keys.begin(), keys.end());
    struct Work {
      std::uint32_t node;
      std::size_t lo, hi, depth;
    };
    nodes_.push_back(Node{});
    std::deque<Work> queue{{0, 0, keys.size(), 0}};
    while (!queue.empty()) {
      const Work w = queue.front();
      queue.pop_front();
      std::size_t i = w.lo;
      if (i < w.hi && keys[i].first.size() == w.depth) nodes_[w.node].value = keys[i++].second;
      nodes_[w.node].first_child = static_cast<std::uint32_t>(nodes_.size());
      while (i < w.hi) {
        const char label = keys[i].first[w.depth];
        std::size_t j = i + 1;
        while (j < w.hi && keys[j].first[w.depth] == label) ++j;
        Node child;
        child.label = static_cast<unsigned char>(label);
        queue.push_back({static_cast<std::uint32_t>(nodes_.size()), i, j, w.depth + 1});
        nodes_.push_back(child);
        ++nodes_[w.node].n_children;
        i = j;
      }
    }
  }

  bool empty() const { return nodes_.empty(); }

  // f(length, value) for every key that is a prefix of `s`, shortest first.
  template <class F>
  void for_each_prefix(std::string_view s, F&& f) const {
    if (nodes_.empty()) return;
    std::uint32_t node = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      node = child(node, static_cast<unsigned char>(s[i]));
      if (node == kNone) return;
      if (nodes_[node].value >= 0) f(i + 1, nodes_[node].value);
    }
  }

  // Length of the longest key that is a prefix of `s` (0: none).
  std::size_t longest_prefix(std::string_view s) const {
    std::size_t best = 0;
    for_each_prefix(s, [&best](std::size_t n, int) { best = n; });
    return best;
  }

 private:
  static constexpr std::uint32_t kNone = 0xffffffffu;
  struct Node {
    std::uint32_t first_child = 0;
    std::uint32_t n_children = 0;
    std::int32_t value = -1;
    unsigned char label = 0;
  };

  std::uint32_t child(std::uint32_t node, unsigned char c) const {
    const Node& n = nodes_[node];
    std::uint32_t lo = n.first_child, hi = n.first_child + n.n_children;
    while (lo < hi) {
      const std::uint32_t mid = lo + (hi - lo) / 2;
      if (nodes_[mid].label < c)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo < n.first_child + n.n_children && nodes_[lo].label == c ? lo : kNone;
  }

  std::vector<Node> nodes_;
};

// A normalizer_spec.precompiled_charsmap: <uint32 LE trie size><darts-clone double array>
// <replacement strings, each ended by NUL>. Every unit read is bounds-checked.
class CharsMap {
 public:
  CharsMap() = default;
  CharsMap(std::string_view blob, const std::string* source, const char* spec) : source_(source), spec_(spec) {
    if (blob.empty()) return;
    if (blob.size() <= 4) fail(fmt::format("precompiled_charsmap of {} bytes is broken", blob.size()));
    const auto* b = reinterpret_cast<const unsigned char*>(blob.data());
    const std::uint32_t trie_size = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
    if (trie_size >= blob.size())
      fail(fmt::format("precompiled_charsmap trie size {} exceeds the blob ({} bytes)", trie_size, blob.size()));
    trie_ = blob.substr(4, trie_size);
    strings_ = blob.substr(4 + trie_size);
    n_units_ = trie_.size() / 4;
  }

  bool empty() const { return n_units_ == 0; }

  // Length of the longest rule matching a prefix of `s` (0: none) and its replacement.
  std::size_t longest(std::string_view s, std::string_view* replacement) const {
    if (n_units_ == 0) return 0;
    std::size_t node = offset(unit(0));
    std::size_t best_len = 0;
    std::uint32_t best_value = 0;
    const std::size_t n = std::min(s.size(), kMaxRuleBytes);
    for (std::size_t i = 0; i < n; ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      node ^= c;
      if (node >= n_units_) break;
      const std::uint32_t u = unit(node);
      if ((u & ((1u << 31) | 0xFFu)) != c) break;  // label
      node ^= offset(u);
      if ((u >> 8) & 1u) {  // has_leaf
        if (node >= n_units_) break;
        best_len = i + 1;
        best_value = unit(node) & ((1u << 31) - 1);
      }
    }
    if (best_len == 0) return 0;
    if (best_value >= strings_.size() || !std::memchr(strings_.data() + best_value, '\0', strings_.size() - best_value))
      fail(fmt::format("precompiled_charsmap rule points at byte {} outside its {} bytes of strings", best_value,
                       strings_.size()));
    *replacement = std::string_view(strings_.data() + best_value);
    return best_len;
  }

 private:
  std::uint32_t unit(std::size_t i) const {
    const auto* b = reinterpret_cast<const unsigned char*>(trie_.data() + 4 * i);
    return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
  }
  static std::size_t offset(std::uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
  [[noreturn]] void fail(const std::string& what) const {
    throw ModelError(fmt::format("{}: {}: {}", source_ ? *source_ : std::string("sentencepiece"), spec_, what));
  }

  std::string_view trie_, strings_;
  std::size_t n_units_ = 0;
  const std::string* source_ = nullptr;
  const char* spec_ = "";
};

using EncodeResult = std::vector<std::pair<std::string_view, int>>;

}  // namespace

struct SentencePiece::Impl {
  std::string source;
  SpmModelProto m;
  std::unordered_map<std::string_view, int> normal;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string_view, int> reserved;  // UNKNOWN, CONTROL, BYTE
  std::vector<std::int16_t> byte_of;                   // id -> byte value of a BYTE piece, else -1
  std::array<int, 256> byte_id{};
  int unk = -1;
  PieceTrie user_defined;  // normalizer pass-through and BPE's frozen symbols
  PieceTrie vocab;         // unigram lattice
  CharsMap charsmap, denorm_charsmap;
  float min_score = FLT_MAX, max_score = FLT_MIN;  // over NORMAL pieces (unigram; FLT_MIN as upstream)

  [[noreturn]] void fail(const std::string& what) const { throw ModelError(source + ": " + what); }

  bool has_type(int id, SpmPieceType t) const {
    return id >= 0 && static_cast<std::size_t>(id) < m.pieces.size() && m.pieces[static_cast<std::size_t>(id)].type == t;
  }

  int piece_to_id(std::string_view piece) const {
    if (auto it = reserved.find(piece); it != reserved.end()) return it->second;
    if (auto it = normal.find(piece); it != normal.end()) return it->second;
    return unk;
  }

  int special_id(const std::string& piece, SpmPieceType t) const {
    const int id = piece_to_id(piece);
    return has_type(id, t) ? id : -1;
  }

  void init(bool add_dummy_prefix);
  void self_test() const;

  std::string normalize(std::string_view input, const SpmNormalizerSpec& spec, const CharsMap& map, bool suffix,
                        const PieceTrie* user) const;
  EncodeResult encode_bpe(std::string_view normalized) const;
  EncodeResult encode_unigram(std::string_view normalized) const;
  // Normalized text (owned by the caller: the result views it) and the final (piece, id) list.
  EncodeResult encode(std::string_view text, std::string& normalized) const;
  std::string decode(const EncodeResult& pieces) const;
};

// ---------------------------------------------------------------------------------------------
// Loading (ModelInterface::InitializePieces and the model constructors)

void SentencePiece::Impl::init(bool add_dummy_prefix) {
  if (!add_dummy_prefix) m.normalizer.add_dummy_prefix = false;
  const SpmModelType type = m.trainer.model_type;
  if (type != SpmModelType::bpe && type != SpmModelType::unigram)
    fail(fmt::format("SentencePiece model_type {} is not supported (only UNIGRAM and BPE)", spm_model_type_name(type)));
  if (m.pieces.empty()) fail("SentencePiece model has no pieces");
  if (m.pieces.size() > static_cast<std::size_t>(INT32_MAX)) fail("SentencePiece model has too many pieces");

  byte_of.assign(m.pieces.size(), -1);
  byte_id.fill(-1);
  std::vector<std::pair<std::string_view, int>> user_keys, vocab_keys;
  normal.reserve(m.pieces.size());
  for (std::size_t i = 0; i < m.pieces.size(); ++i) {
    const SpmPiece& p = m.pieces[i];
    const int id = static_cast<int>(i);
    if (p.piece.empty()) fail(fmt::format("piece {} is empty", id));
    const bool is_normal = p.type == SpmPieceType::normal || p.type == SpmPieceType::user_defined ||
                           p.type == SpmPieceType::unused;
    if (normal.count(p.piece) || reserved.count(p.piece))
      fail(fmt::format("piece {} {} is already defined", id, quote_excerpt(p.piece)));
    (is_normal ? normal : reserved).emplace(p.piece, id);
    if (is_normal) vocab_keys.emplace_back(p.piece, id);
    if (p.type == SpmPieceType::user_defined) user_keys.emplace_back(p.piece, id);
    if (p.type == SpmPieceType::unknown) {
      if (unk >= 0) fail(fmt::format("<unk> is defined twice (pieces {} and {})", unk, id));
      unk = id;
    }
    if (p.type == SpmPieceType::byte) {
      if (!m.trainer.byte_fallback)
        fail(fmt::format("byte piece {} {} is found although byte_fallback is false", id, quote_excerpt(p.piece)));
      const int b = piece_to_byte(p.piece);
      if (b < 0) fail(fmt::format("byte piece {} {} is invalid", id, quote_excerpt(p.piece)));
      byte_of[i] = static_cast<std::int16_t>(b);
      byte_id[static_cast<std::size_t>(b)] = id;
    }
    if (p.type == SpmPieceType::normal) {
      min_score = std::min(min_score, p.score);
      max_score = std::max(max_score, p.score);
    }
  }
  if (unk < 0) fail("SentencePiece model has no <unk> piece (type UNKNOWN)");
  if (m.trainer.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (byte_id[static_cast<std::size_t>(b)] < 0)
        fail(fmt::format("byte_fallback is true but there is no byte piece <0x{:02X}>", b));
  user_defined.build(user_keys);
  if (type == SpmModelType::unigram) {
    if (vocab_keys.empty()) fail("SentencePiece unigram model has no normal pieces");
    vocab.build(std::move(vocab_keys));
  }
  charsmap = CharsMap(m.normalizer.precompiled_charsmap, &source, "normalizer_spec");
  if (m.denormalizer) denorm_charsmap = CharsMap(m.denormalizer->precompiled_charsmap, &source, "denormalizer_spec");
}

// SentencePieceProcessor::Load runs the model's self-test samples; unigram results with the same
// score count as equal (ModelInterface::VerifyOutputsEquivalent).
void SentencePiece::Impl::self_test() const {
  auto unigram_score = [this](std::string_view joined) {
    double total = 0;
    std::size_t start = 0;
    while (start <= joined.size()) {
      std::size_t end = joined.find(' ', start);
      if (end == std::string_view::npos) end = joined.size();
      const std::string_view p = joined.substr(start, end - start);
      const int id = piece_to_id(p);
      if (id == unk)
        total += min_score - kUnkPenalty;
      else if (has_type(id, SpmPieceType::user_defined))
        total += static_cast<double>(static_cast<float>(p.size()) * max_score) - 0.1;
      else
        total += m.pieces[static_cast<std::size_t>(id)].score;
      start = end + 1;
    }
    return total;
  };
  for (const auto& s : m.self_test) {
    std::string normalized, got;
    for (const auto& [piece, id] : encode(s.input, normalized)) {
      if (!got.empty()) got += ' ';
      got.append(piece.data(), piece.size());
    }
    if (got == s.expected) continue;
    if (m.trainer.model_type == SpmModelType::unigram &&
        std::abs(unigram_score(got) - unigram_score(s.expected)) <= 1e-5)
      continue;
    fail(fmt::format("SentencePiece self-test failed: {} encodes as {}, the model expects {}", quote_excerpt(s.input),
                     quote_excerpt(got), quote_excerpt(s.expected)));
  }
}

// ---------------------------------------------------------------------------------------------
// Normalization (normalizer::Normalizer::Normalize / NormalizePrefix)

std::string SentencePiece::Impl::normalize(std::string_view input, const SpmNormalizerSpec& spec, const CharsMap& map,
                                           bool suffix, const PieceTrie* user) const {
  std::string out;
  if (input.empty()) return out;
  // The normalized form of the longest prefix that has one, and the input bytes it consumed.
  auto prefix = [&](std::string_view in) -> std::pair<std::string_view, std::size_t> {
    if (user) {
      if (const std::size_t n = user->longest_prefix(in)) return {in.substr(0, n), n};
    }
    std::string_view rule;
    if (const std::size_t n = map.longest(in, &rule)) return {rule, n};
    std::size_t mblen = 0;
    if (!valid_utf8_prefix(in, &mblen)) return {kReplacementChar, 1};
    return {in.substr(0, mblen), mblen};
  };

  if (spec.remove_extra_whitespaces) {
    while (!input.empty()) {
      const auto p = prefix(input);
      if (p.first != " ") break;
      input.remove_prefix(p.second);
    }
  }
  if (input.empty()) return out;

  out.reserve(input.size() + input.size() / 2 + 3);
  auto add_ws = [&] { out += spec.escape_whitespaces ? kSpaceSymbol : std::string_view(" "); };
  if (!suffix && spec.add_dummy_prefix) add_ws();

  bool is_prev_space = spec.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [sp, consumed] = prefix(input);
    while (is_prev_space && consume_prefix(sp, " ")) {
    }
    if (!sp.empty()) {
      for (const char c : sp) {
        if (spec.escape_whitespaces && c == ' ')
          out += kSpaceSymbol;
        else
          out += c;
      }
      is_prev_space = sp.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!spec.remove_extra_whitespaces) is_prev_space = false;
  }

  if (spec.remove_extra_whitespaces) {
    const std::string_view space = spec.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
    while (ends_with(out, space)) out.resize(out.size() - space.size());
  }
  if (suffix && spec.add_dummy_prefix) add_ws();
  return out;
}

// ---------------------------------------------------------------------------------------------
// BPE (bpe::Model::SampleEncode with alpha = 0)

EncodeResult SentencePiece::Impl::encode_bpe(std::string_view normalized) const {
  struct Symbol {
    int prev;
    int next;
    bool freeze;
    std::string_view piece;
  };
  struct SymbolPair {
    float score;
    int left;
    int right;
    std::size_t size;
  };
  // The highest score first; on a tie the leftmost pair.
  struct Lower {
    bool operator()(const SymbolPair& a, const SymbolPair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  std::priority_queue<SymbolPair, std::vector<SymbolPair>, Lower> agenda;
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());

  auto maybe_add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view piece(symbols[left].piece.data(), symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = normal.find(piece);
    if (it == normal.end()) return;
    agenda.push(SymbolPair{m.pieces[static_cast<std::size_t>(it->second)].score, left, right, piece.size()});
    if (has_type(it->second, SpmPieceType::unused)) rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
  };

  // Characters (user-defined pieces as one frozen symbol).
  std::string_view rest = normalized;
  int index = 0;
  while (!rest.empty()) {
    Symbol s{};
    std::size_t len = user_defined.longest_prefix(rest);
    s.freeze = len > 0;
    if (len == 0) len = std::min(rest.size(), one_char_len(rest[0]));
    s.piece = rest.substr(0, len);
    s.prev = index == 0 ? -1 : index - 1;
    rest.remove_prefix(len);
    s.next = rest.empty() ? -1 : index + 1;
    ++index;
    symbols.push_back(s);
  }
  if (symbols.empty()) return {};
  for (std::size_t i = 1; i < symbols.size(); ++i) maybe_add_pair(static_cast<int>(i - 1), static_cast<int>(i));

  while (!agenda.empty()) {
    const SymbolPair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[static_cast<std::size_t>(top.left)];
    Symbol& r = symbols[static_cast<std::size_t>(top.right)];
    // Stale: one side was merged away since the pair was queued.
    if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) continue;
    l.piece = std::string_view(l.piece.data(), l.piece.size() + r.piece.size());
    l.next = r.next;
    if (r.next >= 0) symbols[static_cast<std::size_t>(r.next)].prev = top.left;
    r.piece = std::string_view();
    maybe_add_pair(l.prev, top.left);
    maybe_add_pair(top.left, l.next);
  }

  // UNUSED pieces are split back into what they were merged from (iteratively: no deep recursion).
  EncodeResult out;
  std::vector<std::string_view> stack;
  for (int i = 0; i != -1; i = symbols[static_cast<std::size_t>(i)].next) {
    stack.push_back(symbols[static_cast<std::size_t>(i)].piece);
    while (!stack.empty()) {
      const std::string_view w = stack.back();
      stack.pop_back();
      const int id = piece_to_id(w);
      const auto it = has_type(id, SpmPieceType::unused) ? rev_merge.find(w) : rev_merge.end();
      if (it == rev_merge.end()) {
        out.emplace_back(w, id);
        continue;
      }
      stack.push_back(it->second.second);
      stack.push_back(it->second.first);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Unigram (unigram::Model::EncodeOptimized: Viterbi with the best path ending at each byte)

EncodeResult SentencePiece::Impl::encode_unigram(std::string_view normalized) const {
  struct BestPathNode {
    int id = -1;
    float best_path_score = 0;
    int starts_at = -1;
  };
  const std::size_t size = normalized.size();
  const float unk_score = min_score - kUnkPenalty;
  std::vector<BestPathNode> best(size + 1);
  std::size_t starts_at = 0;
  while (starts_at < size) {
    const float score_till_here = best[starts_at].best_path_score;
    bool has_single_node = false;
    const std::size_t mblen = std::min(one_char_len(normalized[starts_at]), size - starts_at);
    vocab.for_each_prefix(normalized.substr(starts_at), [&](std::size_t length, int id) {
      if (has_type(id, SpmPieceType::unused)) return;
      BestPathNode& target = best[starts_at + length];
      // Upstream's arithmetic: a user-defined piece's bonus is computed in double.
      const double score = has_type(id, SpmPieceType::user_defined)
                               ? static_cast<double>(static_cast<float>(length) * max_score) - 0.1
                               : static_cast<double>(m.pieces[static_cast<std::size_t>(id)].score);
      const double candidate = score + static_cast<double>(score_till_here);
      if (target.starts_at == -1 || candidate > static_cast<double>(target.best_path_score)) {
        target.best_path_score = static_cast<float>(candidate);
        target.starts_at = static_cast<int>(starts_at);
        target.id = id;
      }
      if (!has_single_node && length == mblen) has_single_node = true;
    });
    if (!has_single_node) {
      BestPathNode& target = best[starts_at + mblen];
      const float candidate = unk_score + score_till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = candidate;
        target.starts_at = static_cast<int>(starts_at);
        target.id = unk;
      }
    }
    starts_at += mblen;
  }
  EncodeResult out;
  std::size_t ends_at = size;
  while (ends_at > 0) {
    const BestPathNode& node = best[ends_at];
    const auto begin = static_cast<std::size_t>(node.starts_at);
    out.emplace_back(normalized.substr(begin, ends_at - begin), node.id);
    ends_at = begin;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encode (SentencePieceProcessor::Encode + PopulateSentencePieceText)

EncodeResult SentencePiece::Impl::encode(std::string_view text, std::string& normalized) const {
  normalized = normalize(text, m.normalizer, charsmap, m.trainer.treat_whitespace_as_suffix,
                         user_defined.empty() ? nullptr : &user_defined);
  if (normalized.empty()) return {};
  const EncodeResult result =
      m.trainer.model_type == SpmModelType::bpe ? encode_bpe(normalized) : encode_unigram(normalized);
  EncodeResult out;
  out.reserve(result.size());
  bool prev_unk = false;
  for (const auto& [w, id] : result) {
    const bool is_unk = has_type(id, SpmPieceType::unknown);
    if (has_type(id, SpmPieceType::control)) {
      out.emplace_back(w, id);
    } else if (is_unk && m.trainer.byte_fallback) {
      for (const char c : w) {
        const int bid = byte_id[static_cast<unsigned char>(c)];
        out.emplace_back(m.pieces[static_cast<std::size_t>(bid)].piece, bid);
      }
    } else if (is_unk && prev_unk) {
      // Consecutive unknown pieces become one (they are adjacent in `normalized`).
      std::string_view& last = out.back().first;
      last = std::string_view(last.data(), last.size() + w.size());
    } else {
      out.emplace_back(w, id);
    }
    prev_unk = is_unk;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decode (SentencePieceProcessor::Decode)

std::string SentencePiece::Impl::decode(const EncodeResult& pieces) const {
  const SpmNormalizerSpec& spec = m.normalizer;
  std::string text;
  // A run of byte pieces: each well-formed UTF-8 character is copied, each malformed byte is U+FFFD.
  auto flush_bytes = [&](std::size_t begin, std::size_t end) {
    if (begin >= end) return;
    std::string bytes;
    bytes.reserve(end - begin);
    for (std::size_t i = begin; i < end; ++i)
      bytes += static_cast<char>(byte_of[static_cast<std::size_t>(pieces[i].second)]);
    std::size_t offset = 0;
    while (offset < bytes.size()) {
      std::size_t n = 0;
      if (valid_utf8_prefix(std::string_view(bytes).substr(offset), &n))
        text.append(bytes, offset, n);
      else
        text += kReplacementChar;
      offset += n;
    }
  };
  // The text of one non-byte piece and whether it consumed the leading "▁" of the text.
  auto decode_piece = [&](std::string_view piece, int id, bool is_bos_ws) -> std::pair<std::string, bool> {
    if (has_type(id, SpmPieceType::control)) return {std::string(), false};
    if (has_type(id, SpmPieceType::unknown)) {
      if (m.pieces[static_cast<std::size_t>(id)].piece == piece) return {m.trainer.unk_surface, false};
      return {std::string(piece), false};
    }
    bool has_bos_ws = false;
    if (is_bos_ws && (spec.add_dummy_prefix || spec.remove_extra_whitespaces)) {
      has_bos_ws = consume_prefix(piece, kSpaceSymbol);
      if (spec.remove_extra_whitespaces) has_bos_ws = false;
    }
    std::string s;
    s.reserve(piece.size());
    while (!piece.empty()) {
      if (consume_prefix(piece, kSpaceSymbol)) {
        s += ' ';
      } else {
        s += piece[0];
        piece.remove_prefix(1);
      }
    }
    return {std::move(s), has_bos_ws};
  };

  bool is_bos_ws = true;
  bool bos_ws_seen = false;
  std::size_t byte_start = 0;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const int id = pieces[i].second;
    if (has_type(id, SpmPieceType::byte)) continue;
    flush_bytes(byte_start, i);
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    byte_start = i + 1;
    auto [s, seen] = decode_piece(pieces[i].first, id, is_bos_ws);
    text += s;
    bos_ws_seen = seen;
  }
  flush_bytes(byte_start, pieces.size());
  if (!denorm_charsmap.empty()) text = normalize(text, *m.denormalizer, denorm_charsmap, false, nullptr);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Public API

SentencePiece::SentencePiece(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePiece::SentencePiece(SentencePiece&&) noexcept = default;
SentencePiece& SentencePiece::operator=(SentencePiece&&) noexcept = default;
SentencePiece::~SentencePiece() = default;

SentencePiece SentencePiece::from_bytes(std::string_view bytes, const std::string& source, bool add_dummy_prefix) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  if (bytes.size() > kMaxModelBytes)
    impl->fail(fmt::format("SentencePiece model of {} bytes (at most {})", bytes.size(), kMaxModelBytes));
  impl->m = parse_spm_model(bytes, impl->source);
  impl->init(add_dummy_prefix);
  impl->self_test();
  return SentencePiece(std::move(impl));
}

SentencePiece SentencePiece::load(const std::string& model_path, bool add_dummy_prefix) {
  std::ifstream f(model_path, std::ios::binary);
  if (!f) throw ModelError(model_path + ": SentencePiece model not found or not readable");
  std::string bytes;
  char buf[1 << 16];
  while (f.read(buf, sizeof(buf)) || f.gcount() > 0) {
    bytes.append(buf, static_cast<std::size_t>(f.gcount()));
    if (bytes.size() > kMaxModelBytes)
      throw ModelError(fmt::format("{}: SentencePiece model larger than {} bytes", model_path, kMaxModelBytes));
  }
  if (f.bad()) throw ModelError(model_path + ": cannot read the SentencePiece model");
  return from_bytes(bytes, model_path, add_dummy_prefix);
}

std::vector<int> SentencePiece::encode_ids(std::string_view text) const {
  std::string normalized;
  std::vector<int> ids;
  for (const auto& p : impl_->encode(text, normalized)) ids.push_back(p.second);
  return ids;
}

std::vector<std::string> SentencePiece::encode_pieces(std::string_view text) const {
  std::string normalized;
  std::vector<std::string> pieces;
  for (const auto& p : impl_->encode(text, normalized)) pieces.emplace_back(p.first);
  return pieces;
}

std::string SentencePiece::decode_ids(const std::vector<int>& ids) const {
  EncodeResult pieces;
  pieces.reserve(ids.size());
  for (const int id : ids)
    if (id >= 0 && id < piece_size()) pieces.emplace_back(impl_->m.pieces[static_cast<std::size_t>(id)].piece, id);
  return impl_->decode(pieces);
}

std::string SentencePiece::decode_pieces(const std::vector<std::string>& pieces) const {
  EncodeResult with_ids;
  with_ids.reserve(pieces.size());
  for (const auto& p : pieces) with_ids.emplace_back(p, impl_->piece_to_id(p));
  return impl_->decode(with_ids);
}

int SentencePiece::piece_size() const { return static_cast<int>(impl_->m.pieces.size()); }

std::string SentencePiece::id_to_piece(int id) const {
  if (id < 0 || id >= piece_size()) return {};
  return impl_->m.pieces[static_cast<std::size_t>(id)].piece;
}

int SentencePiece::piece_to_id(std::string_view piece) const { return impl_->piece_to_id(piece); }

float SentencePiece::score(int id) const {
  if (id < 0 || id >= piece_size()) return 0.0f;
  return impl_->m.pieces[static_cast<std::size_t>(id)].score;
}

bool SentencePiece::is_unknown(int id) const { return impl_->has_type(id, SpmPieceType::unknown); }
bool SentencePiece::is_control(int id) const { return impl_->has_type(id, SpmPieceType::control); }
bool SentencePiece::is_unused(int id) const { return impl_->has_type(id, SpmPieceType::unused); }
bool SentencePiece::is_byte(int id) const { return impl_->has_type(id, SpmPieceType::byte); }
int SentencePiece::unk_id() const { return impl_->special_id(impl_->m.trainer.unk_piece, SpmPieceType::unknown); }
int SentencePiece::bos_id() const { return impl_->special_id(impl_->m.trainer.bos_piece, SpmPieceType::control); }
int SentencePiece::eos_id() const { return impl_->special_id(impl_->m.trainer.eos_piece, SpmPieceType::control); }
int SentencePiece::pad_id() const { return impl_->special_id(impl_->m.trainer.pad_piece, SpmPieceType::control); }

}  // namespace lli::text
