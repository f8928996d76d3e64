// Prompt files and inline prompt flags (see lli/prompt.h for the schema and the rules).
#include "lli/prompt.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/bounded_parse.h"
#include "io/json_util.h"
#include "lli/error.h"
#include "lli/fs.h"

namespace lli {

using nlohmann::json;

const char* coords_name(Coords c) { return c == Coords::normalized ? "normalized" : "pixels"; }

bool Prompt::empty() const { return no_geometry() && text.empty(); }

namespace {
using json_util::check_keys;
using json_util::Ctx;
using json_util::type_name;

std::string fmt_num(double v) {
  std::ostringstream ss;
  ss.precision(10);
  ss << v;
  return ss.str();
}

double get_number(const Ctx& c, const json& v, const std::string& path) {
  if (!v.is_number()) c.fail(path, "expected a number, got " + type_name(v));
  double d = v.get<double>();
  if (!std::isfinite(d)) c.fail(path, "number is not finite");
  return d;
}

const std::string& get_string(const Ctx& c, const json& v, const std::string& path) {
  if (!v.is_string()) c.fail(path, "expected a string, got " + type_name(v));
  return v.get_ref<const std::string&>();
}

bool get_label(const Ctx& c, const json& obj, const std::string& path) {
  auto it = obj.find("label");
  if (it == obj.end()) return true;
  const std::string& s = get_string(c, *it, path + ".label");
  if (s == "positive") return true;
  if (s == "negative") return false;
  c.fail(path + ".label", "unknown label " + quote_excerpt(s) + " (expected \"positive\" or \"negative\")");
}

const json& get_array(const Ctx& c, const json& v, const std::string& path) {
  if (!v.is_array()) c.fail(path, "expected an array, got " + type_name(v));
  return v;
}

void check_count(const Ctx& c, std::size_t n, std::size_t max, const std::string& path,
                 const std::string& what) {
  if (n > max)
    c.fail(path, std::to_string(n) + " " + what + " is more than the limit of " + std::to_string(max));
}

double check_width(const Ctx& c, double w, const std::string& path) {
  if (!(w > 0) || w > PromptLimits::max_stroke_width)
    c.fail(path, "width = " + fmt_num(w) + " must be > 0 and <= " +
                     fmt_num(PromptLimits::max_stroke_width));
  return w;
}

void check_box_order(const Ctx& c, const Box& b, const std::string& path) {
  if (!(b.x0 < b.x1))
    c.fail(path, "box is inverted or empty: x0 = " + fmt_num(b.x0) + " must be < x1 = " + fmt_num(b.x1));
  if (!(b.y0 < b.y1))
    c.fail(path, "box is inverted or empty: y0 = " + fmt_num(b.y0) + " must be < y1 = " + fmt_num(b.y1));
}

void check_limits(const Ctx& c, const Prompt& p) {
  check_count(c, p.strokes.size(), PromptLimits::max_items, "strokes", "strokes");
  check_count(c, p.points.size(), PromptLimits::max_items, "points", "points");
  check_count(c, p.boxes.size(), PromptLimits::max_items, "boxes", "boxes");
  std::size_t total = p.points.size();
  for (const auto& s : p.strokes) total += s.points.size();
  check_count(c, total, PromptLimits::max_total_points, "", "points in total (strokes and points)");
  check_count(c, p.text.size(), PromptLimits::max_text_bytes, "text", "bytes of text");
}

Stroke parse_stroke(const Ctx& c, const json& v, const std::string& path, std::size_t& n_points) {
  if (!v.is_object()) c.fail(path, "expected an object, got " + type_name(v));
  check_keys(c, v, path, {"points", "width", "label"});
  Stroke s;
  auto pts = v.find("points");
  if (pts == v.end()) c.fail(path, "missing key 'points'");
  const json& arr = get_array(c, *pts, path + ".points");
  if (arr.empty()) c.fail(path + ".points", "a stroke needs at least one point");
  n_points += arr.size();
  check_count(c, n_points, PromptLimits::max_total_points, path + ".points",
              "points in total (strokes and points)");
  s.points.reserve(arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    std::string pp = path + ".points[" + std::to_string(i) + "]";
    const json& xy = arr[i];
    if (!xy.is_array() || xy.size() != 2)
      c.fail(pp, "expected [x, y], got " + (xy.is_array() ? "an array of " + std::to_string(xy.size()) : type_name(xy)));
    s.points.push_back({get_number(c, xy[0], pp + "[0]"), get_number(c, xy[1], pp + "[1]")});
  }
  auto w = v.find("width");
  if (w != v.end()) s.width = check_width(c, get_number(c, *w, path + ".width"), path + ".width");
  s.positive = get_label(c, v, path);
  return s;
}

Point parse_point(const Ctx& c, const json& v, const std::string& path) {
  if (!v.is_object()) c.fail(path, "expected an object {\"x\": .., \"y\": ..}, got " + type_name(v));
  check_keys(c, v, path, {"x", "y", "label"});
  Point p;
  for (const char* k : {"x", "y"}) {
    auto it = v.find(k);
    if (it == v.end()) c.fail(path, std::string("missing key '") + k + "'");
    (k[0] == 'x' ? p.x : p.y) = get_number(c, *it, path + "." + k);
  }
  p.positive = get_label(c, v, path);
  return p;
}

Box parse_box(const Ctx& c, const json& v, const std::string& path) {
  if (!v.is_object()) c.fail(path, "expected an object {\"box\": [x0, y0, x1, y1]}, got " + type_name(v));
  check_keys(c, v, path, {"box", "phrase"});
  auto it = v.find("box");
  if (it == v.end()) c.fail(path, "missing key 'box'");
  const json& a = get_array(c, *it, path + ".box");
  if (a.size() != 4) c.fail(path + ".box", "expected [x0, y0, x1, y1], got " + std::to_string(a.size()) + " numbers");
  Box b;
  double* f[4] = {&b.x0, &b.y0, &b.x1, &b.y1};
  for (int i = 0; i < 4; ++i) *f[i] = get_number(c, a[i], path + ".box[" + std::to_string(i) + "]");
  check_box_order(c, b, path + ".box");
  auto ph = v.find("phrase");
  if (ph != v.end()) {
    b.phrase = get_string(c, *ph, path + ".phrase");
    check_count(c, b.phrase.size(), PromptLimits::max_phrase_bytes, path + ".phrase", "bytes of phrase");
  }
  return b;
}

}  // namespace

Prompt parse_prompt(std::string_view json_text, const std::string& source) {
  if (json_text.size() > PromptLimits::max_file_bytes)
    throw InputError(fmt_size_error(source, json_text.size(), PromptLimits::max_file_bytes));
  json doc = parse_json_bounded(json_text, source, ExitCode::bad_input);
  Ctx c{source};
  if (!doc.is_object()) c.fail("", "expected a JSON object at the top level, got " + type_name(doc));
  check_keys(c, doc, "", {"strokes", "points", "boxes", "text", "coords"});

  Prompt p;
  p.source = source;
  if (auto it = doc.find("coords"); it != doc.end()) {
    const std::string& s = get_string(c, *it, "coords");
    if (s == "pixels") p.coords = Coords::pixels;
    else if (s == "normalized") p.coords = Coords::normalized;
    else c.fail("coords", "unknown coords " + quote_excerpt(s) + " (expected \"pixels\" or \"normalized\")");
  }
  std::size_t n_points = 0;
  if (auto it = doc.find("points"); it != doc.end()) {
    const json& a = get_array(c, *it, "points");
    check_count(c, a.size(), PromptLimits::max_items, "points", "points");
    n_points += a.size();
    for (std::size_t i = 0; i < a.size(); ++i)
      p.points.push_back(parse_point(c, a[i], "points[" + std::to_string(i) + "]"));
  }
  if (auto it = doc.find("strokes"); it != doc.end()) {
    const json& a = get_array(c, *it, "strokes");
    check_count(c, a.size(), PromptLimits::max_items, "strokes", "strokes");
    for (std::size_t i = 0; i < a.size(); ++i)
      p.strokes.push_back(parse_stroke(c, a[i], "strokes[" + std::to_string(i) + "]", n_points));
  }
  if (auto it = doc.find("boxes"); it != doc.end()) {
    const json& a = get_array(c, *it, "boxes");
    check_count(c, a.size(), PromptLimits::max_items, "boxes", "boxes");
    for (std::size_t i = 0; i < a.size(); ++i)
      p.boxes.push_back(parse_box(c, a[i], "boxes[" + std::to_string(i) + "]"));
  }
  if (auto it = doc.find("text"); it != doc.end()) {
    p.text = get_string(c, *it, "text");
    check_count(c, p.text.size(), PromptLimits::max_text_bytes, "text", "bytes of text");
  }
  check_limits(c, p);
  return p;
}

Prompt load_prompt(const std::string& path) {
  std::string name = path == "-" ? "<stdin>" : path;
  std::string text = read_file(path, PromptLimits::max_file_bytes);
  Prompt p = parse_prompt(text, name);
  if (p.empty())
    throw InputError(name + ": the prompt file is empty (no strokes, points, boxes or text); see README, 'Prompt files'");
  return p;
}

// ---- to_pixels -------------------------------------------------------------------------------

namespace {

struct RangeCheck {
  const Ctx& c;
  const Prompt& p;
  int W, H;

