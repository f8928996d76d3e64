// SentencePiece inside lli: reads tokenizer.model (text/sentencepiece_model.h) and encodes and
// decodes as libsentencepiece 0.1.97 does, without libsentencepiece or a protobuf library.
//
// Ref: google/sentencepiece src/normalizer.cc, bpe_model.cc, unigram_model.cc (EncodeOptimized),
//      model_interface.cc, sentencepiece_processor.cc (Encode, Decode).
//
// Encoding = normalize, segment, then post-process:
//   normalize: user-defined pieces are kept verbatim (longest match); otherwise the longest rule
//     of the precompiled charsmap (a darts-clone double array) replaces the input, or one UTF-8
//     character is copied (a malformed byte becomes U+FFFD); remove_extra_whitespaces drops
//     leading, trailing and repeated spaces; escape_whitespaces writes " " as "▁" (U+2581);
//     add_dummy_prefix puts one "▁" in front (behind, with treat_whitespace_as_suffix).
//   BPE (LLaMA): the whole normalized text starts as characters (user-defined pieces frozen) and
//     the adjacent pair whose concatenation is the highest-scoring piece is merged first (the
//     leftmost on a tie) until no pair is a piece; UNUSED pieces are split back into the pieces
//     they were merged from.
//   unigram: Viterbi over every piece that matches at each character (float scores summed;
//     user-defined pieces score length * max_score - 0.1, a character no piece covers is <unk>
//     with min_score - 10).
//   post-process: with byte_fallback an unknown piece becomes its UTF-8 bytes as <0xNN> pieces;
//     without, consecutive unknown pieces are merged into one.
// Decoding: control pieces vanish, <unk> is trainer_spec.unk_surface (" ⁇ "), a run of byte
// pieces is decoded as UTF-8 (each malformed byte = U+FFFD), "▁" becomes " ", and the first
// piece's leading "▁" is dropped when add_dummy_prefix or remove_extra_whitespaces is set.
//
// Model types WORD and CHAR are refused (no known checkpoint uses them with lli).
// Torch-free.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lli::text {

class SentencePiece {
 public:
  // Loads a SentencePiece model file (at most 256 MiB). `add_dummy_prefix`: when false, the
  // model's normalizer_spec.add_dummy_prefix is switched off (what transformers' LlamaTokenizer
  // does with legacy=false). ModelError naming the file on any malformed or inconsistent model:
  // wire-format errors, no <unk> or two, an empty or duplicate piece, byte pieces without
  // byte_fallback or byte_fallback without all 256, a broken charsmap, a failed self-test.
  static SentencePiece load(const std::string& model_path, bool add_dummy_prefix = true);
  // The same from the file's bytes; `source` names it in messages.
  static SentencePiece from_bytes(std::string_view bytes, const std::string& source, bool add_dummy_prefix = true);

  SentencePiece(SentencePiece&&) noexcept;
  SentencePiece& operator=(SentencePiece&&) noexcept;
  ~SentencePiece();

  std::vector<int> encode_ids(std::string_view text) const;
  std::vector<std::string> encode_pieces(std::string_view text) const;
  // Ids outside [0, piece_size()) are skipped.
  std::string decode_ids(const std::vector<int>& ids) const;
  std::string decode_pieces(const std::vector<std::string>& pieces) const;

  int piece_size() const;
  std::string id_to_piece(int id) const;  // "" outside [0, piece_size())
  int piece_to_id(std::string_view piece) const;  // unk_id() when absent
  float score(int id) const;
  bool is_unknown(int id) const;
  bool is_control(int id) const;
  bool is_unused(int id) const;
  bool is_byte(int id) const;
  int unk_id() const;
  int bos_id() const;  // -1 when the model has no such control piece
  int eos_id() const;
  int pad_id() const;

  struct Impl;  // sentencepiece.cpp

 private:
  explicit SentencePiece(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lli::text
