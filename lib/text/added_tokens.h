// The added-token vocabulary of a Hugging Face slow tokenizer, shared by the LLaMA and CLIP
// tokenizers: special tokens (bos/eos/unk/sep/pad/cls/mask/additional) and added tokens read from
// a tokenizer directory, and the split of a text on them before the model's own tokenization.
// Torch-free.
//
// Ref: transformers 4.45 tokenization_utils_base.py (from_pretrained: tokenizer_config.json, then
//      special_tokens_map.json, added_tokens_decoder, added_tokens.json), tokenization_utils.py
//      (PreTrainedTokenizer._add_tokens, tokenize: Trie split, lstrip/rstrip/single_word).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace lli::text {

using TokenId = std::int64_t;

// One entry of added_tokens_decoder (or added_tokens.json / a special token).
struct AddedToken {
  std::string content;
  TokenId id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// transformers' SPECIAL_TOKENS_ATTRIBUTES (without additional_special_tokens), in its order.
enum class SpecialSlot { bos, eos, unk, sep, pad, cls, mask };
inline constexpr std::size_t kSpecialSlots = 7;
const char* special_slot_key(SpecialSlot s);  // "bos_token", ...

// A tokenizer class's default special tokens (its __init__ defaults); nullopt = none.
using SpecialDefaults = std::array<std::optional<std::string>, kSpecialSlots>;

// A JSON object file of a tokenizer directory; nullopt when the file does not exist. ModelError
// "<path>: ..." when unreadable, not JSON, or not an object.
std::optional<nlohmann::json> read_tokenizer_json(const std::filesystem::path& path);
// Typed optional keys of such a file (absent or null = dflt); ModelError naming file and key.
bool json_bool(const nlohmann::json& j, const char* key, bool dflt, const std::filesystem::path& file);
std::int64_t json_int(const nlohmann::json& j, const char* key, std::int64_t dflt, const std::filesystem::path& file,
                      const std::string& path_prefix = "");

class AddedVocab {
 public:
  // Id of a token in the model's own vocabulary, nullopt when it has none.
  using BaseLookup = std::function<std::optional<TokenId>(const std::string& content)>;

  // Special tokens: `defaults`, overridden by `config` (tokenizer_config.json, may be an empty
  // object) and then by <dir>/special_tokens_map.json. Added tokens: config's
  // added_tokens_decoder, then <dir>/added_tokens.json. Every special token becomes an added
  // token; one not yet known takes its id from `base_id` or, failing that, the next free id
  // (>= base_size). ModelError naming the file on malformed entries or conflicting ids.
  static AddedVocab load(const std::filesystem::path& dir, const nlohmann::json& config,
                         const std::filesystem::path& config_path, const SpecialDefaults& defaults,
                         const BaseLookup& base_id, TokenId base_size);

  // PreTrainedTokenizer.tokenize's split: added tokens cut out of `text` by leftmost-longest
  // exact match, the whitespace next to them stripped per their lstrip/rstrip flags (Python
  // str.strip whitespace), single_word tokens glued back to adjacent text; empty pieces dropped.
  struct Segment {
    std::string text;
    const AddedToken* token = nullptr;  // the added token `text` is, or nullptr for plain text
  };
  std::vector<Segment> split(std::string_view text) const;

  const AddedToken* by_content(std::string_view content) const;
  const AddedToken* by_id(TokenId id) const;
  const std::optional<AddedToken>& slot(SpecialSlot s) const { return slots_[static_cast<std::size_t>(s)]; }
  TokenId slot_id(SpecialSlot s) const;                        // -1 when the slot is empty
  bool is_special(std::string_view content) const;             // all_special_tokens
  bool is_additional_special(std::string_view content) const;  // additional_special_tokens
  bool is_special_id(TokenId id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }  // sorted by id
  TokenId size_with(TokenId base_size) const;                        // max(base_size, largest added id + 1)

  // PreTrainedTokenizer._decode (spaces_between_special_tokens=True, no clean-up): runs of pieces
  // are joined by `pieces_to_string`; "legacy" added tokens (not special, or additional special
  // tokens with ids >= base_vocab_size) stand alone; the sub-texts are joined by spaces. Special
  // tokens are skipped when asked; ids for which `id_to_piece` gives "" are skipped.
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens, TokenId base_vocab_size,
                     const std::function<std::string(TokenId)>& id_to_piece,
                     const std::function<std::string(const std::vector<std::string>&)>& pieces_to_string) const;

 private:
  void add(AddedToken t, const std::filesystem::path& file);
  void reindex();

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, std::size_t> by_content_;
  std::map<TokenId, std::size_t> by_id_;
  std::array<std::vector<std::size_t>, 256> by_first_byte_;  // candidates for split()
  std::array<std::optional<AddedToken>, kSpecialSlots> slots_;
  std::vector<std::string> special_contents_, additional_special_;
};

}  // namespace lli::text
