// CLIP byte-level BPE tokenizer with the Hugging Face slow-tokenizer behaviour (CLIPTokenizer as
// used by Stable Diffusion / GLIGEN text encoders and OWL-ViT / OWLv2 queries). Torch-free.
//
// Ref: transformers 4.45 models/clip/tokenization_clip.py (CLIPTokenizer without ftfy, i.e. the
//      BasicTokenizer clean-up), tokenization_utils.py / tokenization_utils_base.py (added-token
//      split, truncation, padding).
//
// Encoding `text` (what `tokenizer(text).input_ids` gives in Python):
//   1. added tokens (special tokens such as <|endoftext|>, and OWL's pad token "!") are split out
//      of the raw text by leftmost-longest match (text/added_tokens.h);
//   2. each remaining piece is cleaned as BasicTokenizer(strip_accents=False,
//      do_split_on_punc=False) does: U+0000, U+FFFD and category C* removed (\t \n \r kept as
//      whitespace), Zs -> space, spaces around CJK ideographs, NFC, split on Python whitespace,
//      each word lower-cased with str.lower(), words joined by one space;
//   3. pre-tokenised by the reference's regex (case-insensitive):
//        <|startoftext|> | <|endoftext|> | 's|'t|'re|'ve|'m|'ll|'d | \p{L}+ | \p{N} | [^\s\p{L}\p{N}]+
//      (a hand-written scanner; the `regex` module's case folding makes 'ſ match 's, and U+0345
//      match no branch, so it is dropped);
//   4. each match's UTF-8 bytes mapped to the printable byte alphabet, BPE-merged with "</w>" on
//      its last symbol (merges.txt ranks, at most 48,894 merges as the reference reads), pieces
//      looked up in added tokens, then vocab.json, else the unk token;
//   5. BOS + ids + EOS.
// tokenizer_config.json's do_lower_case is not consulted: the reference lower-cases regardless.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/added_tokens.h"

namespace lli::text {

class CLIPTokenizer {
 public:
  CLIPTokenizer();  // empty: every call but load() throws RuntimeError

  // Reads vocab.json and merges.txt (required), tokenizer_config.json, special_tokens_map.json and
  // added_tokens.json (optional) from `dir`. ModelError naming the file on a missing or malformed
  // file.
  static CLIPTokenizer load(const std::filesystem::path& dir);

  // BPE pieces of `text` without BOS/EOS (Python `tokenizer.tokenize(text)`).
  std::vector<std::string> tokenize(std::string_view text) const;

  // BOS + ids + EOS; when max_length > 0 truncated to max_length (BOS + first max_length - 2 ids
  // + EOS). Work is bounded by max_length: pieces past it are not BPE-merged. InputError when
  // 0 < max_length < 2.
  std::vector<TokenId> encode(std::string_view text, std::int64_t max_length = -1) const;

  enum class Padding {
    none,
    longest,     // padding=True: to the longest row of the batch
    max_length,  // padding="max_length": to max_length
  };
  struct Batch {
    std::vector<std::vector<TokenId>> ids;                  // [B][T]
    std::vector<std::vector<std::int64_t>> attention_mask;  // 1 = token (BOS..EOS), 0 = padding
  };
  // `tokenizer(texts, padding=..., max_length=..., truncation=...)`. max_length -1 means
  // model_max_length (none when tokenizer_config.json gives none: no truncation, and
  // Padding::max_length then pads nothing, as transformers does). Padding uses pad_id() on the
  // right; InputError when padding is needed and there is no pad token.
  Batch encode_batch(const std::vector<std::string>& texts, Padding padding, std::int64_t max_length = -1,
                     bool truncation = true) const;

  // Text of `ids` (Python `tokenizer.decode(ids)`): BPE pieces joined back into UTF-8, "</w>" as
  // a space, added tokens as their text separated by spaces; for logs and tests.
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const;

  std::int64_t model_max_length() const;  // -1 when tokenizer_config.json gives none
  TokenId bos_id() const;
  TokenId eos_id() const;
  TokenId unk_id() const;
  TokenId pad_id() const;                               // -1 when there is no pad token
  std::int64_t vocab_size() const;                      // len(tokenizer): vocab.json plus added tokens
  TokenId token_to_id(const std::string& token) const;  // unk_id() when unknown
  std::string id_to_token(TokenId id) const;            // "" when unknown

  struct Data;

 private:
  const Data& data() const;
  std::shared_ptr<const Data> d_;  // immutable after load: copies are cheap and thread-safe
};

}  // namespace lli::text
