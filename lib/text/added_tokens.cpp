// Ref: transformers 4.45 tokenization_utils_base.py, tokenization_utils.py; see added_tokens.h.
#include "text/added_tokens.h"

#include <algorithm>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "core/quote.h"
#include "io/bounded_parse.h"
#include "lli/error.h"
#include "text/unicode.h"

namespace lli::text {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A special-token value: "text", {"content": "text", ...} or null.
std::optional<AddedToken> parse_token_value(const json& v, const fs::path& file, const std::string& where) {
  if (v.is_null()) return std::nullopt;
  AddedToken t;
  if (v.is_string()) {
    t.content = v.get<std::string>();
    return t;
  }
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    t.content = v["content"].get<std::string>();
    t.lstrip = json_bool(v, "lstrip", false, file);
    t.rstrip = json_bool(v, "rstrip", false, file);
    t.single_word = json_bool(v, "single_word", false, file);
    t.normalized = json_bool(v, "normalized", false, file);
    t.special = json_bool(v, "special", false, file);
    return t;
  }
  throw ModelError(
      fmt::format("{}: {} = {} is neither a string nor {{\"content\": ...}}", file.string(), where, json_excerpt(v)));
}

}  // namespace

const char* special_slot_key(SpecialSlot s) {
  static const char* const kKeys[kSpecialSlots] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                                   "pad_token", "cls_token", "mask_token"};
  return kKeys[static_cast<std::size_t>(s)];
}

std::optional<json> read_tokenizer_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ModelError(fmt::format("{}: cannot open file", path.string()));
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw ModelError(fmt::format("{}: read error", path.string()));
  json j = parse_json_bounded(text, path.string(), ExitCode::model, "invalid JSON: ");
  if (!j.is_object()) throw ModelError(fmt::format("{}: expected a JSON object", path.string()));
  return j;
}

bool json_bool(const json& j, const char* key, bool dflt, const fs::path& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) throw ModelError(fmt::format("{}: {} = {} is not a boolean", file.string(), key, json_excerpt(*it)));
  return it->get<bool>();
}

std::int64_t json_int(const json& j, const char* key, std::int64_t dflt, const fs::path& file,
                      const std::string& path_prefix) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number_integer())
    throw ModelError(fmt::format("{}: {}{} = {} is not an integer", file.string(), path_prefix, key, json_excerpt(*it)));
  return it->get<std::int64_t>();
}

// ---------------------------------------------------------------------------------------------
// Loading

void AddedVocab::add(AddedToken t, const fs::path& file) {
  if (t.id < 0)
    throw ModelError(fmt::format("{}: added token \"{}\" has negative id {}", file.string(), t.content, t.id));
  if (t.content.empty()) throw ModelError(fmt::format("{}: added token {} has empty content", file.string(), t.id));
  auto by_id = by_id_.find(t.id);
  if (by_id != by_id_.end()) {
    if (tokens_[by_id->second].content != t.content)
      throw ModelError(fmt::format("{}: id {} is both \"{}\" and \"{}\"", file.string(), t.id,
                                   tokens_[by_id->second].content, t.content));
    return;
  }
  auto by_content = by_content_.find(t.content);
  if (by_content != by_content_.end())
    throw ModelError(fmt::format("{}: added token \"{}\" has two ids, {} and {}", file.string(), t.content,
                                 tokens_[by_content->second].id, t.id));
  by_id_[t.id] = tokens_.size();
  by_content_[t.content] = tokens_.size();
  tokens_.push_back(std::move(t));
}

void AddedVocab::reindex() {
  std::sort(tokens_.begin(), tokens_.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  by_id_.clear();
  by_content_.clear();
  for (auto& v : by_first_byte_) v.clear();
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    by_id_[tokens_[i].id] = i;
    by_content_[tokens_[i].content] = i;
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
  }
}

