// Ref: transformers 4.45 models/llama/tokenization_llama.py, tokenization_utils.py (slow tokenizer),
//      models/llava/processing_llava.py, configuration_llava.py.
#include "text/llama_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lli/error.h"

namespace lli::text {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSpiece = "\xE2\x96\x81";  // "▁" (U+2581)

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string read_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ModelError(fmt::format("{}: cannot open file", path.string()));
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw ModelError(fmt::format("{}: read error", path.string()));
  return data;
}

// Parses an optional JSON object file; nullopt when the file does not exist.
std::optional<json> read_json_object(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const std::string text = read_bytes(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(fmt::format("{}: invalid JSON: {}", path.string(), e.what()));
  }
  if (!j.is_object()) throw ModelError(fmt::format("{}: expected a JSON object", path.string()));
  return j;
}

bool get_bool(const json& j, const char* key, bool dflt, const fs::path& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) throw ModelError(fmt::format("{}: {} = {} is not a boolean", file.string(), key, it->dump()));
  return it->get<bool>();
}

std::int64_t get_int(const json& j, const char* key, std::int64_t dflt, const fs::path& file,
                     const std::string& path_prefix = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number_integer())
    throw ModelError(fmt::format("{}: {}{} = {} is not an integer", file.string(), path_prefix, key, it->dump()));
  return it->get<std::int64_t>();
}

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
    t.lstrip = get_bool(v, "lstrip", false, file);
    t.rstrip = get_bool(v, "rstrip", false, file);
    t.single_word = get_bool(v, "single_word", false, file);
    t.normalized = get_bool(v, "normalized", false, file);
    t.special = get_bool(v, "special", false, file);
    return t;
  }
  throw ModelError(
      fmt::format("{}: {} = {} is neither a string nor {{\"content\": ...}}", file.string(), where, v.dump()));
}

// Python str.lstrip()/rstrip() for the whitespace that matters in prompts (ASCII whitespace).
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
std::string lstrip(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  return s.substr(i);
}
std::string rstrip(const std::string& s) {
  std::size_t n = s.size();
  while (n > 0 && is_space(s[n - 1])) --n;
  return s.substr(0, n);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

// tokenization_utils_base.clean_up_tokenization
std::string clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) s = replace_all(std::move(s), from, to);
  return s;
}

// Byte value of a "<0xNN>" piece, or -1.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || !starts_with(piece, "<0x") || piece[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ImageTokenConfig

