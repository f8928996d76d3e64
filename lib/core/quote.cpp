#include "core/quote.h"

#include <cstdio>

namespace lli {

namespace {

// Bytes of `s` to keep so that at most `max` bytes remain and no UTF-8 sequence is split.
std::size_t utf8_cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t n = max;
  // Back up over continuation bytes (10xxxxxx) to the start of the character that was cut.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

void append_escaped(std::string& out, std::string_view s) {
  for (unsigned char ch : s) {
    switch (ch) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20 || ch == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02X", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
}

}  // namespace

std::string escape_control(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_escaped(out, s);
  return out;
}

std::string quote_excerpt(std::string_view value, std::size_t max_chars) {
  const std::size_t keep = utf8_cut(value, max_chars);
  std::string out = "'";
  append_escaped(out, value.substr(0, keep));
  out += "'";
  if (keep < value.size()) {
    out.insert(out.size() - 1, "...");
    out += " (" + std::to_string(value.size()) + " bytes)";
  }
  return out;
}

std::string one_line(std::string_view msg, std::size_t max_chars) {
  const std::size_t keep = max_chars == std::string::npos ? msg.size() : utf8_cut(msg, max_chars);
  std::string out;
  append_escaped(out, msg.substr(0, keep));
  if (keep < msg.size()) out += "...";
  return out;
}

}  // namespace lli
