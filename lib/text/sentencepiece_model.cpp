// Ref: google/sentencepiece src/sentencepiece_model.proto
#include "text/sentencepiece_model.h"

#include <fmt/format.h>

#include "io/protobuf_wire.h"

namespace lli::text {

namespace {

using pb::Field;
using pb::WireReader;

SpmPiece parse_piece(WireReader r) {
  SpmPiece p;
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1: p.piece = std::string(r.as_bytes(f)); break;
      case 2: p.score = r.as_float(f); break;
      case 3: {
        const std::int32_t t = r.as_int32(f);
        if (t < 1 || t > 6) r.fail(f, fmt::format("piece type {} (expected 1 to 6)", t));
        p.type = static_cast<SpmPieceType>(t);
        break;
      }
      default: break;  // extensions
    }
  }
  return p;
}

// A message field given twice is merged into the first, as protobuf does.
void parse_trainer(WireReader r, SpmTrainerSpec& t) {
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 3: {
        const std::int32_t m = r.as_int32(f);
        if (m < 1 || m > 4) r.fail(f, fmt::format("model_type {} (expected 1 to 4)", m));
        t.model_type = static_cast<SpmModelType>(m);
        break;
      }
      case 24: t.treat_whitespace_as_suffix = r.as_bool(f); break;
      case 35: t.byte_fallback = r.as_bool(f); break;
      case 40: t.unk_id = r.as_int32(f); break;
      case 41: t.bos_id = r.as_int32(f); break;
      case 42: t.eos_id = r.as_int32(f); break;
      case 43: t.pad_id = r.as_int32(f); break;
      case 44: t.unk_surface = std::string(r.as_bytes(f)); break;
      case 45: t.unk_piece = std::string(r.as_bytes(f)); break;
      case 46: t.bos_piece = std::string(r.as_bytes(f)); break;
      case 47: t.eos_piece = std::string(r.as_bytes(f)); break;
      case 48: t.pad_piece = std::string(r.as_bytes(f)); break;
      default: break;  // training options
    }
  }
}

void parse_normalizer(WireReader r, SpmNormalizerSpec& n) {
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1: n.name = std::string(r.as_bytes(f)); break;
      case 2: n.precompiled_charsmap = std::string(r.as_bytes(f)); break;
      case 3: n.add_dummy_prefix = r.as_bool(f); break;
      case 4: n.remove_extra_whitespaces = r.as_bool(f); break;
      case 5: n.escape_whitespaces = r.as_bool(f); break;
      default: break;  // normalization_rule_tsv, extensions
    }
  }
}

void parse_self_test(WireReader r, std::vector<SpmSelfTestSample>& out) {
  Field f;
  while (r.next(f)) {
    if (f.number != 1) continue;
    WireReader s = r.sub(f, "ModelProto.self_test_data.samples", static_cast<std::int64_t>(out.size()));
    SpmSelfTestSample sample;
    Field g;
    while (s.next(g)) {
      if (g.number == 1) sample.input = std::string(s.as_bytes(g));
      if (g.number == 2) sample.expected = std::string(s.as_bytes(g));
    }
    out.push_back(std::move(sample));
  }
}

}  // namespace

const char* spm_model_type_name(SpmModelType t) {
  switch (t) {
    case SpmModelType::unigram: return "UNIGRAM";
    case SpmModelType::bpe: return "BPE";
    case SpmModelType::word: return "WORD";
    case SpmModelType::character: return "CHAR";
  }
  return "?";
}

SpmModelProto parse_spm_model(std::string_view bytes, const std::string& source) {
  SpmModelProto m;
  WireReader r(bytes, source, "ModelProto");
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        m.pieces.push_back(parse_piece(r.sub(f, "ModelProto.pieces", static_cast<std::int64_t>(m.pieces.size()))));
        break;
      case 2: parse_trainer(r.sub(f, "ModelProto.trainer_spec"), m.trainer); break;
      case 3: parse_normalizer(r.sub(f, "ModelProto.normalizer_spec"), m.normalizer); break;
      case 4: parse_self_test(r.sub(f, "ModelProto.self_test_data"), m.self_test); break;
      case 5:
        if (!m.denormalizer) m.denormalizer.emplace();
        parse_normalizer(r.sub(f, "ModelProto.denormalizer_spec"), *m.denormalizer);
        break;
      default: break;
    }
  }
  return m;
}

}  // namespace lli::text