  std::string loc(const std::string& origin, const std::string& path) const {
    return origin.empty() ? path : origin;
  }
  // Checks a point coordinate (x: axis 0, y: axis 1) and converts it.
  double point_coord(double v, int axis, const std::string& where) const {
    int n = axis == 0 ? W : H;
    const char* name = axis == 0 ? "x" : "y";
    if (p.coords == Coords::normalized) {
      if (!(v >= 0 && v <= 1))
        c.fail(where, std::string(name) + " = " + fmt_num(v) + " is outside 0..1 (coords are normalized)");
      return std::min(v * n, static_cast<double>(n - 1));
    }
    if (!(v >= 0 && v <= n - 1))
      c.fail(where, std::string(name) + " = " + fmt_num(v) + " is outside the image (0.." +
                        std::to_string(n - 1) + ")");
    return v;
  }
  double box_coord(double v, int axis, const char* name, const std::string& where) const {
    int n = axis == 0 ? W : H;
    if (p.coords == Coords::normalized) {
      if (!(v >= 0 && v <= 1))
        c.fail(where, std::string(name) + " = " + fmt_num(v) + " is outside 0..1 (coords are normalized)");
      return v * n;
    }
    if (!(v >= 0 && v <= n))
      c.fail(where, std::string(name) + " = " + fmt_num(v) + " is outside the image (0.." +
                        std::to_string(n) + ")");
    return v;
  }
};

}  // namespace

Prompt to_pixels(const Prompt& prompt, int width, int height) {
  if (width <= 0 || height <= 0)
    throw UsageError(prompt.source + ": image size " + std::to_string(width) + "x" +
                     std::to_string(height) + " is not valid for a prompt");
  Ctx c{prompt.source};
  RangeCheck r{c, prompt, width, height};
  Prompt out = prompt;
  out.coords = Coords::pixels;
  for (std::size_t i = 0; i < prompt.points.size(); ++i) {
    const Point& in = prompt.points[i];
    std::string base = r.loc(in.origin, "points[" + std::to_string(i) + "]");
    bool inl = !in.origin.empty();
    out.points[i].x = r.point_coord(in.x, 0, inl ? base : base + ".x");
    out.points[i].y = r.point_coord(in.y, 1, inl ? base : base + ".y");
  }
  for (std::size_t i = 0; i < prompt.strokes.size(); ++i) {
    const Stroke& in = prompt.strokes[i];
    bool inl = !in.origin.empty();
    std::string base = r.loc(in.origin, "strokes[" + std::to_string(i) + "]");
    check_width(c, in.width, inl ? base : base + ".width");
    for (std::size_t j = 0; j < in.points.size(); ++j) {
      std::string pp = base + ".points[" + std::to_string(j) + "]";
      out.strokes[i].points[j].x = r.point_coord(in.points[j].x, 0, inl ? base : pp + "[0]");
      out.strokes[i].points[j].y = r.point_coord(in.points[j].y, 1, inl ? base : pp + "[1]");
    }
  }
  for (std::size_t i = 0; i < prompt.boxes.size(); ++i) {
    const Box& in = prompt.boxes[i];
    bool inl = !in.origin.empty();
    std::string base = r.loc(in.origin, "boxes[" + std::to_string(i) + "]");
    auto at = [&](int k) { return inl ? base : base + ".box[" + std::to_string(k) + "]"; };
    Box& b = out.boxes[i];
    b.x0 = r.box_coord(in.x0, 0, "x0", at(0));
    b.y0 = r.box_coord(in.y0, 1, "y0", at(1));
    b.x1 = r.box_coord(in.x1, 0, "x1", at(2));
    b.y1 = r.box_coord(in.y1, 1, "y1", at(3));
    check_box_order(c, b, inl ? base : base + ".box");
  }
  return out;
}

// ---- inline flags ----------------------------------------------------------------------------

namespace {

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return std::string(s.substr(a, b - a));
}

std::vector<std::string> split(std::string_view s, char sep, std::size_t max_parts = SIZE_MAX) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (out.size() + 1 < max_parts) {
    std::size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) break;
    out.emplace_back(s.substr(start, pos - start));
    start = pos + 1;
  }
  out.emplace_back(s.substr(start));
  return out;
}

