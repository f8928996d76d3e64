// Prompts: strokes, points, boxes (with optional phrases) and text, from a JSON prompt file shared
// by every tool, or from inline flags (--point, --box, --stroke). Torch-free (lli_base).
//
// Prompt file schema (all keys optional; an unknown top-level or item key is an error, to catch
// typos):
//   {
//     "strokes": [{"points": [[x, y], ...], "width": 8, "label": "positive"}],
//     "points":  [{"x": 10, "y": 20, "label": "negative"}],
//     "boxes":   [{"box": [x0, y0, x1, y1], "phrase": "a red car"}],
//     "text":    "the dog on the left",
//     "coords":  "pixels"            // or "normalized" (0..1 of the image width/height)
//   }
// Rules: label is "positive" (default) or "negative"; stroke width is in PIXELS whatever `coords`
// says, default 8, 0 < width <= 1024; a stroke has >= 1 point; a box has x0 < x1 and y0 < y1;
// numbers must be finite (JSON has no NaN/inf; an overflowing literal such as 1e400 is a syntax
// error); limits: file <= 16 MiB, <= 100,000 points in total (stroke points + points), <= 1000
// strokes, <= 1000 points entries, <= 1000 boxes, text <= 10,000 bytes, phrase <= 1,000 bytes.
//
// Coordinates are checked against the image only in to_pixels(), because the image size is not
// known when the prompt is parsed: pixels: points and stroke points 0 <= x <= W-1, 0 <= y <= H-1
// (pixel indices, fractional allowed); boxes 0 <= x0 < x1 <= W, 0 <= y0 < y1 <= H (the far edge
// is inclusive); normalized: every coordinate in 0..1, converted by x * W, y * H (points and stroke
// points then clamped to W-1, H-1 so that 1.0 means the last pixel).
//
// Errors (all one line):
//   JSON syntax:  InputError  "prompt.json:3:14: syntax error: ..."   (line:column, 1-based)
//   validation:   InputError  "prompt.json: strokes[0].points[2][0]: x = -5 is outside the image (0..639)"
//   inline flags: UsageError  "--point '10,x': y 'x' is not a number (expected x,y[,neg])"
// Items that came from inline flags carry their flag text in `origin`, and messages about them name
// the flag instead of a JSON path.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lli {

enum class Coords { pixels, normalized };

const char* coords_name(Coords c);  // "pixels" / "normalized"

struct XY {
  double x = 0;
  double y = 0;
};

struct Point {
  double x = 0;
  double y = 0;
  bool positive = true;
  std::string origin;  // "" = from the prompt file; else the inline flag, e.g. "--point 10,20,neg"
};

struct Stroke {
  std::vector<XY> points;  // >= 1
  double width = 8;        // brush diameter in pixels (never normalized)
  bool positive = true;
  std::string origin;
};

struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // x0 < x1, y0 < y1
  std::string phrase;                     // may be empty (GLIGEN needs one; SAM ignores it)
  std::string origin;
};

struct Prompt {
  std::vector<Stroke> strokes;
  std::vector<Point> points;
  std::vector<Box> boxes;
  std::string text;
  Coords coords = Coords::pixels;
  std::string source = "prompt";  // file name used in messages ("<stdin>" for "-")

  // No strokes, points, boxes and no text.
  bool empty() const;
  // No strokes, points or boxes (text may be present).
  bool no_geometry() const { return strokes.empty() && points.empty() && boxes.empty(); }
};

// Limits on prompt size (absurd inputs are rejected before any work).
struct PromptLimits {
  static constexpr std::size_t max_file_bytes = 16u << 20;
  static constexpr std::size_t max_total_points = 100000;
  static constexpr std::size_t max_items = 1000;  // per list: strokes, points, boxes
  static constexpr std::size_t max_text_bytes = 10000;
  static constexpr std::size_t max_phrase_bytes = 1000;
  static constexpr double max_stroke_width = 1024;
  static constexpr double default_stroke_width = 8;
};

// Parses prompt JSON text; `source` names it in messages. Coordinates stay in the file's `coords`
// (not range-checked here; see to_pixels). Throws InputError.
Prompt parse_prompt(std::string_view json_text, const std::string& source = "prompt");

// Reads and parses a prompt file ("-" = stdin, named "<stdin>"). Throws InputError, also for a
// file that holds nothing ({}): a prompt file that says nothing is a bad input file.
Prompt load_prompt(const std::string& path);

// Validates every coordinate against a width x height image and returns the prompt in pixels
// (normalized coordinates multiplied by width/height). Throws InputError naming prompt.source and
// the JSON path (or the item's origin flag) and the value; UsageError if width/height <= 0.
Prompt to_pixels(const Prompt& prompt, int width, int height);

// Inline flags. Each throws UsageError naming the flag and the value on bad syntax; coordinates
// are range-checked later by to_pixels (the returned items have `origin` set to "--flag value").
//   --point  "x,y[,label]"           label: neg|negative|pos|positive (default positive)
//   --box    "x0,y0,x1,y1[,phrase]"  the phrase is everything after the 4th comma (may contain commas)
//   --stroke "x,y x,y ..."           positive; prefix "neg:" for a negative stroke
//                                    ("neg:10,10 20,20"; "pos:" is accepted too); width = `width`
Point parse_point_flag(const std::string& value);
Box parse_box_flag(const std::string& value);
Stroke parse_stroke_flag(const std::string& value,
                         double width = PromptLimits::default_stroke_width);

// Builds a Prompt (coords = `coords`, source "command line") from the repeated flag values and an
// optional --text. Applies the same count limits as files.
Prompt parse_inline_prompt(const std::vector<std::string>& points,
                           const std::vector<std::string>& boxes,
                           const std::vector<std::string>& strokes, const std::string& text = "",
                           double stroke_width = PromptLimits::default_stroke_width,
                           Coords coords = Coords::pixels);

// Appends extra's strokes, points and boxes to `into` (file items keep their indices, so their
// JSON paths in messages stay right); a non-empty extra.text replaces into.text (command line
// wins over the file). Both must use the same coords: call it after to_pixels() on both, or
// InputError. Limits are checked on the result.
void merge_prompt(Prompt& into, const Prompt& extra);

// Serialises a prompt to JSON in the file schema (parse_prompt(prompt_to_json(p)) == p, minus
// `origin` and `source`). indent < 0 = compact, one line. Used for session records.
std::string prompt_to_json(const Prompt& prompt, int indent = -1);

}  // namespace lli
