// Ref: CPython 3.11 Objects/unicodeobject.c (lower, handle_capital_sigma), Modules/unicodedata.c
//      (nfc_nfkc); Unicode Standard Annex #15. See unicode.h.
#include "text/unicode.h"

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <unordered_map>

namespace lli::text::unicode {

namespace {

struct ClassRun {
  char32_t first;
  std::uint8_t value;  // CharClass | sigma class << 3
};
struct LowerPair {
  char32_t from, to;
};
struct LowerMulti {
  char32_t from;
  char32_t to[3];  // 0-terminated when shorter
};
struct Decomposition {
  char32_t cp, first, second;  // second = 0: singleton
  bool composes;               // (first, second) recomposes to cp in NFC
};
struct CombiningRun {
  char32_t first, last;
  std::uint8_t ccc;
};

#include "text/unicode_tables.inc"

enum SigmaClass : std::uint8_t { kSigmaNone = 0, kSigmaCased = 1, kSigmaIgnorable = 2 };

constexpr char32_t kReplacement = 0xFFFD;

// Hangul syllable composition (Unicode 14, section 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

std::uint8_t class_value(char32_t c) {
  auto it = std::upper_bound(std::begin(kClassRuns), std::end(kClassRuns), c,
                             [](char32_t v, const ClassRun& r) { return v < r.first; });
  return it == std::begin(kClassRuns) ? static_cast<std::uint8_t>(CharClass::control) : std::prev(it)->value;
}

SigmaClass sigma_class(char32_t c) { return static_cast<SigmaClass>(class_value(c) >> 3); }

const Decomposition* find_decomposition(char32_t c) {
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), c,
                             [](const Decomposition& d, char32_t v) { return d.cp < v; });
  return it != std::end(kDecompositions) && it->cp == c ? &*it : nullptr;
}

// Full canonical decomposition of c appended to out.
void decompose(char32_t c, std::u32string& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = find_decomposition(c);
  if (!d) {
    out.push_back(c);
    return;
  }
  decompose(d->first, out);
  if (d->second != 0) decompose(d->second, out);
}

// Primary composite of (a, b), or 0.
char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  static const std::unordered_map<std::uint64_t, char32_t> table = [] {
    std::unordered_map<std::uint64_t, char32_t> t;
    for (const auto& d : kDecompositions)
      if (d.composes) t.emplace((static_cast<std::uint64_t>(d.first) << 21) | d.second, d.cp);
    return t;
  }();
  auto it = table.find((static_cast<std::uint64_t>(a) << 21) | b);
  return it == table.end() ? 0 : it->second;
}

// Length and value of the UTF-8 sequence at s[i]; {kReplacement, 1} when invalid.
std::pair<char32_t, std::size_t> decode_one(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t n;
  char32_t c, min;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, c = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, c = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, c = b0 & 0x07, min = 0x10000;
  } else {
    return {kReplacement, 1};
  }
  if (i + n > s.size()) return {kReplacement, 1};
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {kReplacement, 1};
    c = (c << 6) | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) return {kReplacement, 1};
  return {c, n};
}

}  // namespace

CharClass char_class(char32_t c) {
  if (c < 0x80) {  // ASCII fast path
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::letter;
    if (c >= '0' && c <= '9') return CharClass::number;
    if (c == ' ') return CharClass::space_separator;
    if (c < 0x20 || c == 0x7F) return CharClass::control;
    return CharClass::other;
  }
  return static_cast<CharClass>(class_value(c) & 7);
}

int combining_class(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningRuns), std::end(kCombiningRuns), c,
                             [](char32_t v, const CombiningRun& r) { return v < r.first; });
  if (it == std::begin(kCombiningRuns)) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

bool is_python_space(char32_t c) { return std::binary_search(std::begin(kPythonSpaces), std::end(kPythonSpaces), c); }

const char* version() { return kUnicodeVersion; }

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto [c, n] = decode_one(s, i);
    out.push_back(c);
    i += n;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

std::u32string nfc(std::u32string_view s) {
  // 1. Full canonical decomposition.
  std::u32string d;
  d.reserve(s.size());
  for (char32_t c : s) decompose(c, d);
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // 3. Canonical composition: each character joins the last starter unless blocked.
  std::u32string out;
  out.reserve(d.size());
  std::ptrdiff_t starter = -1;
  for (char32_t c : d) {
    const int ccc = combining_class(c);
    if (starter >= 0) {
      const bool adjacent = static_cast<std::ptrdiff_t>(out.size()) == starter + 1;
      const int last = combining_class(out.back());
      if (adjacent || (last != 0 && last < ccc)) {
        if (char32_t comp = compose_pair(out[static_cast<std::size_t>(starter)], c)) {
          out[static_cast<std::size_t>(starter)] = comp;
          continue;
        }
      }
    }
    if (ccc == 0) starter = static_cast<std::ptrdiff_t>(out.size());
    out.push_back(c);
  }
  return out;
}

std::u32string to_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    if (c == 0x3A3) {  // CPython handle_capital_sigma
      std::size_t j = i;
      SigmaClass before = kSigmaNone;
      while (j > 0) {
        before = sigma_class(s[--j]);
        if (before != kSigmaIgnorable) break;
      }
      bool final_sigma = before == kSigmaCased;
      for (std::size_t k = i + 1; final_sigma && k < s.size(); ++k) {
        const SigmaClass after = sigma_class(s[k]);
        if (after == kSigmaIgnorable) continue;
        final_sigma = after != kSigmaCased;
        break;
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
      continue;
    }
    auto m = std::lower_bound(std::begin(kLowerMulti), std::end(kLowerMulti), c,
                              [](const LowerMulti& p, char32_t v) { return p.from < v; });
    if (m != std::end(kLowerMulti) && m->from == c) {
      for (char32_t t : m->to)
        if (t != 0) out.push_back(t);
      continue;
    }
    auto p = std::lower_bound(std::begin(kLowerSingle), std::end(kLowerSingle), c,
                              [](const LowerPair& q, char32_t v) { return q.from < v; });
    out.push_back(p != std::end(kLowerSingle) && p->from == c ? p->to : c);
  }
  return out;
}

std::string_view lstrip(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto [c, n] = decode_one(s, i);
    if (!is_python_space(c)) break;
    i += n;
  }
  return s.substr(i);
}

std::string_view rstrip(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;  // start of the last character
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    auto [c, n] = decode_one(s, start);
    if (start + n != end || !is_python_space(c)) break;
    end = start;
  }
  return s.substr(0, end);
}

}  // namespace lli::text::unicode