AddedVocab AddedVocab::load(const fs::path& dir, const json& config, const fs::path& config_path,
                            const SpecialDefaults& defaults, const BaseLookup& base_id, TokenId base_size) {
  AddedVocab v;
  const fs::path map_path = dir / "special_tokens_map.json";
  const fs::path added_path = dir / "added_tokens.json";

  // Special tokens: the class defaults, tokenizer_config.json, then special_tokens_map.json (which
  // wins, as in from_pretrained).
  for (std::size_t s = 0; s < kSpecialSlots; ++s)
    if (defaults[s]) v.slots_[s] = AddedToken{*defaults[s]};
  std::vector<AddedToken> additional;
  auto read_specials = [&](const json& j, const fs::path& file) {
    for (std::size_t s = 0; s < kSpecialSlots; ++s) {
      const char* key = special_slot_key(static_cast<SpecialSlot>(s));
      if (auto it = j.find(key); it != j.end()) v.slots_[s] = parse_token_value(*it, file, key);
    }
    if (auto it = j.find("additional_special_tokens"); it != j.end() && !it->is_null()) {
      if (!it->is_array()) throw ModelError(fmt::format("{}: additional_special_tokens is not a list", file.string()));
      additional.clear();
      for (std::size_t i = 0; i < it->size(); ++i) {
        auto t = parse_token_value((*it)[i], file, fmt::format("additional_special_tokens[{}]", i));
        if (t) additional.push_back(*t);
      }
    }
  };
  read_specials(config, config_path);
  if (auto m = read_tokenizer_json(map_path)) read_specials(*m, map_path);

  // Added tokens: added_tokens_decoder, then added_tokens.json.
  if (auto it = config.find("added_tokens_decoder"); it != config.end() && !it->is_null()) {
    if (!it->is_object())
      throw ModelError(fmt::format("{}: added_tokens_decoder is not an object", config_path.string()));
    for (const auto& [key, value] : it->items()) {
      const std::string where = "added_tokens_decoder." + one_line(key, 60);  // escaped, bounded
      std::int64_t id = -1;
      try {
        std::size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) throw ModelError(fmt::format("{}: {}: key is not a token id", config_path.string(), where));
      auto t = parse_token_value(value, config_path, where);
      if (!t) throw ModelError(fmt::format("{}: {} is null", config_path.string(), where));
      t->id = id;
      v.add(*t, config_path);
    }
  }
  if (auto a = read_tokenizer_json(added_path)) {
    for (const auto& [content, value] : a->items()) {
      if (!value.is_number_integer())
        throw ModelError(fmt::format("{}: {} = {} is not a token id", added_path.string(), json_excerpt(json(content)), json_excerpt(value)));
      if (v.by_content_.count(content)) continue;
      AddedToken t;
      t.content = content;
      t.id = value.get<std::int64_t>();
      t.normalized = true;
      v.add(t, added_path);
    }
  }

  // Every special token is an added token (split out of the text). One already added keeps its
  // entry (and flags); otherwise its id comes from the base vocabulary or is appended after it.
  auto ensure_special = [&](const AddedToken& t) -> TokenId {
    auto it = v.by_content_.find(t.content);
    if (it != v.by_content_.end()) {
      v.tokens_[it->second].special = true;
      return v.tokens_[it->second].id;
    }
    AddedToken n = t;
    n.special = true;
    const auto base = base_id(t.content);
    n.id = base ? *base : v.size_with(base_size);
    v.add(n, config_path);
    return n.id;
  };
  for (auto& s : v.slots_) {
    if (!s) continue;
    s->id = ensure_special(*s);
    v.special_contents_.push_back(s->content);
  }
  for (const auto& t : additional) {
    ensure_special(t);
    v.special_contents_.push_back(t.content);
    v.additional_special_.push_back(t.content);
  }
  v.reindex();
  return v;
}

// ---------------------------------------------------------------------------------------------
// Queries

