// Ref: transformers 4.45 models/llama/tokenization_llama.py, tokenization_utils.py (slow tokenizer),
//      models/llava/processing_llava.py, configuration_llava.py.
#include "text/llama_tokenizer.h"

#include <algorithm>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lli/error.h"

namespace lli::text {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSpiece = "\xE2\x96\x81";  // "▁" (U+2581)

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

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
  auto cfg = read_tokenizer_json(cfg_path);
  if (!cfg) throw ModelError(fmt::format("{}: missing (needed for image_token_index)", cfg_path.string()));
  ImageTokenConfig out;
  // LlavaConfig defaults: image_token_index 32000, vision_feature_select_strategy "default".
  out.image_token_id = json_int(*cfg, "image_token_index", 32000, cfg_path);
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
    out.image_seq_length = json_int(*cfg, "image_seq_length", 0, cfg_path);
  } else {
    // LlavaConfig without vision_config builds CLIPVisionConfig(image_size=336, patch_size=14);
    // a given vision_config falls back to CLIPVisionConfig's own defaults (224, 32).
    std::int64_t image_size = 336, patch_size = 14;
    if (auto vc = cfg->find("vision_config"); vc != cfg->end() && vc->is_object()) {
      image_size = json_int(*vc, "image_size", 224, cfg_path, "vision_config.");
      patch_size = json_int(*vc, "patch_size", 32, cfg_path, "vision_config.");
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
  if (auto proc = read_tokenizer_json(proc_path)) {
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

  const std::optional<json> cfg = read_tokenizer_json(cfg_path);
  const json empty = json::object();
  const json& c = cfg ? *cfg : empty;
  tok.add_bos_ = json_bool(c, "add_bos_token", true, cfg_path);
  tok.add_eos_ = json_bool(c, "add_eos_token", false, cfg_path);
  tok.legacy_ = opts.legacy ? *opts.legacy : json_bool(c, "legacy", true, cfg_path);
  tok.add_prefix_space_ = json_bool(c, "add_prefix_space", true, cfg_path);
  tok.clean_up_spaces_ = json_bool(c, "clean_up_tokenization_spaces", false, cfg_path);

  // legacy = false: transformers merges NormalizerSpec{add_dummy_prefix: false} into the model.
  tok.sp_.emplace(SentencePiece::load(model_path.string(), /*add_dummy_prefix=*/tok.legacy_));

  // Special and added tokens (LlamaTokenizer defaults; tokenizer_config.json,
  // special_tokens_map.json, added_tokens.json). A special token not yet known takes its
  // SentencePiece id, or is appended after the vocabulary.
  SpecialDefaults defaults;
  defaults[static_cast<std::size_t>(SpecialSlot::bos)] = "<s>";
  defaults[static_cast<std::size_t>(SpecialSlot::eos)] = "</s>";
  defaults[static_cast<std::size_t>(SpecialSlot::unk)] = "<unk>";
  const SentencePiece& sp = *tok.sp_;
  tok.added_ = AddedVocab::load(
      dir, c, cfg_path, defaults,
      [&sp](const std::string& s) -> std::optional<TokenId> {
        const int id = sp.piece_to_id(s);
        if (id != sp.unk_id() || s == sp.id_to_piece(sp.unk_id())) return id;
        return std::nullopt;
      },
      sp.piece_size());
  tok.bos_id_ = tok.added_.slot_id(SpecialSlot::bos);
  tok.eos_id_ = tok.added_.slot_id(SpecialSlot::eos);
  tok.pad_id_ = tok.added_.slot_id(SpecialSlot::pad);
  if (const auto& unk = tok.added_.slot(SpecialSlot::unk)) {
    tok.unk_id_ = unk->id;
    tok.unk_token_ = unk->content;
  } else {
    tok.unk_id_ = sp.unk_id();
    tok.unk_token_ = sp.id_to_piece(sp.unk_id());
  }
  if (tok.add_bos_ && tok.bos_id_ < 0)
    throw ModelError(fmt::format("{}: add_bos_token is true but there is no bos_token", cfg_path.string()));
  if (tok.add_eos_ && tok.eos_id_ < 0)
    throw ModelError(fmt::format("{}: add_eos_token is true but there is no eos_token", cfg_path.string()));
  tok.unk_token_length_ = tok.sp_->encode_pieces(tok.unk_token_).size();
  return tok;
}

// ---------------------------------------------------------------------------------------------
// LlamaTokenizer: queries

std::int64_t LlamaTokenizer::sp_vocab_size() const { return sp_->piece_size(); }

std::int64_t LlamaTokenizer::vocab_size() const { return added_.size_with(sp_->piece_size()); }

std::string LlamaTokenizer::id_to_piece(TokenId id) const {
  if (const AddedToken* t = added_.by_id(id)) return t->content;
  if (id >= 0 && id < sp_->piece_size()) return sp_->id_to_piece(static_cast<int>(id));
  return {};
}

TokenId LlamaTokenizer::piece_to_id(const std::string& piece) const {
  if (const AddedToken* t = added_.by_content(piece)) return t->id;
  return sp_->piece_to_id(piece);
}

bool LlamaTokenizer::is_special(TokenId id) const { return added_.is_special_id(id); }

bool LlamaTokenizer::is_byte_piece(TokenId id) const {
  if (added_.by_id(id) || id < 0 || id >= sp_->piece_size()) return false;
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

  // PreTrainedTokenizer.tokenize: split on added tokens, SentencePiece for the text between.
  std::vector<std::string> tokens;
  for (const auto& seg : added_.split(text)) {
    if (seg.token) {
      tokens.push_back(seg.text);
    } else {
      auto pieces = sp_tokenize(seg.text);
      tokens.insert(tokens.end(), pieces.begin(), pieces.end());
    }
  }

  // LlamaTokenizer.tokenize (legacy = false): drop the prefix "▁" before a leading special token.
  if (!legacy_ && tokens.size() > 1 && tokens[0] == kSpiece && added_.is_special(tokens[1]))
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
    if (added_.is_special(token)) {
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
  std::string text = added_.decode(
      ids, skip_special_tokens, sp_->piece_size(), [this](TokenId id) { return id_to_piece(id); },
      [this](const std::vector<std::string>& pieces) { return pieces_to_string(pieces); });
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
