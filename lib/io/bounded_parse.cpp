// Bounded JSON / YAML parsing (see io/bounded_parse.h).
#include "io/bounded_parse.h"

#include <iterator>
#include <map>
#include <sstream>
#include <unordered_set>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include "core/quote.h"

namespace lli {

void throw_error(ExitCode code, const std::string& msg) {
  switch (code) {
    case ExitCode::usage: throw UsageError(msg);
    case ExitCode::bad_input: throw InputError(msg);
    case ExitCode::model: throw ModelError(msg);
    default: throw RuntimeError(msg);
  }
}

namespace {

using nlohmann::json;

// 1-based line and column of the byte at `offset` (clamped to the text).
std::pair<std::size_t, std::size_t> line_column(std::string_view text, std::size_t offset) {
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

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1,
// column 2: " prefix, and with the echoed token ("last read: '...'") bounded and escaped.
std::string parser_message(const std::string& what) {
  std::string msg = what;
  if (msg.rfind("[json.exception.", 0) == 0) {
    auto p = msg.find("] ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
  }
  if (msg.rfind("parse error", 0) == 0) {
    auto p = msg.find(": ");
    if (p != std::string::npos) msg = msg.substr(p + 2);
  }
  const std::string tag = "last read: '";
  auto p = msg.find(tag);
  if (p != std::string::npos) {
    std::string token = msg.substr(p + tag.size());
    if (!token.empty() && token.back() == '\'') token.pop_back();
    msg = msg.substr(0, p) + "last read: " + quote_excerpt(token);
  }
  return one_line(msg, 400);
}

// A char iterator that publishes how far the lexer has read, so that SAX events (which carry
// no position) can be placed in the text.
struct CountingIter {
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;
  const char* p = nullptr;
  const char** read = nullptr;
  reference operator*() const { return *p; }
  CountingIter& operator++() {
    ++p;
    *read = p;
    return *this;
  }
  CountingIter operator++(int) {
    CountingIter old = *this;
    ++*this;
    return old;
  }
  bool operator==(const CountingIter& o) const { return p == o.p; }
  bool operator!=(const CountingIter& o) const { return p != o.p; }
};

// SAX handler: builds the DOM through nlohmann's own DOM builder, refusing nesting deeper than
// the limit (arrays and objects) and duplicate keys before they reach the tree.
class BoundedSax {
 public:
  using Dom = nlohmann::detail::json_sax_dom_parser<json>;
  BoundedSax(json& j, const JsonParseOptions& o, const char** read) : dom_(j, /*allow_exceptions=*/false), o_(o), read_(read) {}

  bool null() { return value() && dom_.null(); }
  bool boolean(bool v) { return value() && dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return value() && dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return value() && dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return value() && dom_.number_float(v, s); }
  bool string(json::string_t& v) { return value() && dom_.string(v); }
  bool binary(json::binary_t& v) { return value() && dom_.binary(v); }
  bool start_object(std::size_t n) { return open(false) && dom_.start_object(n); }
  bool end_object() {
    stack_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return open(true) && dom_.start_array(n); }
  bool end_array() {
    stack_.pop_back();
    return dom_.end_array();
  }
  bool key(json::string_t& k) {
    Frame& f = stack_.back();
    f.key = k;
    if (o_.reject_duplicate_keys && !f.keys.insert(k).second) {
      std::string where = path(stack_.size() - 1);
      if (o_.on_duplicate) o_.on_duplicate(where, static_cast<int>(stack_.size()), k);
      return fail_at(key_start(), "JSON has a duplicate key " + quote_excerpt(k) +
                       (where.empty() ? " (top level)" : " in " + where));
    }
    return dom_.key(k);
  }
  bool parse_error(std::size_t position, const std::string& last_token, const nlohmann::detail::exception& ex) {
    // nlohmann's position counts the characters read, the offending one included; a number
    // overflow (1e400) is reported after the token: point at its first character.
    std::size_t at = position > 0 ? position - 1 : 0;
    if (ex.id == 406 && last_token.size() < position) at = position - last_token.size();
    return fail_at(at, o_.syntax_context + parser_message(ex.what()));
  }

  bool failed = false;
  std::size_t error_offset = 0;
  std::string error_message;

 private:
  struct Frame {
    bool array = false;
    std::size_t count = 0;  // elements seen (arrays)
    std::string key;        // the current key (objects)
    std::unordered_set<std::string> keys;
  };

  // "steps[0].params" for the first `n` frames.
  std::string path(std::size_t n) const {
    std::string p;
    for (std::size_t i = 0; i < n && i < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      if (f.array) {
        p += "[" + std::to_string(f.count ? f.count - 1 : 0) + "]";
      } else {
        p += (p.empty() ? "" : ".") + one_line(f.key, 40);  // escaped, bounded
      }
      if (p.size() > 200) return p + "...";
    }
    return p;
  }

  bool value() {
    if (!stack_.empty() && stack_.back().array) ++stack_.back().count;
    return true;
  }
  bool open(bool array) {
    value();
    if (static_cast<int>(stack_.size()) >= o_.max_depth)
      return fail_here("JSON nesting deeper than " + std::to_string(o_.max_depth) +
                       " levels (arrays and objects both count)");
    stack_.push_back(Frame{array, 0, {}, {}});
    return true;
  }
  // Offset of the opening quote of the key just read (the lexer stopped after its closing quote).
  std::size_t key_start() const {
    std::size_t i = static_cast<std::size_t>(*read_ - base);
    i = i >= 2 ? i - 2 : 0;  // the last character inside the quotes
    while (i > 0) {
      if (base[i] == '"') {
        std::size_t bs = 0;
        while (bs < i && base[i - 1 - bs] == '\\') ++bs;
        if (bs % 2 == 0) return i;
      }
      --i;
    }
    return 0;
  }
  bool fail_here(const std::string& msg) {
    std::size_t read = static_cast<std::size_t>(*read_ - base);
    return fail_at(read > 0 ? read - 1 : 0, msg);
  }
  bool fail_at(std::size_t offset, const std::string& msg) {
    failed = true;
    error_offset = offset;
    error_message = msg;
    return false;
  }

  Dom dom_;
  const JsonParseOptions& o_;
  const char** read_;
  std::vector<Frame> stack_;

 public:
  const char* base = nullptr;
};

}  // namespace

namespace {
// Appends compact JSON of `v` to `out` until it holds more than `max` characters.
void excerpt_into(const json& v, std::string& out, std::size_t max, int depth) {
  if (out.size() > max) return;
  if (depth > kMaxNestingDepth) {
    out += "...";
    return;
  }
  if (v.is_array()) {
    out += "[";
    bool first = true;
    for (const auto& e : v) {
      if (out.size() > max) return;
      if (!first) out += ", ";
      first = false;
      excerpt_into(e, out, max, depth + 1);
    }
    out += "]";
  } else if (v.is_object()) {
    out += "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (out.size() > max) return;
      if (!first) out += ", ";
      first = false;
      out += json(it.key().substr(0, max + 1)).dump(-1, ' ', false, json::error_handler_t::replace) + ": ";
      excerpt_into(it.value(), out, max, depth + 1);
    }
    out += "}";
  } else if (v.is_string()) {  // a long string is cut before it is escaped
    out += json(v.get_ref<const std::string&>().substr(0, max + 1)).dump(-1, ' ', false, json::error_handler_t::replace);
  } else {
    out += v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
}
}  // namespace

std::string json_excerpt(const json& v, std::size_t max_chars) {
  std::string out;
  excerpt_into(v, out, max_chars, 0);
  return one_line(out, max_chars);
}

json parse_json_bounded(std::string_view text, const std::string& source, const JsonParseOptions& opts) {
  json j;
  const char* read = text.data();
  BoundedSax sax(j, opts, &read);
  sax.base = text.data();
  CountingIter first{text.data(), &read}, last{text.data() + text.size(), &read};
  try {
    json::sax_parse(first, last, &sax);
  } catch (const nlohmann::json::exception& e) {  // e.g. 408 "excessive array size"
    throw_error(opts.error, source + ": " + opts.syntax_context + parser_message(e.what()));
  }
  if (sax.failed) {
    auto [line, col] = line_column(text, sax.error_offset);
    if (opts.position_prefix)
      throw_error(opts.error, source + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " + sax.error_message);
    throw_error(opts.error, source + ": " + sax.error_message + " (line " + std::to_string(line) + ", column " +
                                std::to_string(col) + ")");
  }
  return j;
}

// ---- YAML ----------------------------------------------------------------------------------------
namespace {

struct YamlDepthError {
  YAML::Mark mark;
};

// Tracks the nesting of sequences and maps; an alias counts with the depth of the node it
// names, so that a chain of anchors cannot build a deep tree out of shallow text.
class YamlDepthCheck : public YAML::EventHandler {
 public:
  explicit YamlDepthCheck(int max_depth) : max_(max_depth) {}
  void OnDocumentStart(const YAML::Mark&) override { stack_.clear(); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t a) override { leaf(a, 0); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t a) override {
    auto it = height_.find(a);
    const int h = it == height_.end() ? 0 : it->second;
    if (static_cast<int>(stack_.size()) + h > max_) throw YamlDepthError{m};
    leaf(0, h);
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t a, const std::string&) override { leaf(a, 0); }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a, YAML::EmitterStyle::value) override {
    open(m, a);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a, YAML::EmitterStyle::value) override {
    open(m, a);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Frame {
    YAML::anchor_t anchor;
    int child_height;
  };
  void leaf(YAML::anchor_t a, int h) {
    if (a) height_[a] = h;
    if (!stack_.empty()) stack_.back().child_height = std::max(stack_.back().child_height, h);
  }
  void open(const YAML::Mark& m, YAML::anchor_t a) {
    if (static_cast<int>(stack_.size()) >= max_) throw YamlDepthError{m};
    stack_.push_back(Frame{a, 0});
  }
  void close() {
    const Frame f = stack_.back();
    stack_.pop_back();
    leaf(f.anchor, f.child_height + 1);
  }
  int max_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, int> height_;
};

std::string yaml_where(const std::string& source, const YAML::Mark& m) {
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

}  // namespace

YAML::Node load_yaml_bounded(const std::string& text, const std::string& source, ExitCode error, int max_depth) {
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    YamlDepthCheck check(max_depth);
    // The first document only: YAML::Load builds no other, and yaml-cpp 0.7 reports an endless
    // stream of empty documents for some malformed text (",a": found by fuzzing, a hang).
    (void)parser.HandleNextDocument(check);
    return YAML::Load(text);
  } catch (const YamlDepthError& e) {
    throw_error(error, yaml_where(source, e.mark) + ": YAML nesting deeper than " + std::to_string(max_depth) +
                           " levels (sequences and mappings both count)");
  } catch (const YAML::Exception& e) {
    throw_error(error, yaml_where(source, e.mark) + ": " + one_line(e.msg, 200));
  }
}

}  // namespace lli
