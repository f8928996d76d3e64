// PNG text metadata: UTF-8 key/value pairs stored as iTXt chunks (uncompressed), so a generated
// image carries the parameters that made it (prompt, layout, seed, steps, scheduler, model, ...).
// Torch-free (lli_base).
//
// add_png_text() inserts the chunks into encoded PNG bytes just before IEND (other chunks and the
// pixels are untouched). read_png_text() returns every tEXt (Latin-1, converted to UTF-8) and
// uncompressed iTXt chunk in file order; compressed iTXt / zTXt chunks are skipped (lli never
// writes them). Keys: 1-79 bytes of printable Latin-1 without leading/trailing/double spaces (the
// PNG rule); lli uses ASCII keys only.
// Errors: InputError naming `name` for bytes that are not a PNG or whose chunk structure is broken
// (bad length, CRC mismatch, no IEND); UsageError for an invalid key.
// Ref: PNG specification (ISO/IEC 15948, W3C 2003), sections 5.3 (chunk layout, CRC-32) and 11.3.4
// (tEXt, iTXt).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lli {

using PngText = std::vector<std::pair<std::string, std::string>>;  // (key, UTF-8 value), in order

// Returns `png` with one iTXt chunk per entry inserted before IEND.
std::string add_png_text(std::string_view png, const PngText& text, const std::string& name = "png");

// The text chunks of a PNG file's bytes.
PngText read_png_text(std::string_view png, const std::string& name = "png");

// CRC-32 as PNG (and zlib) define it, over `bytes`, continuing from `crc` (0 to start).
std::uint32_t crc32(std::string_view bytes, std::uint32_t crc = 0);

}  // namespace lli
