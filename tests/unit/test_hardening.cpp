// Hardening (issue 11): deeply nested JSON / YAML refused while parsing (no recursion on a deep
// tree anywhere), bounded and escaped echoes of untrusted values in one-line messages.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/quote.h"
#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/prompt.h"
#include "lli/registry.h"
#include "lli/safetensors.h"
#include "lli/session.h"
#include "test_util.h"

using namespace lli;
using lli::test::error_of;
using lli::test::has;
using lli::test::TempDir;
using nlohmann::json;

namespace {

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string nested_arrays(std::size_t depth, const std::string& inner = "") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

// A safetensors file: 8-byte little-endian header length, header (padded), data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  return out + h + data;
}

bool one_line(const std::string& s) { return s.find('\n') == std::string::npos && s.find('\r') == std::string::npos; }

}  // namespace

TEST_CASE("quote_excerpt bounds and escapes what a message echoes") {
  CHECK(quote_excerpt("w") == "'w'");
  CHECK(quote_excerpt("a\nb\tc\r\x01") == "'a\\nb\\tc\\r\\x01'");
  const std::string big(100000, 'x');
  const std::string q = quote_excerpt(big);
  CHECK(q.size() < 90);
  CHECK(has(q, "...' (100000 bytes)"));
  // A cut never splits a UTF-8 character: 'é' is 2 bytes, 60 / 2 = 30 whole characters.
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\xC3\xA9";
  CHECK(quote_excerpt(accents, 59) == "'" + accents.substr(0, 58) + "...' (80 bytes)");
  CHECK(escape_control("x\ny") == "x\\ny");
  CHECK(lli::one_line(std::string(1000, 'z'), 10) == std::string(10, 'z') + "...");
  // Bounded excerpt of a JSON value: a 1 MB array is not serialised whole.
  json arr = json::array();
  for (int i = 0; i < 100000; ++i) arr.push_back(i);
  const std::string e = json_excerpt(arr);
  CHECK(e.size() <= 64);
  CHECK(e.rfind("[0, 1, 2", 0) == 0);
  CHECK(json_excerpt(json("a\nb")) == "\"a\\nb\"");
}

TEST_CASE("parse_json_bounded: depth counted while parsing, arrays and objects alike") {
  CHECK(parse_json_bounded(nested_arrays(64), "x.json", ExitCode::bad_input).is_array());
  std::string msg = error_of<InputError>([] { parse_json_bounded(nested_arrays(65), "x.json", ExitCode::bad_input); });
  CHECK(msg == "x.json:1:65: JSON nesting deeper than 64 levels (arrays and objects both count)");
  // Objects and arrays mixed: {"a":[{"a":[...]}]} 66 levels.
  std::string mixed;
  for (int i = 0; i < 33; ++i) mixed += "{\"a\":[";
  for (int i = 0; i < 33; ++i) mixed += "]}";
  CHECK(has(error_of<ModelError>([&] { parse_json_bounded(mixed, "c.json", ExitCode::model); }), "c.json:1:"));
  // 200,000 levels: refused at level 65, nothing deeper is ever built.
  msg = error_of<InputError>([] { parse_json_bounded(nested_arrays(200000), "deep.json", ExitCode::bad_input); });
  CHECK(has(msg, "deep.json:1:65: JSON nesting deeper than 64 levels"));
  // A custom limit.
  JsonParseOptions o;
  o.max_depth = 2;
  CHECK(has(error_of<InputError>([&] { parse_json_bounded("[[[1]]]", "s", o); }), "deeper than 2 levels"));
  // Syntax errors keep file:line:column, and the echoed token is bounded.
  msg = error_of<InputError>([] { parse_json_bounded("{\"x\": \"" + std::string(5000, 'y') + "\n\"}", "p.json", ExitCode::bad_input); });
  CHECK(msg.rfind("p.json:1:", 0) == 0);
  CHECK(msg.size() < 300);
  CHECK(one_line(msg));
}