[[noreturn]] void flag_fail(const char* flag, const std::string& value, const std::string& msg,
                            const char* syntax) {
  throw UsageError(std::string(flag) + " " + quote_excerpt(value) + ": " + msg + " (expected " + syntax + ")");
}

double flag_number(const char* flag, const std::string& value, const std::string& field,
                   const char* what, const char* syntax) {
  std::string t = trim(field);
  if (t.empty()) flag_fail(flag, value, std::string(what) + " is missing", syntax);
  errno = 0;
  char* end = nullptr;
  double d = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size())
    flag_fail(flag, value, std::string(what) + " " + quote_excerpt(t) + " is not a number", syntax);
  if (errno == ERANGE || !std::isfinite(d))
    flag_fail(flag, value, std::string(what) + " " + quote_excerpt(t) + " is not a finite number", syntax);
  return d;
}

constexpr const char* kPointSyntax = "x,y[,neg]";
constexpr const char* kBoxSyntax = "x0,y0,x1,y1[,phrase]";
constexpr const char* kStrokeSyntax = "\"[neg:]x,y x,y ...\"";

}  // namespace

Point parse_point_flag(const std::string& value) {
  auto f = split(value, ',');
  if (f.size() < 2 || f.size() > 3)
    flag_fail("--point", value, "expected 2 or 3 comma-separated fields, got " + std::to_string(f.size()), kPointSyntax);
  Point p;
  p.x = flag_number("--point", value, f[0], "x", kPointSyntax);
  p.y = flag_number("--point", value, f[1], "y", kPointSyntax);
  if (f.size() == 3) {
    std::string l = trim(f[2]);
    if (l == "neg" || l == "negative") p.positive = false;
    else if (l == "pos" || l == "positive") p.positive = true;
    else flag_fail("--point", value, "unknown label " + quote_excerpt(l) + " (neg, negative, pos or positive)", kPointSyntax);
  }
  p.origin = "--point " + value;
  return p;
}

