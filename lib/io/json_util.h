// JSON parsing with one-line errors "file:line:column: message" (internal to lib/io).
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lli/error.h"

namespace lli::json_util {

// 1-based line and column of the byte at `offset` (clamped to the text).
inline std::pair<std::size_t, std::size_t> line_column(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

// Drops nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 2: " prefix.
inline std::string strip_nlohmann_prefix(std::string msg) {
  if (msg.rfind("[json.exception.", 0) == 0) {
    auto p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
  }
  if (msg.rfind("parse error", 0) == 0) {
    auto p = msg.find(": ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
  }
  return msg;
}

// SAX handler building a DOM and remembering where (and why) parsing failed, including the
// "number overflow" error (1e400), which nlohmann reports without a position in its exception.
class PositionedSax : public nlohmann::detail::json_sax_dom_parser<nlohmann::json> {
 public:
  using Base = nlohmann::detail::json_sax_dom_parser<nlohmann::json>;
  explicit PositionedSax(nlohmann::json& j) : Base(j, /*allow_exceptions=*/false) {}
  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& ex) {
    failed = true;
    error_position = position;
    // A number overflow (1e400) is reported after the token; point at its first character.
    if (ex.id == 406 && last_token.size() < position) error_position = position - last_token.size() + 1;
    error_message = strip_nlohmann_prefix(ex.what());
    return false;
  }
  bool failed = false;
  std::size_t error_position = 0;
  std::string error_message;
};

// Parses JSON text; InputError "source:line:column: message" on a syntax error.
inline nlohmann::json parse_or_throw(std::string_view text, const std::string& source) {
  nlohmann::json j;
  PositionedSax sax(j);
  nlohmann::json::sax_parse(text.begin(), text.end(), &sax);
  if (sax.failed) {
    // nlohmann's position counts the characters read, the offending one included.
    std::size_t at = sax.error_position > 0 ? sax.error_position - 1 : 0;
    auto [line, col] = line_column(text, at);
    throw InputError(source + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " +
                     sax.error_message);
  }
  return j;
}

// Validation context: the file name, for one-line errors "source: json.path: message".
struct Ctx {
  const std::string& source;
  [[noreturn]] void fail(const std::string& path, const std::string& msg) const {
    throw InputError(source + ": " + (path.empty() ? "" : path + ": ") + msg);
  }
};

// "a number", "an array", ... for messages.
inline std::string type_name(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Rejects keys of `obj` outside `allowed` (typos), naming the key and the allowed ones.
inline void check_keys(const Ctx& c, const nlohmann::json& obj, const std::string& path,
                       std::initializer_list<const char*> allowed) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool ok = false;
    std::string list;
    for (const char* a : allowed) {
      if (it.key() == a) ok = true;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    if (!ok)
      c.fail(path.empty() ? it.key() : path + "." + it.key(), "unknown key '" + it.key() + "' (allowed: " + list + ")");
  }
}

}  // namespace lli::json_util
