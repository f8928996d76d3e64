// Prompt files and inline prompt flags: every validator path and its message.
#include "test_util.h"

#include <fstream>
#include <string>

#include "lli/error.h"
#include "lli/prompt.h"

using namespace lli;

namespace {

// The message of the InputError thrown by parse_prompt(text, "p.json").
std::string parse_error(const std::string& text) {
  try {
    parse_prompt(text, "p.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no error>";
}

std::string pixels_error(const std::string& text, int w, int h) {
  Prompt p = parse_prompt(text, "p.json");
  try {
    to_pixels(p, w, h);
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no error>";
}

template <class F>
std::string usage_error(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("prompt file: full schema parses with defaults") {
  Prompt p = parse_prompt(R"({
    "strokes": [{"points": [[1, 2], [3.5, 4]], "width": 12, "label": "negative"},
                {"points": [[5, 6]]}],
    "points": [{"x": 10, "y": 20, "label": "negative"}, {"x": 0, "y": 0}],
    "boxes": [{"box": [1, 2, 30, 40], "phrase": "a red car"}, {"box": [0, 0, 5, 5]}],
    "text": "the dog on the left",
    "coords": "pixels"
  })", "p.json");
  REQUIRE(p.strokes.size() == 2);
  CHECK(p.strokes[0].points.size() == 2);
  CHECK(p.strokes[0].points[1].x == 3.5);
  CHECK(p.strokes[0].width == 12);
  CHECK_FALSE(p.strokes[0].positive);
  CHECK(p.strokes[1].width == 8);
  CHECK(p.strokes[1].positive);
  REQUIRE(p.points.size() == 2);
  CHECK(p.points[0].x == 10);
  CHECK(p.points[0].y == 20);
  CHECK_FALSE(p.points[0].positive);
  CHECK(p.points[1].positive);
  REQUIRE(p.boxes.size() == 2);
  CHECK(p.boxes[0].x1 == 30);
  CHECK(p.boxes[0].phrase == "a red car");
  CHECK(p.boxes[1].phrase.empty());
  CHECK(p.text == "the dog on the left");
  CHECK(p.coords == Coords::pixels);
  CHECK(p.source == "p.json");
  CHECK_FALSE(p.empty());
}

TEST_CASE("prompt file: empty object is an empty prompt, and text-only is not empty") {
  Prompt p = parse_prompt("{}", "p.json");
  CHECK(p.empty());
  CHECK(p.no_geometry());
  Prompt t = parse_prompt(R"({"text": "hi"})", "p.json");
  CHECK_FALSE(t.empty());
  CHECK(t.no_geometry());
}

TEST_CASE("prompt file: JSON syntax error reports file:line:column") {
  // The bad token 'x' is on line 3, column 14.
  std::string msg = parse_error("{\n  \"points\": [\n    {\"x\": 1, x}\n  ]\n}");
  CHECK(msg.rfind("p.json:3:14: ", 0) == 0);
  CHECK(msg.find("syntax error") != std::string::npos);
  CHECK(msg.find("[json.exception") == std::string::npos);
  // Truncated input: reported at the end.
  std::string eof = parse_error("{\"text\": \"a\"");
  CHECK(eof.rfind("p.json:1:", 0) == 0);
  // Empty input is a syntax error too.
  CHECK(parse_error("").rfind("p.json:1:1: ", 0) == 0);
}

TEST_CASE("prompt file: overflowing number 1e400 is rejected with a position") {
  // Reported at the start of the literal: line 2, column 9.
  std::string msg = parse_error("{\"points\":\n [{\"x\": 1e400, \"y\": 1}]}");
  CHECK(msg.rfind("p.json:2:9: ", 0) == 0);
  CHECK(msg.find("number overflow") != std::string::npos);
  CHECK(msg.find("1e400") != std::string::npos);
  // NaN / Infinity are not JSON.
  CHECK(parse_error("{\"points\": [{\"x\": NaN, \"y\": 1}]}").rfind("p.json:1:", 0) == 0);
  CHECK(parse_error("{\"points\": [{\"x\": Infinity, \"y\": 1}]}").rfind("p.json:1:", 0) == 0);
  // Large but finite numbers parse, then fail the range check.
  CHECK(pixels_error("{\"points\": [{\"x\": 1e300, \"y\": 1}]}", 64, 64) ==
        "p.json: points[0].x: x = 1e+300 is outside the image (0..63)");
}

TEST_CASE("prompt file: unknown keys are errors naming the path") {
  CHECK(parse_error(R"({"point": []})") ==
        "p.json: point: unknown key 'point' (allowed: strokes, points, boxes, text, coords)");
  CHECK(parse_error(R"({"points": [{"x": 1, "y": 2, "lable": "negative"}]})") ==
        "p.json: points[0].lable: unknown key 'lable' (allowed: x, y, label)");
  CHECK(parse_error(R"({"strokes": [{"points": [[1,2]], "size": 3}]})") ==
        "p.json: strokes[0].size: unknown key 'size' (allowed: points, width, label)");
  CHECK(parse_error(R"({"boxes": [{"box": [0,0,1,1], "text": "x"}]})") ==
        "p.json: boxes[0].text: unknown key 'text' (allowed: box, phrase)");
}

TEST_CASE("prompt file: wrong types and shapes") {
  CHECK(parse_error("[]") == "p.json: expected a JSON object at the top level, got an array");
  CHECK(parse_error(R"({"points": {}})") == "p.json: points: expected an array, got an object");
  CHECK(parse_error(R"({"points": [{"x": "1", "y": 2}]})") ==
        "p.json: points[0].x: expected a number, got a string");
  CHECK(parse_error(R"({"points": [{"x": 1}]})") == "p.json: points[0]: missing key 'y'");
  CHECK(parse_error(R"({"strokes": [{"points": [[1, 2, 3]]}]})") ==
        "p.json: strokes[0].points[0]: expected [x, y], got an array of 3");
  CHECK(parse_error(R"({"strokes": [{"points": [[1, null]]}]})") ==
        "p.json: strokes[0].points[0][1]: expected a number, got null");
  CHECK(parse_error(R"({"strokes": [{"width": 3}]})") == "p.json: strokes[0]: missing key 'points'");
  CHECK(parse_error(R"({"boxes": [{"box": [1, 2, 3]}]})") ==
        "p.json: boxes[0].box: expected [x0, y0, x1, y1], got 3 numbers");
  CHECK(parse_error(R"({"text": 5})") == "p.json: text: expected a string, got a number");
  CHECK(parse_error(R"({"coords": "percent"})") ==
        "p.json: coords: unknown coords 'percent' (expected \"pixels\" or \"normalized\")");
}

TEST_CASE("prompt file: empty stroke, bad width, unknown label") {
  CHECK(parse_error(R"({"strokes": [{"points": []}]})") ==
        "p.json: strokes[0].points: a stroke needs at least one point");
  CHECK(parse_error(R"({"strokes": [{"points": [[1,1]], "width": 0}]})") ==
        "p.json: strokes[0].width: width = 0 must be > 0 and <= 1024");
  CHECK(parse_error(R"({"strokes": [{"points": [[1,1]], "width": -3}]})") ==
        "p.json: strokes[0].width: width = -3 must be > 0 and <= 1024");
  CHECK(parse_error(R"({"strokes": [{"points": [[1,1]], "width": 5000}]})") ==
        "p.json: strokes[0].width: width = 5000 must be > 0 and <= 1024");
  CHECK(parse_error(R"({"points": [{"x": 1, "y": 1, "label": "neg"}]})") ==
        "p.json: points[0].label: unknown label 'neg' (expected \"positive\" or \"negative\")");
  CHECK(parse_error(R"({"strokes": [{"points": [[1,1]], "label": true}]})") ==
        "p.json: strokes[0].label: expected a string, got a boolean");
}

TEST_CASE("prompt file: inverted or empty boxes are errors") {
  CHECK(parse_error(R"({"boxes": [{"box": [10, 0, 5, 8]}]})") ==
        "p.json: boxes[0].box: box is inverted or empty: x0 = 10 must be < x1 = 5");
  CHECK(parse_error(R"({"boxes": [{"box": [0, 0, 5, 5]}, {"box": [0, 9, 5, 9]}]})") ==
        "p.json: boxes[1].box: box is inverted or empty: y0 = 9 must be < y1 = 9");
}

TEST_CASE("prompt file: absurd sizes are rejected") {
  SUBCASE("too many boxes") {
    std::string s = "{\"boxes\": [";
    for (int i = 0; i < 1001; ++i) s += std::string(i ? "," : "") + "{\"box\": [0,0,1,1]}";
    s += "]}";
    CHECK(parse_error(s) == "p.json: boxes: 1001 boxes is more than the limit of 1000");
  }
  SUBCASE("too many points in strokes") {
    std::string s = "{\"strokes\": [";
    for (int k = 0; k < 2; ++k) {
      s += std::string(k ? "," : "") + "{\"points\": [";
      for (int i = 0; i < 50001; ++i) s += std::string(i ? "," : "") + "[1,1]";
      s += "]}";
    }
    s += "]}";
    std::string msg = parse_error(s);
    CHECK(msg.find("p.json: strokes[1].points: 100002 points in total") == 0);
    CHECK(msg.find("limit of 100000") != std::string::npos);
  }
  SUBCASE("text too long") {
    std::string s = "{\"text\": \"" + std::string(10001, 'a') + "\"}";
    CHECK(parse_error(s) == "p.json: text: 10001 bytes of text is more than the limit of 10000");
  }
  SUBCASE("file too large") {
    std::string s = "{\"text\": \"a\"}" + std::string(16u << 20, ' ');
    std::string msg = parse_error(s);
    CHECK(msg.find("p.json: file is") == 0);
    CHECK(msg.find("more than the limit") != std::string::npos);
  }
}

TEST_CASE("prompt to_pixels: range checks name the JSON path and the value") {
  // 640x480 image: points in 0..639 / 0..479, boxes in 0..640 / 0..480.
  CHECK(pixels_error(R"({"strokes": [{"points": [[1,1],[2,2],[-5,3]]}]})", 640, 480) ==
        "p.json: strokes[0].points[2][0]: x = -5 is outside the image (0..639)");
  CHECK(pixels_error(R"({"points": [{"x": 1, "y": 480}]})", 640, 480) ==
        "p.json: points[0].y: y = 480 is outside the image (0..479)");
  CHECK(pixels_error(R"({"points": [{"x": 639, "y": 479}]})", 640, 480) == "<no error>");
  CHECK(pixels_error(R"({"boxes": [{"box": [0, 0, 640, 480]}]})", 640, 480) == "<no error>");
  CHECK(pixels_error(R"({"boxes": [{"box": [0, 0, 641, 480]}]})", 640, 480) ==
        "p.json: boxes[0].box[2]: x1 = 641 is outside the image (0..640)");
  CHECK(pixels_error(R"({"boxes": [{"box": [0, -1, 10, 10]}]})", 640, 480) ==
        "p.json: boxes[0].box[1]: y0 = -1 is outside the image (0..480)");
  Prompt p = parse_prompt("{}", "p.json");
  CHECK_THROWS_AS(to_pixels(p, 0, 10), UsageError);
}

TEST_CASE("prompt to_pixels: normalized coordinates convert and range-check") {
  Prompt p = parse_prompt(R"({"coords": "normalized",
    "points": [{"x": 0.5, "y": 0.25}, {"x": 1, "y": 1}],
    "strokes": [{"points": [[0, 0.5]], "width": 4}],
    "boxes": [{"box": [0.1, 0.2, 1.0, 1.0], "phrase": "cat"}]})", "p.json");
  CHECK(p.coords == Coords::normalized);
  Prompt q = to_pixels(p, 200, 100);
  CHECK(q.coords == Coords::pixels);
  CHECK(q.points[0].x == doctest::Approx(100));
  CHECK(q.points[0].y == doctest::Approx(25));
  CHECK(q.points[1].x == doctest::Approx(199));  // 1.0 = the last pixel
  CHECK(q.points[1].y == doctest::Approx(99));
  CHECK(q.strokes[0].points[0].y == doctest::Approx(50));
  CHECK(q.strokes[0].width == 4);  // widths are always pixels
  CHECK(q.boxes[0].x0 == doctest::Approx(20));
  CHECK(q.boxes[0].y0 == doctest::Approx(20));
  CHECK(q.boxes[0].x1 == doctest::Approx(200));
  CHECK(q.boxes[0].y1 == doctest::Approx(100));
  CHECK(q.boxes[0].phrase == "cat");
  CHECK(pixels_error(R"({"coords": "normalized", "points": [{"x": 1.5, "y": 0}]})", 10, 10) ==
        "p.json: points[0].x: x = 1.5 is outside 0..1 (coords are normalized)");
  CHECK(pixels_error(R"({"coords": "normalized", "boxes": [{"box": [0, 0, 0.5, 2]}]})", 10, 10) ==
        "p.json: boxes[0].box[3]: y1 = 2 is outside 0..1 (coords are normalized)");
}

TEST_CASE("prompt inline --point parsing, good and bad") {
  Point a = parse_point_flag("10,20");
  CHECK(a.x == 10);
  CHECK(a.y == 20);
  CHECK(a.positive);
  CHECK(a.origin == "--point 10,20");
  CHECK_FALSE(parse_point_flag("1.5, 2.5 ,neg").positive);
  CHECK_FALSE(parse_point_flag("1,2,negative").positive);
  CHECK(parse_point_flag("1,2,pos").positive);
  CHECK(parse_point_flag("1,2,positive").positive);
  CHECK(usage_error([] { parse_point_flag("10"); }) ==
        "--point '10': expected 2 or 3 comma-separated fields, got 1 (expected x,y[,neg])");
  CHECK(usage_error([] { parse_point_flag("10,x"); }) ==
        "--point '10,x': y 'x' is not a number (expected x,y[,neg])");
  CHECK(usage_error([] { parse_point_flag("10,20,maybe"); }) ==
        "--point '10,20,maybe': unknown label 'maybe' (neg, negative, pos or positive) (expected x,y[,neg])");
  CHECK(usage_error([] { parse_point_flag("1e400,2"); }).find("is not a finite number") != std::string::npos);
  CHECK(usage_error([] { parse_point_flag("nan,2"); }).find("is not a finite number") != std::string::npos);
  CHECK(usage_error([] { parse_point_flag(",2"); }) == "--point ',2': x is missing (expected x,y[,neg])");
}

TEST_CASE("prompt inline --box parsing keeps commas in the phrase") {
  Box b = parse_box_flag("1,2,30,40,a cat, a dog");
  CHECK(b.x0 == 1);
  CHECK(b.y1 == 40);
  CHECK(b.phrase == "a cat, a dog");
  CHECK(parse_box_flag("0,0,5,5").phrase.empty());
  CHECK(usage_error([] { parse_box_flag("1,2,3"); }) ==
        "--box '1,2,3': expected 4 numbers, got 3 fields (expected x0,y0,x1,y1[,phrase])");
  CHECK(usage_error([] { parse_box_flag("5,0,1,4"); }) ==
        "--box '5,0,1,4': box is inverted or empty: x0 must be < x1 (expected x0,y0,x1,y1[,phrase])");
  CHECK(usage_error([] { parse_box_flag("0,a,1,4,cat"); }) ==
        "--box '0,a,1,4,cat': y0 'a' is not a number (expected x0,y0,x1,y1[,phrase])");
}

TEST_CASE("prompt inline --stroke parsing with neg: prefix") {
  Stroke s = parse_stroke_flag("1,2 3,4  5,6", 5);
  REQUIRE(s.points.size() == 3);
  CHECK(s.points[2].x == 5);
  CHECK(s.width == 5);
  CHECK(s.positive);
  Stroke n = parse_stroke_flag("neg:7,8");
  CHECK_FALSE(n.positive);
  CHECK(n.points.size() == 1);
  CHECK(n.width == 8);
  CHECK(parse_stroke_flag("pos:1,1").positive);
  CHECK(usage_error([] { parse_stroke_flag("1,2 3"); }) ==
        "--stroke '1,2 3': point '3' is not x,y (expected \"[neg:]x,y x,y ...\")");
  CHECK(usage_error([] { parse_stroke_flag("neg:"); }) ==
        "--stroke 'neg:': a stroke needs at least one point (expected \"[neg:]x,y x,y ...\")");
  CHECK(usage_error([] { parse_stroke_flag("1,2", 0); }) == "--stroke width 0 must be > 0 and <= 1024");
}

TEST_CASE("prompt inline items: origin in range errors, merge with a file") {
  Prompt inl = parse_inline_prompt({"700,10"}, {}, {}, "");
  CHECK(inl.source == "command line");
  try {
    to_pixels(inl, 640, 480);
    FAIL("expected an error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "command line: --point 700,10: x = 700 is outside the image (0..639)");
  }

  Prompt file = parse_prompt(R"({"coords": "normalized", "points": [{"x": 0.5, "y": 0.5}], "text": "file"})", "p.json");
  Prompt extra = parse_inline_prompt({"1,2,neg"}, {"0,0,10,10,dog"}, {"neg:3,3 4,4"}, "cli text");
  // Mixed coords cannot merge before conversion.
  Prompt bad = file;
  CHECK_THROWS_AS(merge_prompt(bad, extra), InputError);
  Prompt merged = to_pixels(file, 100, 100);
  merge_prompt(merged, to_pixels(extra, 100, 100));
  REQUIRE(merged.points.size() == 2);
  CHECK(merged.points[0].x == doctest::Approx(50));
  CHECK(merged.points[0].origin.empty());
  CHECK_FALSE(merged.points[1].positive);
  CHECK(merged.boxes.size() == 1);
  CHECK(merged.boxes[0].phrase == "dog");
  CHECK(merged.strokes.size() == 1);
  CHECK_FALSE(merged.strokes[0].positive);
  CHECK(merged.text == "cli text");  // command line wins
  CHECK(merged.source == "p.json");

  // Empty extra text keeps the file's text.
  Prompt keep = parse_prompt(R"({"text": "file"})", "p.json");
  merge_prompt(keep, parse_inline_prompt({"1,1"}, {}, {}));
  CHECK(keep.text == "file");
  CHECK(keep.points.size() == 1);
}

TEST_CASE("prompt serialises to JSON and parses back the same") {
  Prompt p = parse_prompt(R"({
    "strokes": [{"points": [[1.25, 2], [3, 4]], "width": 12, "label": "negative"}],
    "points": [{"x": 10, "y": 20, "label": "negative"}, {"x": 1, "y": 2}],
    "boxes": [{"box": [1, 2, 30, 40], "phrase": "a \"red\" car"}],
    "text": "héllo", "coords": "normalized"})", "p.json");
  std::string j = prompt_to_json(p);
  CHECK(j.find('\n') == std::string::npos);
  Prompt q = parse_prompt(j, "again");
  CHECK(q.coords == Coords::normalized);
  REQUIRE(q.strokes.size() == 1);
  CHECK(q.strokes[0].points[0].x == 1.25);
  CHECK(q.strokes[0].width == 12);
  CHECK_FALSE(q.strokes[0].positive);
  REQUIRE(q.points.size() == 2);
  CHECK_FALSE(q.points[0].positive);
  CHECK(q.points[1].positive);
  CHECK(q.boxes[0].phrase == "a \"red\" car");
  CHECK(q.boxes[0].y1 == 40);
  CHECK(q.text == "héllo");
  CHECK(prompt_to_json(q) == j);
  CHECK(parse_prompt(prompt_to_json(Prompt{}), "x").empty());
}

TEST_CASE("prompt load_prompt reads a file and names it in errors") {
  lli::test::TempDir dir;
  auto path = (dir / "bad.json").string();
  {
    std::ofstream f(path);
    f << "{\n\"boxes\": [{\"box\": [3, 3, 1, 1]}]\n}\n";
  }
  try {
    load_prompt(path);
    FAIL("expected an error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).rfind(path + ": boxes[0].box: box is inverted", 0) == 0);
  }
  CHECK_THROWS_AS(load_prompt((dir / "missing.json").string()), InputError);
}
