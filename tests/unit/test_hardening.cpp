// Hardening (issue 11): deeply nested JSON / YAML refused while parsing (no recursion on a deep
// tree anywhere), bounded and escaped echoes of untrusted values in one-line messages.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "core/activity.h"
#include "core/quote.h"
#include "io/bounded_parse.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "lli/log.h"
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

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
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

// ---- concurrent writers -------------------------------------------------------------------------
namespace {

// Runs `body` in `n` child processes at once; returns how many exited 0.
int run_children(int n, const std::function<void(int)>& body) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 0;
      try {
        body(i);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", i, e.what());
        rc = 1;
      }
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  int ok = 0;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return ok;
}

// Every file in `dir` whose name starts with `prefix`.
std::set<std::string> files_with_prefix(const fs::path& dir, const std::string& prefix) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.insert(e.path().filename().string());
  return out;
}

// A session file s.json in `t` holding one imported step; returns its path.
std::string session_with_import(const TempDir& t) {
  const std::string path = (t / "s.json").string();
  Session s = Session::load(path);
  s.add_image_step("IMG0", "png", "import", "import", json::object(), std::nullopt, std::nullopt);
  s.save(path);
  return path;
}

struct EnvVar {
  std::string name;
  EnvVar(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
  ~EnvVar() { ::unsetenv(name.c_str()); }
};

}  // namespace

TEST_CASE("session: two writers loaded from the same file both have their step recorded") {
  TempDir t;
  const std::string path = session_with_import(t);
  Session a = Session::load(path), b = Session::load(path);  // both see step 0 only
  CHECK(a.add_image_step("A", "png", "lli-edit", "remove", json::object(), std::nullopt, 0) == 1);
  a.save(path);
  // b's change re-reads the file under the lock: its step is 2, not a second step 1.
  CHECK(b.add_image_step("B", "png", "lli-edit", "remove", json::object(), std::nullopt, 0) == 2);
  b.add_chat_turn(ChatRole::user, "hi", 2);
  b.save(path);
  Session s = Session::load(path);
  REQUIRE(s.size() == 3);
  CHECK(s.steps()[1].file == "step-0001.png");
  CHECK(s.steps()[2].file == "step-0002.png");
  CHECK(s.steps()[2].parent == 0);
  CHECK(s.current() == 2);
  CHECK(s.chat().size() == 1);
  CHECK(files_with_prefix(t.path, "step-") == std::set<std::string>{"step-0000.png", "step-0001.png", "step-0002.png"});
  for (int i = 0; i < 3; ++i) CHECK_NOTHROW(s.verify_step(i));
  // Saving without a change never writes back a stale history.
  Session stale = Session::load(path);
  Session c = Session::load(path);
  c.add_image_step("C", "png", "lli-edit", "remove", json::object(), std::nullopt, 0);
  c.save(path);
  stale.save(path);
  CHECK(Session::load(path).size() == 4);
}

TEST_CASE("session: the lock waits at most LLI_LOCK_TIMEOUT, then a clear error, nothing recorded") {
  TempDir t;
  const std::string path = session_with_import(t);
  const std::string before = read_text(t / "s.json");
  EnvVar timeout("LLI_LOCK_TIMEOUT", "0.3");
  {
    FileLock other(path + ".lock", "test");  // another writer (a second descriptor conflicts like a process)
    Session w = Session::load(path);
    const std::string msg = error_of<RuntimeError>(
        [&] { w.add_image_step("X", "png", "lli-edit", "remove", json::object(), std::nullopt, 0); });
    CHECK(msg == path + ": another lli process holds " + path + ".lock (gave up after 0.3 s; set LLI_LOCK_TIMEOUT to wait longer)");
    CHECK(read_text(t / "s.json") == before);
    CHECK(files_with_prefix(t.path, "step-").size() == 1);
  }
  // Released: the next writer goes through.
  Session w = Session::load(path);
  w.add_image_step("X", "png", "lli-edit", "remove", json::object(), std::nullopt, 0);
  w.save(path);
  CHECK(Session::load(path).size() == 2);
  EnvVar bad("LLI_LOCK_TIMEOUT", "soon");
  CHECK(has(error_of<UsageError>([] { lock_timeout_seconds(); }), "LLI_LOCK_TIMEOUT = 'soon'"));
}