Box parse_box_flag(const std::string& value) {
  auto f = split(value, ',', 5);
  if (f.size() < 4)
    flag_fail("--box", value, "expected 4 numbers, got " + std::to_string(f.size()) + " fields", kBoxSyntax);
  Box b;
  b.x0 = flag_number("--box", value, f[0], "x0", kBoxSyntax);
  b.y0 = flag_number("--box", value, f[1], "y0", kBoxSyntax);
  b.x1 = flag_number("--box", value, f[2], "x1", kBoxSyntax);
  b.y1 = flag_number("--box", value, f[3], "y1", kBoxSyntax);
  if (!(b.x0 < b.x1)) flag_fail("--box", value, "box is inverted or empty: x0 must be < x1", kBoxSyntax);
  if (!(b.y0 < b.y1)) flag_fail("--box", value, "box is inverted or empty: y0 must be < y1", kBoxSyntax);
  if (f.size() == 5) b.phrase = trim(f[4]);
  if (b.phrase.size() > PromptLimits::max_phrase_bytes)
    flag_fail("--box", value.substr(0, 40) + "...", "phrase is longer than " +
                  std::to_string(PromptLimits::max_phrase_bytes) + " bytes", kBoxSyntax);
  b.origin = "--box " + value;
  return b;
}

Stroke parse_stroke_flag(const std::string& value, double width) {
  Stroke s;
  std::string body = trim(value);
  if (body.rfind("neg:", 0) == 0) {
    s.positive = false;
    body = body.substr(4);
  } else if (body.rfind("pos:", 0) == 0) {
    body = body.substr(4);
  }
  std::istringstream in(body);
  std::string tok;
  while (in >> tok) {
    auto f = split(tok, ',');
    if (f.size() != 2)
      flag_fail("--stroke", value, "point " + quote_excerpt(tok) + " is not x,y", kStrokeSyntax);
    if (s.points.size() >= PromptLimits::max_total_points)
      flag_fail("--stroke", value.substr(0, 40) + "...", "more than " +
                    std::to_string(PromptLimits::max_total_points) + " points", kStrokeSyntax);
    s.points.push_back({flag_number("--stroke", value, f[0], "x", kStrokeSyntax),
                        flag_number("--stroke", value, f[1], "y", kStrokeSyntax)});
  }
  if (s.points.empty()) flag_fail("--stroke", value, "a stroke needs at least one point", kStrokeSyntax);
  if (!(width > 0) || width > PromptLimits::max_stroke_width)
    throw UsageError("--stroke width " + fmt_num(width) + " must be > 0 and <= " +
                     fmt_num(PromptLimits::max_stroke_width));
  s.width = width;
  s.origin = "--stroke " + value;
  return s;
}

