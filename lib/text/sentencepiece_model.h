// SentencePiece's model file (tokenizer.model): the fields of its ModelProto that encoding and
// decoding use, read with the bounded wire reader (io/protobuf_wire.h). Torch-free.
//
// Ref: google/sentencepiece src/sentencepiece_model.proto (field numbers and defaults below).
//   ModelProto      1 pieces {1 piece, 2 score, 3 type}, 2 trainer_spec, 3 normalizer_spec,
//                   4 self_test_data {1 samples {1 input, 2 expected}}, 5 denormalizer_spec
//   TrainerSpec     3 model_type, 24 treat_whitespace_as_suffix, 35 byte_fallback,
//                   40-43 unk/bos/eos/pad_id, 44 unk_surface, 45-48 unk/bos/eos/pad_piece
//   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
//                   5 escape_whitespaces
// Other fields (the training options) are skipped. Every malformed input is a ModelError naming
// the file: see protobuf_wire.h for the wire-level checks; here an unknown model or piece type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lli::text {

enum class SpmModelType : int { unigram = 1, bpe = 2, word = 3, character = 4 };
enum class SpmPieceType : int { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

struct SpmPiece {
  std::string piece;
  float score = 0.0f;
  SpmPieceType type = SpmPieceType::normal;
};

struct SpmTrainerSpec {
  SpmModelType model_type = SpmModelType::unigram;
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ "
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
};

struct SpmNormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;  // <uint32 trie size><darts-clone double array><NUL-ended strings>
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct SpmSelfTestSample {
  std::string input;
  std::string expected;  // pieces joined by " "
};

struct SpmModelProto {
  std::vector<SpmPiece> pieces;
  SpmTrainerSpec trainer;
  SpmNormalizerSpec normalizer;
  std::optional<SpmNormalizerSpec> denormalizer;
  std::vector<SpmSelfTestSample> self_test;
};

// Parses a serialized ModelProto; `source` names the file in messages.
SpmModelProto parse_spm_model(std::string_view bytes, const std::string& source);

const char* spm_model_type_name(SpmModelType t);  // "UNIGRAM", "BPE", "WORD", "CHAR"

}  // namespace lli::text