TEST_CASE("session: a history rewritten under a writer is refused, not merged") {
  TempDir t;
  const std::string path = session_with_import(t);
  Session w = Session::load(path);
  Session other(path, t.path);  // a different history written over the file
  other.add_image_step("OTHER", "png", "import", "import", json::object(), std::nullopt, std::nullopt);
  other.save(path);
  CHECK(has(error_of<InputError>([&] { w.add_image_step("X", "png", "e", "e", json::object(), std::nullopt, 0); }),
            "the session was rewritten by another program while this one ran (step 0 is gone or different)"));
}

TEST_CASE("session: 6 processes appending 5 steps each at the same time lose nothing") {
  TempDir t;
  const std::string path = session_with_import(t);
  const int ok = run_children(6, [&](int i) {
    for (int k = 0; k < 5; ++k) {
      Session s = Session::load(path);
      const std::string bytes = "image " + std::to_string(i) + "/" + std::to_string(k);
      s.add_image_step(bytes, "png", "lli-edit", "remove", json{{"writer", i}}, std::nullopt, 0);
      s.save(path);
    }
  });
  CHECK(ok == 6);
  Session s = Session::load(path);
  REQUIRE(s.size() == 31);
  std::set<std::string> recorded;
  for (int i = 0; i < s.size(); ++i) {
    CHECK_NOTHROW(s.verify_step(i));
    recorded.insert(s.steps()[static_cast<std::size_t>(i)].file);
    CHECK(s.steps()[static_cast<std::size_t>(i)].file == "step-" + std::string(i < 10 ? "000" : "00") + std::to_string(i) + ".png");
  }
  CHECK(files_with_prefix(t.path, "step-") == recorded);  // no orphan
  CHECK(files_with_prefix(t.path, ".").empty());          // no temporary file
}

TEST_CASE("caches: two processes rewriting one safetensors cache leave one complete file, never a mix") {
  TempDir t;
  const fs::path file = t / "cache.safetensors";
  const int ok = run_children(3, [&](int i) {
    if (i < 2) {  // two writers, different sizes and contents
      std::vector<float> data(static_cast<std::size_t>(20000 + 30000 * i), static_cast<float>(i + 1));
      for (int k = 0; k < 40; ++k)
        st::write_file(file, {{"x", st::DType::F32, {static_cast<std::int64_t>(data.size())}, data.data(), data.size() * 4}},
                       {{"writer", std::to_string(i)}});
      return;
    }
    for (int k = 0; k < 200; ++k) {  // a reader: every file it sees is one writer's, whole
      std::error_code ec;
      if (!fs::exists(file, ec)) continue;
      st::File f = st::File::open(file);
      const auto& x = f.tensors().at(0);
      const int w = std::stoi(f.metadata().at("writer"));
      if (x.shape[0] != 20000 + 30000 * w) throw std::runtime_error("size of another writer");
      const float* p = static_cast<const float*>(x.data);
      for (std::int64_t j = 0; j < x.shape[0]; ++j)
        if (p[j] != static_cast<float>(w + 1)) throw std::runtime_error("mixed contents");
    }
  });
  CHECK(ok == 3);
  CHECK_NOTHROW(st::File::open(file));
  CHECK(files_with_prefix(t.path, ".").empty());
}

TEST_CASE("AtomicFile::commit_new never replaces an existing file") {
  TempDir t;
  write_bytes(t / "a.png", "old");
  AtomicFile f(t / "a.png");
  f.write("new");
  CHECK_FALSE(f.commit_new());
  CHECK(read_text(t / "a.png") == "old");
  CHECK(files_with_prefix(t.path, ".").empty());
  AtomicFile g(t / "b.png");
  g.write("b");
  CHECK(g.commit_new());
  CHECK(read_text(t / "b.png") == "b");
}

