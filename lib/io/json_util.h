// Validation helpers for JSON documents read with parse_json_bounded (internal to lib/io).
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/quote.h"
#include "io/bounded_parse.h"
#include "lli/error.h"

namespace lli::json_util {

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
    if (!ok) {
      const std::string k = one_line(it.key(), 40);  // in the path: escaped, bounded
      c.fail(path.empty() ? k : path + "." + k, "unknown key " + quote_excerpt(it.key()) + " (allowed: " + list + ")");
    }
  }
}

}  // namespace lli::json_util
