// A bounded reader of the protobuf wire format, for the one protobuf file lli reads (SentencePiece's
// tokenizer.model, text/sentencepiece_model.h). No protobuf library: the caller walks the fields
// of one message with next() and descends into a length-delimited field with sub(), following
// its own schema, so the nesting depth is the schema's (unknown fields are skipped, never parsed).
//
// Every read is checked against the bytes that are left. Refused, as ModelError naming the file,
// the message path and the byte offset: a varint longer than 10 bytes, a length or fixed-size
// payload past the end of its message, field number 0 or above 2^29 - 1, the group wire types
// (3, 4: deprecated and the one recursive construct of the format), wire types 6 and 7, and a
// known field read with the wrong wire type:
//   "tokenizer.model: ModelProto.pieces[12] at byte 345: field 2: wire type varint, expected fixed32"
// Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lli::pb {

enum class WireType : std::uint8_t { varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5 };

struct Field {
  std::uint32_t number = 0;
  WireType type = WireType::varint;
  std::uint64_t value = 0;  // varint, fixed32 and fixed64 payloads
  std::string_view bytes;   // length-delimited payload
  std::size_t offset = 0;   // byte offset of the tag in the whole file
};

class WireReader {
 public:
  // `data` is one message; `source` names the file, `path` the message ("ModelProto"), `base` is
  // the offset of data[0] in the file (for messages). `source` and `path` are not copied: they
  // must outlive the reader (string literals and the caller's file name).
  WireReader(std::string_view data, std::string_view source, std::string_view path, std::size_t base = 0);

  // The next field, or false at the end of the message.
  bool next(Field& f);

  // The message held by length-delimited field `f`, named `name` in messages; `index` >= 0 is
  // appended as "[index]" ("ModelProto.pieces[3]").
  WireReader sub(const Field& f, std::string_view name, std::int64_t index = -1) const;

  // Typed payloads; each checks the wire type (see the header comment).
  bool as_bool(const Field& f) const;
  std::int32_t as_int32(const Field& f) const;  // int32 and enums: the low 32 bits, as protobuf does
  float as_float(const Field& f) const;
  std::string_view as_bytes(const Field& f) const;  // string and bytes fields

  // Throws ModelError "<source>: <path>[.<field>] at byte <offset>: <what>".
  [[noreturn]] void fail(const Field& f, const std::string& what) const;
  [[noreturn]] void fail_at(std::size_t offset, const std::string& what) const;

  std::string_view source() const { return source_; }

 private:
  void expect(const Field& f, WireType t) const;
  std::uint64_t read_varint(const char* what);

  std::string_view data_;
  std::size_t pos_ = 0;
  std::string_view source_;
  std::string_view path_;
  std::size_t base_ = 0;
  std::int64_t index_ = -1;
};

// "varint", "fixed64", "bytes", "fixed32".
const char* wire_type_name(WireType t);

}  // namespace lli::pb