// ---- truncated and corrupt images ----------------------------------------------------------------
namespace {

std::string messi_bytes() { return read_text(lli::test::samples_dir() / "messi5.jpg"); }

// The InputError of decoding `bytes`, and what reached stderr meanwhile.
struct Decoded {
  std::string error;
  std::string stderr_text;
  cv::Mat image;
};
Decoded decode(const std::string& bytes, const std::string& name) {
  Decoded d;
  d.stderr_text = capture_stderr([&] {
    try {
      d.image = decode_image_bytes(bytes, name);
    } catch (const InputError& e) {
      d.error = e.what();
    }
  });
  return d;
}

struct AllowTruncated {
  AllowTruncated() { set_allow_truncated_images(true); }
  ~AllowTruncated() { set_allow_truncated_images(false); }
};

// The offset of the SOF0 marker's height field in a baseline JPEG.
std::size_t jpeg_sof_size_offset(const std::string& b) {
  std::size_t i = 2;
  while (i + 4 < b.size()) {
    const unsigned m = static_cast<unsigned char>(b[i + 1]);
    const std::size_t len = static_cast<unsigned char>(b[i + 2]) * 256u + static_cast<unsigned char>(b[i + 3]);
    if (m == 0xC0) return i + 5;
    i += 2 + len;
  }
  return 0;
}

}  // namespace

TEST_CASE("images: a JPEG cut anywhere is truncated image data (exit 3) unless --allow-truncated") {
  const std::string full = messi_bytes();
  REQUIRE(full.size() == 72937);
  Decoded ok = decode(full, "messi5.jpg");
  CHECK(ok.error.empty());
  CHECK(ok.stderr_text.empty());
  CHECK_FALSE(image_data_problem(full, probe_image_header(full, "m")));
  // 11 cuts, from inside the headers to just the end marker missing.
  for (std::size_t keep : {std::size_t(300), std::size_t(700), full.size() / 8, full.size() / 4, full.size() / 3,
                           full.size() / 2, 2 * full.size() / 3, 3 * full.size() / 4, full.size() - 1000,
                           full.size() - 10, full.size() - 2}) {
    INFO("kept " << keep << " bytes");
    const std::string cut = full.substr(0, keep);
    Decoded d = decode(cut, "cut.jpg");
    CHECK(d.error.rfind("cut.jpg: truncated image data (JPEG ends after " + std::to_string(keep) + " bytes", 0) == 0);
    CHECK(has(d.error, "--allow-truncated accepts it)"));
    CHECK(d.stderr_text.empty());
    CHECK(one_line(d.error));
    if (keep > 1000) {  // the headers are whole: decodable with the flag, grey where data is missing
      AllowTruncated allow;
      Decoded a = decode(cut, "cut.jpg");
      CHECK(a.error.empty());
      CHECK(a.image.cols == 548);
      CHECK(a.image.rows == 342);
      CHECK(a.stderr_text.rfind("warning: cut.jpg: truncated image data (JPEG ends after", 0) == 0);
      CHECK(a.stderr_text.find("decoded anyway (--allow-truncated)\n") != std::string::npos);
      CHECK(std::count(a.stderr_text.begin(), a.stderr_text.end(), '\n') == 1);
    }
  }
}

