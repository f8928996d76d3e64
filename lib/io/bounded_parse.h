// Parsing JSON and YAML from untrusted files with bounded nesting: the depth (arrays and objects
// both count) is checked WHILE parsing, before any tree deeper than the limit exists, so that no
// later recursion (copy, dump, destruction, a recursive validator) can exhaust the stack.
// One helper for every JSON the project reads: prompts, sessions, safetensors headers, index.json,
// config.json, tokenizer files, embedding caches; one for YAML (models.yaml, LaMa's config.yaml).
//
// Errors are one line, of the class the caller names (InputError exit 3 for prompts and sessions,
// ModelError exit 4 for checkpoints and configs), with the file and the 1-based line:column:
//   "s.json:1:65: JSON nesting deeper than 64 levels (arrays and objects both count)"
//   "p.json:3:14: syntax error while parsing value - invalid literal; last read: 'tru'"
//   "s.json:4:12: JSON has a duplicate key 'tool' in steps[0]"
// Anything echoed from the input is quoted with quote_excerpt (bounded, control characters
// escaped).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "lli/error.h"

namespace lli {

// Deepest nesting any lli file needs is ~10 (a session step's params holding a prompt); the
// limit leaves room for hand-written configs and still keeps recursion trivial.
constexpr int kMaxNestingDepth = 64;

struct JsonParseOptions {
  // ExitCode::bad_input -> InputError (prompts, sessions, batch lines); ExitCode::model ->
  // ModelError (checkpoint files, configs, caches derived from a checkpoint).
  ExitCode error = ExitCode::bad_input;
  int max_depth = kMaxNestingDepth;
  // A key given twice in one object is refused (nlohmann would keep the last one silently).
  bool reject_duplicate_keys = true;
  // Put before the parser's message, e.g. "header is not valid JSON: ".
  std::string syntax_context;
  // true: "file:line:column: message" (compiler style); false: "file: message (line L, column C)"
  // for files whose messages all start "file: " (safetensors headers and indexes).
  bool position_prefix = true;
  // Called for a duplicate key with the path of the enclosing object ("weight_map", "steps[0]";
  // empty at the top level), its depth (1 = top-level object) and the key. It may throw a more
  // specific message; if it returns, the generic one is thrown.
  std::function<void(const std::string& path, int depth, const std::string& key)> on_duplicate;
};

// Parses `text` (named `source` in messages). Throws per opts.error; never std::exception from
// nlohmann.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& source,
                                  const JsonParseOptions& opts = {});

// Shorthand for the common call: error class and syntax context, default limits.
inline nlohmann::json parse_json_bounded(std::string_view text, const std::string& source, ExitCode error,
                                         std::string syntax_context = "") {
  JsonParseOptions o;
  o.error = error;
  o.syntax_context = std::move(syntax_context);
  return parse_json_bounded(text, source, o);
}

// A JSON value for a message without serialising all of it: compact JSON cut after about
// `max_chars` characters ("..." appended), escaped as JSON escapes strings (a key given as
// json(key) prints as "key"). Recursion stops at kMaxNestingDepth.
std::string json_excerpt(const nlohmann::json& v, std::size_t max_chars = 60);

// Throws the Error subclass of `code` (InputError, ModelError, ...) with `msg`.
[[noreturn]] void throw_error(ExitCode code, const std::string& msg);

// Loads YAML text with its nesting (sequences and maps) bounded while parsing: an event pass
// that stops at the first level deeper than `max_depth` runs before yaml-cpp builds the tree.
// Errors: "<source>:<line>:<column>: ..." of class `error`.
YAML::Node load_yaml_bounded(const std::string& text, const std::string& source, ExitCode error,
                             int max_depth = kMaxNestingDepth);

}  // namespace lli