TEST_CASE("session: a 200,000-deep lli_session is refused (exit 3), not a crash") {
  const std::string text = "{\"lli_session\": " + nested_arrays(200000) + "}";
  REQUIRE(text.size() > 400000);
  std::string msg = error_of<InputError>([&] { Session::parse(text, "s.json", "."); });
  CHECK(msg == "s.json:1:80: JSON nesting deeper than 64 levels (arrays and objects both count)");
  // Deep params inside a step, and a deep current.
  msg = error_of<InputError>([&] { Session::parse("{\"lli_session\": 1, \"current\": " + nested_arrays(100000) + "}", "s.json", "."); });
  CHECK(has(msg, "nesting deeper than 64"));
  // A bad but shallow value is quoted, bounded.
  std::string many;
  for (int i = 0; i < 20000; ++i) many += "1,";
  msg = error_of<InputError>([&] { Session::parse("{\"lli_session\": [" + many + "1]}", "s.json", "."); });
  CHECK(has(msg, "s.json: lli_session: version [1, 1, 1"));
  CHECK(msg.size() < 200);
  msg = error_of<InputError>([&] { Session::parse("{\"lli_session\": \"a\\nb\"}", "s.json", "."); });
  CHECK(msg == "s.json: lli_session: version \"a\\nb\" is not supported (this build reads version 1)");
}

TEST_CASE("prompt: deeply nested prompt JSON is an InputError naming the file") {
  std::string msg = error_of<InputError>([] { parse_prompt("{\"points\": " + nested_arrays(300000) + "}", "p.json"); });
  CHECK(msg == "p.json:1:75: JSON nesting deeper than 64 levels (arrays and objects both count)");
}

TEST_CASE("safetensors: a 300,000-deep shape is refused (exit 4), not a crash") {
  TempDir t;
  const std::string header = "{\"w\": {\"dtype\": \"F32\", \"shape\": " + nested_arrays(300000) +
                             ", \"data_offsets\": [0, 4]}}";
  write_bytes(t / "model.safetensors", safetensors_bytes(header, std::string(4, '\0')));
  std::string msg = error_of<ModelError>([&] { st::File::open(t / "model.safetensors"); });
  CHECK(msg.rfind((t / "model.safetensors").string() + ": JSON nesting deeper than 64 levels", 0) == 0);
  CHECK(has(msg, "(line 1, column 95)"));  // the 63rd [ of the shape: 65 levels
  // 60 levels of arrays in a shape: parsed, then refused as a bad shape entry, bounded.
  const std::string h2 = "{\"w\": {\"dtype\": \"F32\", \"shape\": " + nested_arrays(60, "1") +
                         ", \"data_offsets\": [0, 4]}}";
  write_bytes(t / "b.safetensors", safetensors_bytes(h2, std::string(4, '\0')));
  msg = error_of<ModelError>([&] { st::File::open(t / "b.safetensors"); });
  CHECK(has(msg, "tensor 'w': shape entry [[[[["));
  CHECK(msg.size() < 300);
  // A deep data_offsets.
  const std::string h3 = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": " + nested_arrays(100000) + "}}";
  write_bytes(t / "c.safetensors", safetensors_bytes(h3, std::string(4, '\0')));
  CHECK(has(error_of<ModelError>([&] { st::File::open(t / "c.safetensors"); }), "nesting deeper than 64"));
}

TEST_CASE("safetensors index.json: deep nesting is a ModelError naming the index") {
  TempDir t;
  write_bytes(t / "model.safetensors.index.json", "{\"weight_map\": " + nested_arrays(100000) + "}");
  std::string msg = error_of<ModelError>([&] { st::Checkpoint::open(t.path, "model"); });
  CHECK(has(msg, "model.safetensors.index.json: JSON nesting deeper than 64 levels (arrays and objects both count) (line 1, column 79)"));
}

