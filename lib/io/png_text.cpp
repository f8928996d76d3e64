// Ref: PNG specification (ISO/IEC 15948), chunk layout and CRC (5.3), tEXt / iTXt (11.3.4).
#include "io/png_text.h"

#include <array>
#include <cstring>

#include "lli/error.h"

namespace lli {

namespace {

constexpr std::string_view kSignature("\x89PNG\r\n\x1a\n", 8);

const std::array<std::uint32_t, 256>& crc_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  return table;
}

std::uint32_t be32(std::string_view s, std::size_t at) {
  auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(s[at + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

void put_be32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

struct Chunk {
  std::size_t offset;  // of the length field
  std::string_view type;
  std::string_view data;
};

// Every chunk up to and including IEND; InputError on a broken structure.
std::vector<Chunk> chunks_of(std::string_view png, const std::string& name) {
  if (png.size() < kSignature.size() || png.substr(0, kSignature.size()) != kSignature)
    throw InputError(name + ": not a PNG file (no PNG signature)");
  std::vector<Chunk> out;
  std::size_t at = kSignature.size();
  while (true) {
    if (png.size() - at < 12) throw InputError(name + ": truncated PNG (no IEND chunk)");
    const std::uint32_t len = be32(png, at);
    if (len > 0x7fffffffu || len > png.size() - at - 12)
      throw InputError(name + ": PNG chunk at byte " + std::to_string(at) + " claims " + std::to_string(len) +
                       " bytes, more than the file holds");
    Chunk c{at, png.substr(at + 4, 4), png.substr(at + 8, len)};
    const std::uint32_t stored = be32(png, at + 8 + len);
    if (crc32(png.substr(at + 4, 4 + len)) != stored)
      throw InputError(name + ": PNG chunk '" + std::string(c.type) + "' at byte " + std::to_string(at) +
                       " has a bad CRC (corrupt file)");
    out.push_back(c);
    at += 12 + len;
    if (c.type == "IEND") return out;
  }
}

void check_key(const std::string& key) {
  bool ok = !key.empty() && key.size() <= 79 && key.front() != ' ' && key.back() != ' ' &&
            key.find("  ") == std::string::npos;
  for (unsigned char ch : key) ok = ok && ch >= 32 && ch <= 126;
  if (!ok) throw UsageError("PNG text key '" + key + "' is not 1-79 printable ASCII characters without leading, "
                            "trailing or double spaces");
}

std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (ch < 0x80) {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back(static_cast<char>(0xc0 | (ch >> 6)));
      out.push_back(static_cast<char>(0x80 | (ch & 0x3f)));
    }
  }
  return out;
}

}  // namespace

std::uint32_t crc32(std::string_view bytes, std::uint32_t crc) {
  const auto& t = crc_table();
  std::uint32_t c = crc ^ 0xffffffffu;
  for (unsigned char ch : bytes) c = t[(c ^ ch) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::string add_png_text(std::string_view png, const PngText& text, const std::string& name) {
  const auto chunks = chunks_of(png, name);
  const std::size_t iend = chunks.back().offset;
  std::string out(png.substr(0, iend));
  for (const auto& [key, value] : text) {
    check_key(key);
    // iTXt: keyword \0, compression flag 0, method 0, language tag "" \0, translated keyword "" \0, text
    std::string body = "iTXt" + key;
    body.push_back('\0');
    body.push_back('\0');
    body.push_back('\0');
    body.push_back('\0');
    body.push_back('\0');
    body += value;
    if (body.size() - 4 > 0x7fffffffu) throw UsageError("PNG text '" + key + "' is too long");
    put_be32(out, static_cast<std::uint32_t>(body.size() - 4));
    out += body;
    put_be32(out, crc32(body));
  }
  out.append(png.substr(iend));
  return out;
}

PngText read_png_text(std::string_view png, const std::string& name) {
  PngText out;
  for (const auto& c : chunks_of(png, name)) {
    if (c.type != "tEXt" && c.type != "iTXt") continue;
    const auto nul = c.data.find('\0');
    if (nul == std::string_view::npos || nul == 0 || nul > 79)
      throw InputError(name + ": PNG " + std::string(c.type) + " chunk has no valid keyword");
    std::string key(c.data.substr(0, nul));
    std::string_view rest = c.data.substr(nul + 1);
    if (c.type == "tEXt") {
      out.emplace_back(latin1_to_utf8(key), latin1_to_utf8(rest));
      continue;
    }
    if (rest.size() < 2) throw InputError(name + ": PNG iTXt chunk '" + key + "' is truncated");
    if (rest[0] != '\0') continue;  // compressed: lli never writes these
    rest = rest.substr(2);
    const auto lang_end = rest.find('\0');
    if (lang_end == std::string_view::npos) throw InputError(name + ": PNG iTXt chunk '" + key + "' is truncated");
    rest = rest.substr(lang_end + 1);
    const auto tr_end = rest.find('\0');
    if (tr_end == std::string_view::npos) throw InputError(name + ": PNG iTXt chunk '" + key + "' is truncated");
    out.emplace_back(latin1_to_utf8(key), std::string(rest.substr(tr_end + 1)));
  }
  return out;
}

}  // namespace lli
