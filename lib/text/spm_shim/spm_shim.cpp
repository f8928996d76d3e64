// liblli_spm.so: a C API over libsentencepiece, opened by lib/text/sentencepiece.cpp with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) so that sentencepiece's embedded protobuf never meets
// libtorch's libprotobuf (see sentencepiece.h). Strings returned through `out` callbacks.
#include <sentencepiece_processor.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {
using Proc = sentencepiece::SentencePieceProcessor;
Proc* P(void* h) { return static_cast<Proc*>(h); }

// Sets normalizer_spec.add_dummy_prefix (field 3 of NormalizerSpec, field 3 of ModelProto) to
// false by editing the serialized proto: sentencepiece's public headers do not expose ModelProto.
// Wire format: tag = (field << 3) | wire_type.
bool read_varint(const std::string& s, size_t& i, unsigned long long& v) {
  v = 0;
  for (int shift = 0; i < s.size() && shift < 64; shift += 7) {
    unsigned char b = static_cast<unsigned char>(s[i++]);
    v |= static_cast<unsigned long long>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}
void write_varint(std::string& out, unsigned long long v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
// Copies message `s`, applying `edit(field, wire, payload)` for length-delimited fields; returns false on malformed input.
bool rewrite_normalizer(const std::string& s, std::string& out, bool in_normalizer) {
  size_t i = 0;
  bool wrote_dummy = false;
  while (i < s.size()) {
    unsigned long long tag;
    if (!read_varint(s, i, tag)) return false;
    const unsigned field = static_cast<unsigned>(tag >> 3), wire = static_cast<unsigned>(tag & 7);
    if (wire == 0) {
      unsigned long long v;
      if (!read_varint(s, i, v)) return false;
      if (in_normalizer && field == 3) {  // add_dummy_prefix
        v = 0;
        wrote_dummy = true;
      }
      write_varint(out, tag);
      write_varint(out, v);
    } else if (wire == 2) {
      unsigned long long len;
      if (!read_varint(s, i, len) || i + len > s.size()) return false;
      std::string payload = s.substr(i, len);
      i += len;
      if (!in_normalizer && field == 3) {  // ModelProto.normalizer_spec
        std::string edited;
        if (!rewrite_normalizer(payload, edited, true)) return false;
        payload = edited;
      }
      write_varint(out, tag);
      write_varint(out, payload.size());
      out += payload;
    } else if (wire == 5 || wire == 1) {
      const size_t n = wire == 5 ? 4 : 8;
      if (i + n > s.size()) return false;
      write_varint(out, tag);
      out.append(s, i, n);
      i += n;
    } else {
      return false;
    }
  }
  if (in_normalizer && !wrote_dummy) {  // default is true: write an explicit false
    write_varint(out, (3u << 3) | 0u);
    write_varint(out, 0);
  }
  return true;
}
}  // namespace

extern "C" {

typedef void (*lli_spm_str_cb)(void* ctx, const char* data, size_t len);

__attribute__((visibility("default"))) void* lli_spm_load(const char* path, int add_dummy_prefix, lli_spm_str_cb err,
                                                          void* err_ctx) {
  auto* p = new Proc();
  sentencepiece::util::Status st;
  if (add_dummy_prefix) {
    st = p->Load(path);
  } else {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string edited;
    if (!f || !rewrite_normalizer(ss.str(), edited, false)) {
      const std::string m = "cannot read or parse the model proto";
      err(err_ctx, m.data(), m.size());
      delete p;
      return nullptr;
    }
    st = p->LoadFromSerializedProto(edited);
  }
  if (!st.ok()) {
    const std::string m = st.ToString();
    err(err_ctx, m.data(), m.size());
    delete p;
    return nullptr;
  }
  return p;
}
__attribute__((visibility("default"))) void lli_spm_free(void* h) { delete P(h); }

__attribute__((visibility("default"))) void lli_spm_encode_ids(void* h, const char* text, size_t len,
                                                               void (*cb)(void*, const int*, size_t), void* ctx) {
  std::vector<int> ids;
  P(h)->Encode(std::string_view(text, len), &ids);
  cb(ctx, ids.data(), ids.size());
}
__attribute__((visibility("default"))) void lli_spm_encode_pieces(void* h, const char* text, size_t len,
                                                                  lli_spm_str_cb cb, void* ctx) {
  std::vector<std::string> pieces;
  P(h)->Encode(std::string_view(text, len), &pieces);
  for (const auto& s : pieces) cb(ctx, s.data(), s.size());
}
__attribute__((visibility("default"))) void lli_spm_decode_ids(void* h, const int* ids, size_t n, lli_spm_str_cb cb,
                                                               void* ctx) {
  std::string out;
  P(h)->Decode(std::vector<int>(ids, ids + n), &out);
  cb(ctx, out.data(), out.size());
}
__attribute__((visibility("default"))) void lli_spm_decode_pieces(void* h, const char* const* pieces, const size_t* lens,
                                                                  size_t n, lli_spm_str_cb cb, void* ctx) {
  std::vector<std::string> v;
  for (size_t i = 0; i < n; ++i) v.emplace_back(pieces[i], lens[i]);
  std::string out;
  P(h)->Decode(v, &out);
  cb(ctx, out.data(), out.size());
}
__attribute__((visibility("default"))) int lli_spm_piece_size(void* h) { return P(h)->GetPieceSize(); }
__attribute__((visibility("default"))) void lli_spm_id_to_piece(void* h, int id, lli_spm_str_cb cb, void* ctx) {
  const std::string& s = P(h)->IdToPiece(id);
  cb(ctx, s.data(), s.size());
}
__attribute__((visibility("default"))) int lli_spm_piece_to_id(void* h, const char* piece, size_t len) {
  return P(h)->PieceToId(std::string_view(piece, len));
}
__attribute__((visibility("default"))) float lli_spm_score(void* h, int id) { return P(h)->GetScore(id); }
// kind: 0 unknown, 1 control, 2 unused, 3 byte
__attribute__((visibility("default"))) int lli_spm_is(void* h, int id, int kind) {
  switch (kind) {
    case 0: return P(h)->IsUnknown(id);
    case 1: return P(h)->IsControl(id);
    case 2: return P(h)->IsUnused(id);
    default: return P(h)->IsByte(id);
  }
}
// which: 0 unk, 1 bos, 2 eos, 3 pad
__attribute__((visibility("default"))) int lli_spm_special_id(void* h, int which) {
  switch (which) {
    case 0: return P(h)->unk_id();
    case 1: return P(h)->bos_id();
    case 2: return P(h)->eos_id();
    default: return P(h)->pad_id();
  }
}

}  // extern "C"