TEST_CASE("YAML: nesting is bounded while parsing (models.yaml), anchors included") {
  std::string msg = error_of<ModelError>([] { Registry::parse(nested_arrays(200000), "/cfg/models.yaml"); });
  CHECK(msg == "/cfg/models.yaml:1:65: YAML nesting deeper than 64 levels (sequences and mappings both count)");
  // Block style: 70 nested mappings.
  std::string block;
  for (int i = 0; i < 70; ++i) block += std::string(2 * i, ' ') + "k" + std::to_string(i) + ":\n";
  CHECK(has(error_of<ModelError>([&] { Registry::parse(block, "m.yaml"); }), "YAML nesting deeper than 64"));
  // A chain of aliases builds depth from shallow text: counted too.
  std::string chain = "a0: &a0 [x]\n";
  for (int i = 1; i < 70; ++i)
    chain += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) + "]\n";
  CHECK(has(error_of<ModelError>([&] { Registry::parse(chain, "m.yaml"); }), "YAML nesting deeper than 64"));
  // Syntax errors keep their position.
  CHECK(has(error_of<ModelError>([] { Registry::parse("models: [1, 2\n", "m.yaml"); }), "m.yaml:"));
  // Normal files parse.
  CHECK_NOTHROW(load_yaml_bounded("a: [1, {b: c}]\n", "x.yaml", ExitCode::model));
}

TEST_CASE("prompt and session JSON: a duplicate key is refused (exit 3) naming the file and the key") {
  std::string msg = error_of<InputError>([] { parse_prompt(R"({"text": "a", "text": "b"})", "p.json"); });
  CHECK(msg == "p.json:1:15: JSON has a duplicate key 'text' (top level)");
  msg = error_of<InputError>([] {
    parse_prompt(R"({"boxes": [{"box": [0, 0, 1, 1]}, {"box": [0, 0, 1, 1], "box": [0, 0, 2, 2]}]})", "p.json");
  });
  CHECK(msg == "p.json:1:57: JSON has a duplicate key 'box' in boxes[1]");
  // The same key in two different objects is fine.
  CHECK(parse_prompt(R"({"points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]})", "p.json").points.size() == 2);
  // Sessions: a duplicate step field, a duplicate top-level key.
  json step = {{"file", "step-0000.png"}, {"sha256", std::string(64, 'a')}, {"tool", "import"}, {"op", "import"}};
  std::string text = json{{"lli_session", 1}, {"current", 0}, {"steps", json::array({step})}}.dump();
  const std::string dup_tool = text.substr(0, text.find("\"tool\"")) + "\"tool\":\"x\"," + text.substr(text.find("\"tool\""));
  msg = error_of<InputError>([&] { Session::parse(dup_tool, "s.json", "."); });
  CHECK(has(msg, "s.json:1:"));
  CHECK(has(msg, ": JSON has a duplicate key 'tool' in steps[0]"));
  msg = error_of<InputError>([&] { Session::parse(R"({"lli_session": 1, "current": null, "current": null})", "s.json", "."); });
  CHECK(has(msg, "JSON has a duplicate key 'current' (top level)"));
  // A key with a newline is echoed escaped: the message stays one line.
  msg = error_of<InputError>([] { parse_prompt("{\"a\\nb\": 1, \"a\\nb\": 2}", "p.json"); });
  CHECK(has(msg, "duplicate key 'a\\nb'"));
  CHECK(one_line(msg));
}

TEST_CASE("load_prompt: a prompt file that holds nothing is a bad input file naming it") {
  TempDir t;
  for (const char* text : {"{}", "  {\n}\n", R"({"coords": "normalized"})"}) {
    write_bytes(t / "empty.json", text);
    const std::string msg = error_of<InputError>([&] { load_prompt((t / "empty.json").string()); });
    CHECK_MESSAGE(msg.rfind((t / "empty.json").string() + ": the prompt file is empty", 0) == 0, msg);
  }
  write_bytes(t / "text.json", R"({"text": "the dog"})");
  CHECK(load_prompt((t / "text.json").string()).text == "the dog");
}