const AddedToken* AddedVocab::by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocab::by_id(TokenId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

TokenId AddedVocab::slot_id(SpecialSlot s) const {
  const auto& t = slot(s);
  return t ? t->id : -1;
}

bool AddedVocab::is_special(std::string_view content) const {
  return std::find(special_contents_.begin(), special_contents_.end(), content) != special_contents_.end();
}

bool AddedVocab::is_additional_special(std::string_view content) const {
  return std::find(additional_special_.begin(), additional_special_.end(), content) != additional_special_.end();
}

bool AddedVocab::is_special_id(TokenId id) const {
  const AddedToken* t = by_id(id);
  return t && is_special(t->content);
}

TokenId AddedVocab::size_with(TokenId base_size) const {
  TokenId n = base_size;
  for (const auto& t : tokens_) n = std::max(n, t.id + 1);
  return n;
}

std::string AddedVocab::decode(
    const std::vector<TokenId>& ids, bool skip_special_tokens, TokenId base_vocab_size,
    const std::function<std::string(TokenId)>& id_to_piece,
    const std::function<std::string(const std::vector<std::string>&)>& pieces_to_string) const {
  auto legacy_added = [&](const std::string& piece) {
    const AddedToken* t = by_content(piece);
    if (!t) return false;
    return !is_special(t->content) || (is_additional_special(t->content) && t->id >= base_vocab_size);
  };
  std::vector<std::string> sub_texts, current;
  for (TokenId id : ids) {
    if (skip_special_tokens && is_special_id(id)) continue;
    std::string piece = id_to_piece(id);
    if (piece.empty()) continue;
    if (legacy_added(piece)) {
      if (!current.empty()) {
        std::string s = pieces_to_string(current);
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(std::move(piece));
    } else {
      current.push_back(std::move(piece));
    }
  }
  if (!current.empty()) sub_texts.push_back(pieces_to_string(current));
  std::string text;
  for (std::size_t i = 0; i < sub_texts.size(); ++i) {
    if (i) text += " ";
    text += sub_texts[i];
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Splitting

std::vector<AddedVocab::Segment> AddedVocab::split(std::string_view text) const {
  // Leftmost-longest exact match, as transformers' Trie.split.
  std::vector<Segment> segs;
  std::size_t i = 0, start = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    for (std::size_t k : by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const AddedToken& t = tokens_[k];
      if (text.compare(i, t.content.size(), t.content) == 0 && (!best || t.content.size() > best->content.size()))
        best = &t;
    }
    if (!best) {
      ++i;
      continue;
    }
    if (i > start) segs.push_back({std::string(text.substr(start, i - start)), nullptr});
    segs.push_back({best->content, best});
    i += best->content.size();
    start = i;
  }
  if (start < text.size()) segs.push_back({std::string(text.substr(start)), nullptr});

  for (std::size_t k = 0; k < segs.size(); ++k) {
    const AddedToken* t = segs[k].token;
    if (!t) continue;
    Segment* left = k > 0 ? &segs[k - 1] : nullptr;
    Segment* right = k + 1 < segs.size() ? &segs[k + 1] : nullptr;
    if (t->rstrip && right && !right->text.empty()) right->text = std::string(unicode::lstrip(right->text));
    if (t->lstrip && left && !left->text.empty()) left->text = std::string(unicode::rstrip(left->text));
    if (t->single_word && left && !left->text.empty() && left->text.back() != ' ') {
      left->text += segs[k].text;
      segs[k].text.clear();
    } else if (t->single_word && right && !right->text.empty() && right->text.front() != ' ') {
      segs[k].text += right->text;
      right->text.clear();
    }
  }
  // A piece is an added token only if its text still is one (single_word may have merged it).
  std::vector<Segment> out;
  out.reserve(segs.size());
  for (auto& s : segs) {
    if (s.text.empty()) continue;
    s.token = by_content(s.text);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace lli::text
