// Ref: haotian-liu/LLaVA llava/mm_utils.py expand2square (see llava_grounding.h).
#include "pipelines/llava_grounding.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "lli/error.h"

namespace lli::pipelines {

std::string llava_grounding_question(const std::string& phrase) {
  std::string p;
  bool space = false;
  for (unsigned char c : phrase) {
    if (c < 0x20 || c == 0x7f || c == ' ') {
      space = !p.empty();
      continue;
    }
    if (space) p += ' ';
    space = false;
    p += static_cast<char>(c);
  }
  if (p.empty()) throw UsageError("--text: the phrase is empty");
  const char last = p.back();
  if (last != '.' && last != '?' && last != '!') p += '.';
  return "Please provide the bounding box coordinate of the region this sentence describes: " + p;
}

namespace {

// A plain decimal at s[i] ("0.21", "1", ".5", "1."); advances i. No sign, exponent or hex.
std::optional<double> read_number(const std::string& s, std::size_t& i) {
  const std::size_t start = i;
  bool digits = false;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, digits = true;
  }
  if (!digits || i - start > 32) return std::nullopt;
  return std::strtod(s.substr(start, i - start).c_str(), nullptr);
}

void skip_spaces(const std::string& s, std::size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
}

// The box starting at the '[' at s[i], or nullopt.
std::optional<std::array<double, 4>> box_at(const std::string& s, std::size_t i) {
  std::array<double, 4> b{};
  ++i;  // '['
  for (int k = 0; k < 4; ++k) {
    skip_spaces(s, i);
    auto v = read_number(s, i);
    if (!v) return std::nullopt;
    b[static_cast<std::size_t>(k)] = *v;
    skip_spaces(s, i);
    const char want = k < 3 ? ',' : ']';
    if (i >= s.size() || s[i] != want) return std::nullopt;
    ++i;
  }
  for (double v : b)
    if (!(v >= 0.0 && v <= 1.0)) return std::nullopt;
  if (!(b[0] < b[2] && b[1] < b[3])) return std::nullopt;
  return b;
}

}  // namespace

std::optional<std::array<double, 4>> parse_llava_box(const std::string& answer) {
  for (std::size_t i = answer.find('['); i != std::string::npos; i = answer.find('[', i + 1))
    if (auto b = box_at(answer, i)) return b;
  return std::nullopt;
}

PixelBox llava_square_box_to_pixels(const std::array<double, 4>& box, int width, int height) {
  if (width <= 0 || height <= 0)
    throw UsageError("llava_square_box_to_pixels: image size " + std::to_string(width) + "x" + std::to_string(height));
  const int side = std::max(width, height);
  const double px = (side - width) / 2, py = (side - height) / 2;  // integer division, as expand2square
  auto cx = [&](double v) { return std::clamp(v * side - px, 0.0, static_cast<double>(width)); };
  auto cy = [&](double v) { return std::clamp(v * side - py, 0.0, static_cast<double>(height)); };
  return {cx(box[0]), cy(box[1]), cx(box[2]), cy(box[3])};
}

}  // namespace lli::pipelines