TEST_CASE("images: a header whose pixel count cannot come from the bytes is refused before decoding") {
  // 8 KB of messi5.jpg, its SOF saying 30000x3333 (99.99 MP), an end marker appended.
  std::string b = messi_bytes().substr(0, 8000) + "\xFF\xD9";
  const std::size_t at = jpeg_sof_size_offset(b);
  REQUIRE(at > 0);
  b[at] = static_cast<char>(3333 >> 8);
  b[at + 1] = static_cast<char>(3333 & 0xFF);
  b[at + 2] = static_cast<char>(30000 >> 8);
  b[at + 3] = static_cast<char>(30000 & 0xFF);
  const double t0 = now_ms();
  Decoded d = decode(b, "big.jpg");
  CHECK(now_ms() - t0 < 1000);  // nothing was decoded
  CHECK(d.error == "big.jpg: truncated image data (the header's 30000x3333 = 100.0 MP cannot come from 8002 bytes of "
                   "JPEG data; --allow-truncated accepts it)");
  // The same image whose data is merely corrupt: libjpeg's warning, said once, in lli's error.
  std::string c = messi_bytes();
  for (std::size_t i = 30000; i < 30050; ++i) c[i] = static_cast<char>(i % 7 == 0 ? 0xFF : c[i] ^ 0x55);
  d = decode(c, "corrupt.jpg");
  CHECK(d.error.rfind("corrupt.jpg: corrupt image data (", 0) == 0);
  CHECK(d.stderr_text.empty());
  AllowTruncated allow;
  d = decode(c, "corrupt.jpg");
  CHECK(d.error.empty());
  CHECK(d.stderr_text.rfind("warning: corrupt.jpg: corrupt image data (", 0) == 0);
  CHECK(has(d.stderr_text, "libjpeg: Corrupt JPEG data: "));
  CHECK(std::count(d.stderr_text.begin(), d.stderr_text.end(), '\n') == 1);
}

TEST_CASE("images: truncated or corrupt PNG and WebP are refused with one line, libpng's message inside it") {
  cv::Mat img = decode_image_bytes(messi_bytes(), "messi5.jpg");
  const std::string png = encode_image(img, ".png");
  CHECK(decode(png, "m.png").error.empty());
  for (std::size_t keep : {png.size() / 2, png.size() - 12, png.size() - 1}) {
    Decoded d = decode(png.substr(0, keep), "cut.png");
    CHECK(d.error.rfind("cut.png: truncated image data (PNG ends after " + std::to_string(keep) + " bytes", 0) == 0);
    CHECK(d.stderr_text.empty());
    AllowTruncated allow;  // libpng cannot decode a cut file: still exit 3, libpng's words in the one line
    d = decode(png.substr(0, keep), "cut.png");
    CHECK(has(d.error, "cut.png: cannot decode PNG image 548x342 (corrupt or truncated data; libpng error: "));
    CHECK(d.stderr_text.empty());  // the error says it all
  }
  // A flipped byte inside IDAT: complete structure, libpng's CRC error.
  std::string bad = png;
  bad[png.find("IDAT") + 100] ^= 0x40;
  Decoded d = decode(bad, "crc.png");
  CHECK(d.error.rfind("crc.png: cannot decode PNG image 548x342 (corrupt or truncated data; libpng error: IDAT: ", 0) == 0);
  CHECK(one_line(d.error));
  CHECK(d.stderr_text.empty());
  // A PNG header claiming 30000x3000 over a few hundred bytes of data.
  std::string tall = encode_image(cv::Mat(8, 8, CV_8UC3, cv::Scalar(1, 2, 3)), ".png");
  const std::uint32_t w = 30000, h = 3000;
  for (int i = 0; i < 4; ++i) {
    tall[16 + i] = static_cast<char>((w >> (24 - 8 * i)) & 0xFF);
    tall[20 + i] = static_cast<char>((h >> (24 - 8 * i)) & 0xFF);
  }
  CHECK(has(decode(tall, "tall.png").error, "tall.png: truncated image data (the header's 30000x3000 image needs at least"));
  // WebP shorter than its RIFF size.
  const std::string webp = encode_image(img, ".webp");
  CHECK(decode(webp, "m.webp").error.empty());
  d = decode(webp.substr(0, webp.size() / 2), "cut.webp");
  CHECK(d.error == "cut.webp: truncated image data (WebP ends after " + std::to_string(webp.size() / 2) + " of the " +
                       std::to_string(webp.size()) + " bytes its RIFF header announces; --allow-truncated accepts it)");
}