ImageTokenConfig ImageTokenConfig::load(const fs::path& dir) {
  const fs::path cfg_path = dir / "config.json";
  auto cfg = read_json_object(cfg_path);
  if (!cfg) throw ModelError(fmt::format("{}: missing (needed for image_token_index)", cfg_path.string()));
  ImageTokenConfig out;
  // LlavaConfig defaults: image_token_index 32000, vision_feature_select_strategy "default".
  out.image_token_id = get_int(*cfg, "image_token_index", 32000, cfg_path);
  std::string strategy = "default";
  if (auto it = cfg->find("vision_feature_select_strategy"); it != cfg->end() && !it->is_null()) {
    if (!it->is_string())
      throw ModelError(
          fmt::format("{}: vision_feature_select_strategy = {} is not a string", cfg_path.string(), it->dump()));
    strategy = it->get<std::string>();
  }
  if (strategy != "default" && strategy != "full")
    throw ModelError(fmt::format("{}: vision_feature_select_strategy = \"{}\" (expected \"default\" or \"full\")",
                                 cfg_path.string(), strategy));
  if (auto it = cfg->find("image_seq_length"); it != cfg->end() && !it->is_null()) {
    out.image_seq_length = get_int(*cfg, "image_seq_length", 0, cfg_path);
  } else {
    // LlavaConfig without vision_config builds CLIPVisionConfig(image_size=336, patch_size=14);
    // a given vision_config falls back to CLIPVisionConfig's own defaults (224, 32).
    std::int64_t image_size = 336, patch_size = 14;
    if (auto vc = cfg->find("vision_config"); vc != cfg->end() && vc->is_object()) {
      image_size = get_int(*vc, "image_size", 224, cfg_path, "vision_config.");
      patch_size = get_int(*vc, "patch_size", 32, cfg_path, "vision_config.");
    }
    if (patch_size <= 0 || image_size < patch_size)
      throw ModelError(fmt::format("{}: vision_config image_size = {} / patch_size = {} give no patches",
                                   cfg_path.string(), image_size, patch_size));
    const std::int64_t side = image_size / patch_size;
    out.image_seq_length = side * side + (strategy == "full" ? 1 : 0);
  }
  if (out.image_seq_length <= 0)
    throw ModelError(
        fmt::format("{}: image_seq_length = {} must be positive", cfg_path.string(), out.image_seq_length));
  if (out.image_token_id < 0)
    throw ModelError(fmt::format("{}: image_token_index = {} is negative", cfg_path.string(), out.image_token_id));
  const fs::path proc_path = dir / "processor_config.json";
  if (auto proc = read_json_object(proc_path)) {
    if (auto it = proc->find("image_token"); it != proc->end() && it->is_string())
      out.image_token = it->get<std::string>();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// LlamaTokenizer: loading

LlamaTokenizer LlamaTokenizer::load(const fs::path& dir, const LlamaTokenizerOptions& opts) {
  LlamaTokenizer tok;
  tok.source_ = dir.string();
  const fs::path model_path = dir / "tokenizer.model";
  const fs::path cfg_path = dir / "tokenizer_config.json";
  const fs::path map_path = dir / "special_tokens_map.json";
  const fs::path added_path = dir / "added_tokens.json";

  std::error_code ec;
  if (!fs::is_regular_file(model_path, ec))
    throw ModelError(fmt::format("{}: missing (the SentencePiece model of the LLaMA tokenizer)", model_path.string()));
  {
    std::ifstream f(model_path, std::ios::binary);
    char head[24] = {};
    f.read(head, sizeof(head));
    if (starts_with(std::string_view(head, static_cast<std::size_t>(f.gcount())), "version https://git-lfs"))
      throw ModelError(
          fmt::format("{}: is a Git LFS pointer, not the model (run `git lfs pull`)", model_path.string()));
  }

  const std::optional<json> cfg = read_json_object(cfg_path);
  const json empty = json::object();
  const json& c = cfg ? *cfg : empty;
  tok.add_bos_ = get_bool(c, "add_bos_token", true, cfg_path);
  tok.add_eos_ = get_bool(c, "add_eos_token", false, cfg_path);
  tok.legacy_ = opts.legacy ? *opts.legacy : get_bool(c, "legacy", true, cfg_path);
  tok.add_prefix_space_ = get_bool(c, "add_prefix_space", true, cfg_path);
  tok.clean_up_spaces_ = get_bool(c, "clean_up_tokenization_spaces", false, cfg_path);

  // legacy = false: transformers merges NormalizerSpec{add_dummy_prefix: false} into the model.
  tok.sp_.emplace(SentencePiece::load(model_path.string(), /*add_dummy_prefix=*/tok.legacy_));

  // Special tokens: LlamaTokenizer defaults, tokenizer_config.json, then special_tokens_map.json
  // (which wins, as in from_pretrained).
  std::map<std::string, std::optional<AddedToken>> specials = {{"bos_token", AddedToken{"<s>"}},
                                                               {"eos_token", AddedToken{"</s>"}},
                                                               {"unk_token", AddedToken{"<unk>"}},
                                                               {"pad_token", std::nullopt}};
  std::vector<AddedToken> additional;
  auto read_specials = [&](const json& j, const fs::path& file) {
    for (auto& [key, value] : specials) {
      if (auto it = j.find(key); it != j.end()) value = parse_token_value(*it, file, key);
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
  read_specials(c, cfg_path);
  if (auto m = read_json_object(map_path)) read_specials(*m, map_path);

  // Added tokens: added_tokens_decoder, then added_tokens.json.
  auto add = [&](AddedToken t, const fs::path& file) {
    if (t.id < 0)
      throw ModelError(fmt::format("{}: added token \"{}\" has negative id {}", file.string(), t.content, t.id));
    if (t.content.empty()) throw ModelError(fmt::format("{}: added token {} has empty content", file.string(), t.id));
    auto by_id = tok.added_by_id_.find(t.id);
    if (by_id != tok.added_by_id_.end()) {
      if (tok.added_[by_id->second].content != t.content)
        throw ModelError(fmt::format("{}: id {} is both \"{}\" and \"{}\"", file.string(), t.id,
                                     tok.added_[by_id->second].content, t.content));
      return;
    }
    auto by_content = tok.added_by_content_.find(t.content);
    if (by_content != tok.added_by_content_.end())
      throw ModelError(fmt::format("{}: added token \"{}\" has two ids, {} and {}", file.string(), t.content,
                                   tok.added_[by_content->second].id, t.id));
    tok.added_by_id_[t.id] = tok.added_.size();
    tok.added_by_content_[t.content] = tok.added_.size();
    tok.added_.push_back(std::move(t));
  };
  if (auto it = c.find("added_tokens_decoder"); it != c.end() && !it->is_null()) {
    if (!it->is_object()) throw ModelError(fmt::format("{}: added_tokens_decoder is not an object", cfg_path.string()));
    for (const auto& [key, value] : it->items()) {
      const std::string where = "added_tokens_decoder." + key;
      std::int64_t id = -1;
      try {
        std::size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) throw ModelError(fmt::format("{}: {}: key is not a token id", cfg_path.string(), where));
      auto t = parse_token_value(value, cfg_path, where);
      if (!t) throw ModelError(fmt::format("{}: {} is null", cfg_path.string(), where));
      t->id = id;
      add(*t, cfg_path);
    }
  }
  if (auto a = read_json_object(added_path)) {
    for (const auto& [content, value] : a->items()) {
      if (!value.is_number_integer())
        throw ModelError(fmt::format("{}: \"{}\" = {} is not a token id", added_path.string(), content, value.dump()));
      if (tok.added_by_content_.count(content)) continue;
      AddedToken t;
      t.content = content;
      t.id = value.get<std::int64_t>();
      t.normalized = true;
      add(t, added_path);
    }
  }

  // Every special token is an added token (split out of the text); ids of tokens not yet known
  // come from the SentencePiece vocabulary or, failing that, are appended after it.
  auto ensure_special = [&](const AddedToken& t) -> TokenId {
    auto it = tok.added_by_content_.find(t.content);
    if (it != tok.added_by_content_.end()) {
      tok.added_[it->second].special = true;
      return tok.added_[it->second].id;
    }
    AddedToken n = t;
    n.special = true;
    const int sp_id = tok.sp_->piece_to_id(t.content);
    if (sp_id != tok.sp_->unk_id() || t.content == tok.sp_->id_to_piece(tok.sp_->unk_id())) {
      n.id = sp_id;
    } else {
      n.id = tok.vocab_size();
    }
    add(n, cfg_path);
    return n.id;
  };
  for (const auto& [key, value] : specials) {
    if (!value) continue;
    const TokenId id = ensure_special(*value);
    tok.special_contents_.push_back(value->content);
    if (key == "bos_token") tok.bos_id_ = id;
    if (key == "eos_token") tok.eos_id_ = id;
    if (key == "unk_token") {
      tok.unk_id_ = id;
      tok.unk_token_ = value->content;
    }
    if (key == "pad_token") tok.pad_id_ = id;
  }
  if (!specials["bos_token"]) tok.bos_id_ = -1;
  if (!specials["eos_token"]) tok.eos_id_ = -1;
  if (!specials["unk_token"]) {
    tok.unk_id_ = tok.sp_->unk_id();
    tok.unk_token_ = tok.sp_->id_to_piece(tok.sp_->unk_id());
  }
  for (const auto& t : additional) {
    ensure_special(t);
    tok.special_contents_.push_back(t.content);
    tok.additional_special_.push_back(t.content);
  }
  if (tok.add_bos_ && tok.bos_id_ < 0)
    throw ModelError(fmt::format("{}: add_bos_token is true but there is no bos_token", cfg_path.string()));
  if (tok.add_eos_ && tok.eos_id_ < 0)
    throw ModelError(fmt::format("{}: add_eos_token is true but there is no eos_token", cfg_path.string()));
  std::sort(tok.added_.begin(), tok.added_.end(), [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  tok.added_by_id_.clear();
  tok.added_by_content_.clear();
  for (std::size_t i = 0; i < tok.added_.size(); ++i) {
    tok.added_by_id_[tok.added_[i].id] = i;
    tok.added_by_content_[tok.added_[i].content] = i;
  }
  tok.unk_token_length_ = tok.sp_->encode_pieces(tok.unk_token_).size();
  return tok;
}

// ---------------------------------------------------------------------------------------------
// LlamaTokenizer: queries

std::int64_t LlamaTokenizer::sp_vocab_size() const { return sp_->piece_size(); }

std::int64_t LlamaTokenizer::vocab_size() const {
  std::int64_t n = sp_->piece_size();
  for (const auto& t : added_) n = std::max(n, t.id + 1);
  return n;
}

const AddedToken* LlamaTokenizer::added_by_content(const std::string& s) const {
  auto it = added_by_content_.find(s);
  return it == added_by_content_.end() ? nullptr : &added_[it->second];
}

const AddedToken* LlamaTokenizer::added_by_id(TokenId id) const {
  auto it = added_by_id_.find(id);
  return it == added_by_id_.end() ? nullptr : &added_[it->second];
}

std::string LlamaTokenizer::id_to_piece(TokenId id) const {
  if (const AddedToken* t = added_by_id(id)) return t->content;
  if (id >= 0 && id < sp_->piece_size()) return sp_->id_to_piece(static_cast<int>(id));
  return {};
}

TokenId LlamaTokenizer::piece_to_id(const std::string& piece) const {
  if (const AddedToken* t = added_by_content(piece)) return t->id;
  return sp_->piece_to_id(piece);
}

bool LlamaTokenizer::is_special(TokenId id) const {
  const AddedToken* t = added_by_id(id);
  if (!t) return false;
  return std::find(special_contents_.begin(), special_contents_.end(), t->content) != special_contents_.end();
}

bool LlamaTokenizer::is_byte_piece(TokenId id) const {
  if (added_by_id(id) || id < 0 || id >= sp_->piece_size()) return false;
  return sp_->is_byte(static_cast<int>(id));
}

// ---------------------------------------------------------------------------------------------
// LlamaTokenizer: encoding

std::vector<std::string> LlamaTokenizer::sp_tokenize(const std::string& text) const {
  // LlamaTokenizer._tokenize
  if (legacy_ || !(starts_with(text, kSpiece) || starts_with(text, " "))) return sp_->encode_pieces(text);
  std::vector<std::string> pieces = sp_->encode_pieces(unk_token_ + text);
  if (pieces.size() >= unk_token_length_) pieces.erase(pieces.begin(), pieces.begin() + unk_token_length_);
  return pieces;
}

std::vector<std::string> LlamaTokenizer::tokenize(std::string_view text_in) const {
  std::string text(text_in);
  if (!legacy_ && !text.empty()) {
    text = replace_all(std::move(text), kSpiece, " ");
    if (add_prefix_space_) text = kSpiece + text;
  }

  // PreTrainedTokenizer.tokenize: split on added tokens (leftmost-longest match, as the Trie).
  struct Segment {
    std::string text;
    const AddedToken* token = nullptr;
  };
  std::vector<Segment> segs;
  {
    std::size_t i = 0, start = 0;
    while (i < text.size()) {
      const AddedToken* best = nullptr;
      for (const auto& t : added_) {
        if (text.compare(i, t.content.size(), t.content) == 0 && (!best || t.content.size() > best->content.size()))
          best = &t;
      }
      if (!best) {
        ++i;
        continue;
      }
      if (i > start) segs.push_back({text.substr(start, i - start), nullptr});
      segs.push_back({best->content, best});
      i += best->content.size();
      start = i;
    }
    if (start < text.size()) segs.push_back({text.substr(start), nullptr});
  }
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const AddedToken* t = segs[i].token;
    if (!t) continue;
    Segment* left = i > 0 ? &segs[i - 1] : nullptr;
    Segment* right = i + 1 < segs.size() ? &segs[i + 1] : nullptr;
    if (t->rstrip && right && !right->text.empty()) right->text = lstrip(right->text);
    if (t->lstrip && left && !left->text.empty()) left->text = rstrip(left->text);
    if (t->single_word && left && !left->text.empty() && left->text.back() != ' ') {
      left->text += segs[i].text;
      segs[i].text.clear();
    } else if (t->single_word && right && !right->text.empty() && right->text.front() != ' ') {
      right->text = segs[i].text + right->text;
      segs[i].text.clear();
    }
  }
  std::vector<std::string> tokens;
  for (const auto& s : segs) {
    if (s.text.empty()) continue;
    if (added_by_content(s.text)) {
      tokens.push_back(s.text);
    } else {
      auto pieces = sp_tokenize(s.text);
      tokens.insert(tokens.end(), pieces.begin(), pieces.end());
    }
  }

  // LlamaTokenizer.tokenize (legacy = false): drop the prefix "▁" before a leading special token.
  if (!legacy_ && tokens.size() > 1 && tokens[0] == kSpiece &&
      std::find(special_contents_.begin(), special_contents_.end(), tokens[1]) != special_contents_.end())
    tokens.erase(tokens.begin());
  return tokens;
}

std::vector<TokenId> LlamaTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<TokenId> ids;
  if (add_special_tokens && add_bos_) ids.push_back(bos_id_);
  for (const auto& piece : tokenize(text)) ids.push_back(piece_to_id(piece));
  if (add_special_tokens && add_eos_) ids.push_back(eos_id_);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// LlamaTokenizer: decoding

std::string LlamaTokenizer::pieces_to_string(std::vector<std::string> tokens) const {
  // LlamaTokenizer.convert_tokens_to_string
  if (tokens.empty()) return {};
  if (add_prefix_space_ && starts_with(tokens[0], kSpiece)) tokens[0] = tokens[0].substr(kSpiece.size());
  auto sp_decode = [&](const std::vector<std::string>& pieces) { return sp_->decode_pieces(pieces); };
  std::vector<std::string> current;
  std::string out;
  bool prev_is_special = false;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    const bool special =
        std::find(special_contents_.begin(), special_contents_.end(), token) != special_contents_.end();
    if (special) {
      if (!prev_is_special && i != 0 && legacy_) out += " ";
      out += sp_decode(current) + token;
      prev_is_special = true;
      current.clear();
    } else {
      if (prev_is_special && i == 1 && add_prefix_space_ && !starts_with(token, kSpiece)) out += " ";
      current.push_back(token);
      prev_is_special = false;
    }
  }
  out += sp_decode(current);
  return out;
}

std::string LlamaTokenizer::decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
  // PreTrainedTokenizer._decode. Ids outside the vocabulary (a model's padded embedding rows) have
  // no text and are skipped.
  std::set<std::string> legacy_added;  // added tokens joined outside SentencePiece
  for (const auto& t : added_) {
    const bool special =
        std::find(special_contents_.begin(), special_contents_.end(), t.content) != special_contents_.end();
    const bool additional =
        std::find(additional_special_.begin(), additional_special_.end(), t.content) != additional_special_.end();
    if (!special || (additional && t.id >= sp_->piece_size())) legacy_added.insert(t.content);
  }
  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (TokenId id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    std::string token = id_to_piece(id);
    if (token.empty()) continue;
    if (legacy_added.count(token)) {
      if (!current.empty()) {
        std::string s = pieces_to_string(current);
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(token);
    } else {
      current.push_back(std::move(token));
    }
  }
  if (!current.empty()) sub_texts.push_back(pieces_to_string(current));
  std::string text;
  for (std::size_t i = 0; i < sub_texts.size(); ++i) {
    if (i) text += " ";  // spaces_between_special_tokens = True (the _decode default)
    text += sub_texts[i];
  }
  return clean_up_spaces_ ? clean_up_tokenization(std::move(text)) : text;
}

// ---------------------------------------------------------------------------------------------
// Image expansion

std::vector<TokenId> expand_image_tokens(const std::vector<TokenId>& ids, TokenId image_token_id, std::int64_t n) {
  if (n < 0) throw UsageError(fmt::format("expand_image_tokens: n = {} is negative", n));
  std::vector<TokenId> out;
  out.reserve(ids.size());
  for (TokenId id : ids) {
    if (id == image_token_id)
      out.insert(out.end(), static_cast<std::size_t>(n), id);
    else
      out.push_back(id);
  }
  return out;
}

std::vector<TokenId> encode_llava_prompt(const LlamaTokenizer& tok, const ImageTokenConfig& img,
                                         std::string_view prompt) {
  const TokenId tok_id = tok.piece_to_id(img.image_token);
  if (tok_id != img.image_token_id)
    throw ModelError(fmt::format("tokenizer: image token \"{}\" has id {} but config.json image_token_index is {}",
                                 img.image_token, tok_id, img.image_token_id));
  // The processor repeats the "<image>" string before tokenizing; the empty text between the
  // copies yields no pieces, so repeating the token id is the same.
  return expand_image_tokens(tok.encode(prompt), img.image_token_id, img.image_seq_length);
}

// ---------------------------------------------------------------------------------------------
// Streaming

std::size_t utf8_complete_prefix(std::string_view s) {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  const std::size_t n = s.size();
  for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    std::size_t len = 1;
    if ((c & 0xE0) == 0xC0)
      len = 2;
    else if ((c & 0xF0) == 0xE0)
      len = 3;
    else if ((c & 0xF8) == 0xF0)
      len = 4;
    return back < len ? n - back : n;
  }
  return n;
}

std::string StreamDecoder::push(TokenId id) {
  ids_.push_back(id);
  // Trailing byte-fallback pieces (special ids are skipped by decode and so ignored here).
  std::vector<std::size_t> byte_pos;
  std::string bytes;
  for (std::size_t i = ids_.size(); i-- > 0;) {
    if (tok_->is_special(ids_[i])) continue;
    if (!tok_->is_byte_piece(ids_[i])) break;
    byte_pos.insert(byte_pos.begin(), i);
    bytes.insert(bytes.begin(), static_cast<char>(byte_piece_value(tok_->id_to_piece(ids_[i]))));
  }
  std::size_t stable_ids = ids_.size();
  const std::size_t complete = utf8_complete_prefix(bytes);
  if (complete < bytes.size()) stable_ids = byte_pos[complete];
  const std::string stable =
      tok_->decode(std::vector<TokenId>(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(stable_ids)));
  if (stable.size() < emitted_.size() || stable.compare(0, emitted_.size(), emitted_) != 0) return {};
  std::string fresh = stable.substr(emitted_.size());
  emitted_ = stable;
  return fresh;
}

std::string StreamDecoder::finish() {
  const std::string all = tok_->decode(ids_);
  if (all.size() < emitted_.size() || all.compare(0, emitted_.size(), emitted_) != 0) return {};
  std::string fresh = all.substr(emitted_.size());
  emitted_ = all;
  return fresh;
}

}  // namespace lli::text