Prompt parse_inline_prompt(const std::vector<std::string>& points,
                           const std::vector<std::string>& boxes,
                           const std::vector<std::string>& strokes, const std::string& text,
                           double stroke_width, Coords coords) {
  Prompt p;
  p.source = "command line";
  p.coords = coords;
  for (const auto& v : points) p.points.push_back(parse_point_flag(v));
  for (const auto& v : boxes) p.boxes.push_back(parse_box_flag(v));
  for (const auto& v : strokes) p.strokes.push_back(parse_stroke_flag(v, stroke_width));
  p.text = text;
  try {
    check_limits(Ctx{p.source}, p);
  } catch (const InputError& e) {
    throw UsageError(e.what());
  }
  return p;
}

void merge_prompt(Prompt& into, const Prompt& extra) {
  if (!extra.no_geometry() && !into.no_geometry() && into.coords != extra.coords)
    throw InputError(into.source + ": cannot merge " + coords_name(extra.coords) + " items from " +
                     extra.source + " into " + coords_name(into.coords) +
                     " coordinates (convert both with to_pixels first)");
  if (into.no_geometry()) into.coords = extra.coords;
  into.strokes.insert(into.strokes.end(), extra.strokes.begin(), extra.strokes.end());
  into.points.insert(into.points.end(), extra.points.begin(), extra.points.end());
  into.boxes.insert(into.boxes.end(), extra.boxes.begin(), extra.boxes.end());
  if (!extra.text.empty()) into.text = extra.text;
  check_limits(Ctx{into.source}, into);
}

std::string prompt_to_json(const Prompt& p, int indent) {
  json j = json::object();
  if (!p.strokes.empty()) {
    json a = json::array();
    for (const auto& s : p.strokes) {
      json pts = json::array();
      for (const auto& xy : s.points) pts.push_back({xy.x, xy.y});
      a.push_back({{"points", pts}, {"width", s.width}, {"label", s.positive ? "positive" : "negative"}});
    }
    j["strokes"] = a;
  }
  if (!p.points.empty()) {
    json a = json::array();
    for (const auto& pt : p.points)
      a.push_back({{"x", pt.x}, {"y", pt.y}, {"label", pt.positive ? "positive" : "negative"}});
    j["points"] = a;
  }
  if (!p.boxes.empty()) {
    json a = json::array();
    for (const auto& b : p.boxes) {
      json o = {{"box", {b.x0, b.y0, b.x1, b.y1}}};
      if (!b.phrase.empty()) o["phrase"] = b.phrase;
      a.push_back(o);
    }
    j["boxes"] = a;
  }
  if (!p.text.empty()) j["text"] = p.text;
  j["coords"] = coords_name(p.coords);
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace lli
