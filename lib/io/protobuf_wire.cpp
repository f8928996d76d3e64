#include "io/protobuf_wire.h"

#include <cstring>

#include <fmt/format.h>

#include "lli/error.h"

namespace lli::pb {

namespace {
constexpr std::uint32_t kMaxFieldNumber = (1u << 29) - 1;
}

const char* wire_type_name(WireType t) {
  switch (t) {
    case WireType::varint: return "varint";
    case WireType::fixed64: return "fixed64";
    case WireType::bytes: return "bytes";
    case WireType::fixed32: return "fixed32";
  }
  return "?";
}

WireReader::WireReader(std::string_view data, std::string_view source, std::string_view path, std::size_t base)
    : data_(data), source_(source), path_(path), base_(base) {}

void WireReader::fail_at(std::size_t offset, const std::string& what) const {
  const std::string index = index_ >= 0 ? fmt::format("[{}]", index_) : "";
  throw ModelError(fmt::format("{}: {}{} at byte {}: {}", source_, path_, index, offset, what));
}

void WireReader::fail(const Field& f, const std::string& what) const {
  fail_at(f.offset, fmt::format("field {}: {}", f.number, what));
}

std::uint64_t WireReader::read_varint(const char* what) {
  const std::size_t start = pos_;
  std::uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    if (pos_ >= data_.size()) fail_at(base_ + start, fmt::format("{} varint cut by the end of the message", what));
    const auto b = static_cast<unsigned char>(data_[pos_++]);
    v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) return v;
  }
  fail_at(base_ + start, fmt::format("{} varint longer than 10 bytes", what));
}

bool WireReader::next(Field& f) {
  if (pos_ >= data_.size()) return false;
  f = Field{};
  f.offset = base_ + pos_;
  const std::uint64_t tag = read_varint("tag");
  const std::uint64_t number = tag >> 3;
  const unsigned type = static_cast<unsigned>(tag & 7);
  if (number == 0 || number > kMaxFieldNumber)
    fail_at(f.offset, fmt::format("field number {} (expected 1 to {})", number, kMaxFieldNumber));
  f.number = static_cast<std::uint32_t>(number);
  switch (type) {
    case 0:
      f.type = WireType::varint;
      f.value = read_varint("value");
      break;
    case 1:
    case 5: {
      const std::size_t n = type == 1 ? 8 : 4;
      f.type = type == 1 ? WireType::fixed64 : WireType::fixed32;
      if (data_.size() - pos_ < n)
        fail(f, fmt::format("{}-byte value cut by the end of the message ({} bytes left)", n, data_.size() - pos_));
      unsigned char b[8] = {};
      std::memcpy(b, data_.data() + pos_, n);
      for (std::size_t i = 0; i < n; ++i) f.value |= static_cast<std::uint64_t>(b[i]) << (8 * i);
      pos_ += n;
      break;
    }
    case 2: {
      f.type = WireType::bytes;
      const std::uint64_t len = read_varint("length");
      if (len > data_.size() - pos_)
        fail(f, fmt::format("length {} runs past the end of the message ({} bytes left)", len, data_.size() - pos_));
      f.bytes = data_.substr(pos_, static_cast<std::size_t>(len));
      pos_ += static_cast<std::size_t>(len);
      break;
    }
    case 3:
    case 4: fail(f, "group wire type (deprecated, not used by this format)");
    default: fail(f, fmt::format("invalid wire type {}", type));
  }
  return true;
}

WireReader WireReader::sub(const Field& f, std::string_view name, std::int64_t index) const {
  expect(f, WireType::bytes);
  const std::size_t base = base_ + static_cast<std::size_t>(f.bytes.data() - data_.data());
  WireReader r(f.bytes, source_, name, base);
  r.index_ = index;
  return r;
}

void WireReader::expect(const Field& f, WireType t) const {
  if (f.type != t) fail(f, fmt::format("wire type {}, expected {}", wire_type_name(f.type), wire_type_name(t)));
}

bool WireReader::as_bool(const Field& f) const {
  expect(f, WireType::varint);
  return f.value != 0;
}

std::int32_t WireReader::as_int32(const Field& f) const {
  expect(f, WireType::varint);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(f.value & 0xffffffffu));
}

float WireReader::as_float(const Field& f) const {
  expect(f, WireType::fixed32);
  const auto bits = static_cast<std::uint32_t>(f.value);
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

std::string_view WireReader::as_bytes(const Field& f) const {
  expect(f, WireType::bytes);
  return f.bytes;
}

}  // namespace lli::pb