// ---- what is echoed is escaped: every error stays one line ---------------------------------------
TEST_CASE("echoes: a newline inside a label, a JSON key, a tensor name or a flag value does not split the error") {
  std::string msg = error_of<InputError>([] { parse_prompt(R"({"points": [{"x": 1, "y": 1, "label": "pos\nitive"}]})", "p.json"); });
  CHECK(msg == "p.json: points[0].label: unknown label 'pos\\nitive' (expected \"positive\" or \"negative\")");
  msg = error_of<InputError>([] { parse_prompt(R"({"points": [{"x": 1, "y": 1, "la\nbel": 1}]})", "p.json"); });
  CHECK(msg == "p.json: points[0].la\\nbel: unknown key 'la\\nbel' (allowed: x, y, label)");
  msg = error_of<UsageError>([] { parse_inline_prompt({"1,1,ne\ng"}, {}, {}, "", 8, Coords::pixels); });
  CHECK(one_line(msg));
  CHECK(has(msg, "--point '1,1,ne\\ng'"));
  // A long label is cut: the message stays short.
  msg = error_of<InputError>([] { parse_prompt("{\"text\": \"t\", \"coords\": \"" + std::string(100000, 'c') + "\"}", "p.json"); });
  CHECK(msg.size() < 200);
  // Session role, tensor names.
  msg = error_of<InputError>([] {
    Session::parse(R"({"lli_session": 1, "current": null, "chat": [{"role": "us\r\ner", "text": "", "step": null}]})", "s.json", ".");
  });
  CHECK(msg == "s.json: chat[0].role: unknown role 'us\\r\\ner' (expected \"user\" or \"assistant\")");
  TempDir t;
  write_bytes(t / "n.safetensors", safetensors_bytes(R"({"w\nx": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", "\x01"));
  msg = error_of<ModelError>([&] { st::File::open(t / "n.safetensors"); });
  CHECK(has(msg, "tensor 'w\\nx': unsupported dtype 'Q4'"));
  CHECK(one_line(msg));
  write_bytes(t / "d.safetensors", safetensors_bytes(R"({"w\nx": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                                                     std::string(4, '\0')));
  msg = error_of<ModelError>([&] { st::File::open(t / "d.safetensors"); });
  CHECK(has(msg, "tensor 'w\\nx': duplicate field 'dtype'"));
  CHECK(one_line(msg));
  // lli's log lines too.
  const std::string logged = capture_stderr([] { log_info("file {}", "a\nb.png"); });
  CHECK(logged == "file a\\nb.png\n");
}

TEST_CASE("activity: an allocation failure is reported with the innermost phase it left") {
  (void)take_failed_activity();
  std::string msg;
  try {
    Activity outer("running lli-x");
    try {
      Activity loading("loading the model m");
      {
        Activity inner("generating a 64x64 image");
        CHECK(current_activity() == "generating a 64x64 image");
        throw std::bad_alloc();
      }
    } catch (const std::bad_alloc& e) {
      msg = out_of_memory_message("fallback", e.what());
    }
    CHECK(current_activity() == "running lli-x");
  } catch (...) {
    FAIL("nothing else escapes");
  }
  CHECK(msg == "out of memory while generating a 64x64 image");
  // Taken once; a later failure outside any phase falls back to the open one, then the fallback.
  {
    Activity open("writing out.png");
    CHECK(out_of_memory_message("fallback", "x") == "out of memory while writing out.png (x)");
  }
  CHECK(out_of_memory_message("running lli-y", "") == "out of memory while running lli-y");
  // libtorch's allocator message keeps its first line only.
  const std::string c10 =
      "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes. Error code 12 (Cannot "
      "allocate memory)\nException raised from alloc_cpu at ../c10/core/impl/alloc_cpu.cpp:75";
  CHECK(is_allocation_failure(c10));
  CHECK(is_allocation_failure("LaMa: the generator failed on a 64x64 input: " + c10));
  CHECK(is_allocation_failure("OpenCV(4.6.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate 9 bytes"));
  CHECK_FALSE(is_allocation_failure("out.png: write failed (No space left on device)"));
  CHECK_FALSE(is_allocation_failure("self and mat2 must have the same dtype"));
  const std::string m = out_of_memory_message("running lli-z", c10);
  CHECK(m.find('\n') == std::string::npos);
  CHECK(m.rfind("out of memory while running lli-z (DefaultCPUAllocator: can't allocate memory", 0) == 0);
}
