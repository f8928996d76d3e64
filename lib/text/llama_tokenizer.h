// LLaMA SentencePiece tokenizer with the Hugging Face slow-tokenizer behaviour used by llava-hf
// checkpoints, the LLaVA <image> expansion, and a streaming decoder. Torch-free.
//
// Ref: transformers 4.45 models/llama/tokenization_llama.py (LlamaTokenizer),
//      tokenization_utils.py (PreTrainedTokenizer.tokenize/_decode), models/llava/processing_llava.py.
//
// Encoding (what `tokenizer(text)` gives in Python):
//   1. added tokens (tokenizer_config.json added_tokens_decoder, added_tokens.json and the special
//      tokens bos/eos/unk/pad/additional_special_tokens) are split out of the text by exact,
//      leftmost-longest match; their lstrip/rstrip/single_word flags are honoured (text/added_tokens.h);
//   2. the pieces between them are encoded with SentencePiece:
//      legacy = true : every piece gets SentencePiece's dummy prefix ("\nWhat" -> "▁", "<0x0A>", ...);
//      legacy = false: the model's add_dummy_prefix is switched off, "▁" is prepended to the whole text
//        once (add_prefix_space), and a piece starting with a space is encoded behind "<unk>" whose
//        pieces are then dropped, so text after a special token gets no extra "▁";
//   3. BOS / EOS are added per add_bos_token / add_eos_token.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/added_tokens.h"
#include "text/sentencepiece.h"

namespace lli::text {

struct LlamaTokenizerOptions {
  std::optional<bool> legacy;  // override tokenizer_config.json's `legacy` (absent there = true)
};

// How <image> is expanded for the model (LlavaProcessor): config.json image_token_index and
// image_seq_length; when image_seq_length is absent it is (image_size / patch_size)^2, +1 when
// vision_feature_select_strategy is "full" (transformers' LlavaConfig / CLIPVisionConfig defaults
// apply to absent keys).
struct ImageTokenConfig {
  std::string image_token = "<image>";
  TokenId image_token_id = 32000;
  std::int64_t image_seq_length = 576;
  // Reads <dir>/config.json (and processor_config.json's image_token if present). ModelError when
  // config.json is missing or malformed.
  static ImageTokenConfig load(const std::filesystem::path& dir);
};

class LlamaTokenizer {
 public:
  // Loads tokenizer.model, tokenizer_config.json, special_tokens_map.json and added_tokens.json
  // from a checkpoint directory (only tokenizer.model is required). ModelError on a missing or
  // unreadable tokenizer.model, malformed JSON or an inconsistent added token.
  static LlamaTokenizer load(const std::filesystem::path& dir, const LlamaTokenizerOptions& opts = {});

  // Pieces of `text` without BOS/EOS (Python `tokenizer.tokenize(text)`).
  std::vector<std::string> tokenize(std::string_view text) const;
  // Ids of `text` (Python `tokenizer(text).input_ids`); <image> stays ONE token.
  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = true) const;
  // Python `tokenizer.decode(ids, skip_special_tokens=...)` (spaces_between_special_tokens=True,
  // clean_up_tokenization_spaces from tokenizer_config.json). Byte-fallback pieces are joined into
  // UTF-8; invalid byte sequences become U+FFFD as in SentencePiece.
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = true) const;

  std::string id_to_piece(TokenId id) const;            // added-token content or SentencePiece piece
  TokenId piece_to_id(const std::string& piece) const;  // unk_id() when unknown
  bool is_special(TokenId id) const;                    // bos/eos/unk/pad/additional special tokens
  bool is_byte_piece(TokenId id) const;                 // <0xNN> byte-fallback piece

  TokenId bos_id() const { return bos_id_; }
  TokenId eos_id() const { return eos_id_; }
  TokenId unk_id() const { return unk_id_; }
  TokenId pad_id() const { return pad_id_; }  // -1 when there is no pad token
  bool legacy() const { return legacy_; }
  bool add_bos_token() const { return add_bos_; }
  bool add_eos_token() const { return add_eos_; }
  std::int64_t sp_vocab_size() const;  // pieces in tokenizer.model
  std::int64_t vocab_size() const;     // including added tokens (len(tokenizer))
  const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }  // sorted by id

 private:
  LlamaTokenizer() = default;
  std::vector<std::string> sp_tokenize(const std::string& text) const;  // _tokenize
  std::string pieces_to_string(std::vector<std::string> pieces) const;  // convert_tokens_to_string

  std::optional<SentencePiece> sp_;  // always set after load()
  std::string source_;               // directory, for messages
  AddedVocab added_;                 // added and special tokens
  TokenId bos_id_ = 1, eos_id_ = 2, unk_id_ = 0, pad_id_ = -1;
  std::string unk_token_ = "<unk>";
  bool legacy_ = true;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_prefix_space_ = true;
  bool clean_up_spaces_ = false;
  std::size_t unk_token_length_ = 0;
};

// Replaces every `image_token_id` by `n` copies (what the processor's string expansion gives).
std::vector<TokenId> expand_image_tokens(const std::vector<TokenId>& ids, TokenId image_token_id, std::int64_t n);

// Tokenizer + image expansion: the ids the LLaVA model is fed for `prompt`.
std::vector<TokenId> encode_llava_prompt(const LlamaTokenizer& tok, const ImageTokenConfig& img,
                                         std::string_view prompt);

// Incremental decoding for token-by-token printing: push() returns the text that became printable
// with this id; the concatenation of all pushes and finish() equals
// tok.decode(all ids, skip_special_tokens=true). A UTF-8 character split over byte-fallback pieces
// is held back until complete, so no chunk ends inside a character.
class StreamDecoder {
 public:
  explicit StreamDecoder(const LlamaTokenizer& tok) : tok_(&tok) {}
  std::string push(TokenId id);
  std::string finish();  // what is still held back (an incomplete byte sequence, as U+FFFD)
  const std::vector<TokenId>& ids() const { return ids_; }
  const std::string& text() const { return emitted_; }  // everything returned so far

 private:
  const LlamaTokenizer* tok_;
  std::vector<TokenId> ids_;
  std::string emitted_;
};

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence.
std::size_t utf8_complete_prefix(std::string_view s);

}  // namespace lli::text
