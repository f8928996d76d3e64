// Session files: round trip, directory rules, append-only history, validation messages.
#include "test_util.h"

#include <fstream>
#include <functional>
#include <string>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/session.h"

using namespace lli;
using nlohmann::json;

namespace {

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no error>";
}

// A valid one-step session document whose step file is "step-0000.png" with sha of "IMG".
json one_step_doc() {
  return json{{"lli_session", 1},
              {"current", 0},
              {"steps", json::array({json{{"file", "step-0000.png"},
                                          {"sha256", sha256_hex("IMG")},
                                          {"tool", "import"},
                                          {"op", "import"},
                                          {"params", json::object()},
                                          {"seed", nullptr},
                                          {"parent", nullptr},
                                          {"created", "2024-01-01T00:00:00Z"}}})}};
}

std::string parse_error(const json& doc) {
  return input_error([&] { Session::parse(doc.dump(), "s.json", "."); });
}

}  // namespace

TEST_CASE("session: directory resolution rules") {
  CHECK(Session::resolve_dir("work/a.json", "") == fs::path("work"));
  CHECK(Session::resolve_dir("a.json", "") == fs::path("."));
  CHECK(Session::resolve_dir("-", "") == fs::path("lli-session"));
  CHECK(Session::resolve_dir("-", "/tmp/x") == fs::path("/tmp/x"));
  CHECK(Session::resolve_dir("work/a.json", "other") == fs::path("other"));
}

TEST_CASE("session: missing file and empty stdin text give a new session") {
  lli::test::TempDir dir;
  Session s = Session::load((dir / "new.json").string());
  CHECK(s.empty());
  CHECK(s.current() == -1);
  CHECK(s.dir() == dir.path);
  CHECK_FALSE(fs::exists(dir / "new.json"));
  Session p = Session::parse("  \n", "<stdin>", "lli-session");
  CHECK(p.empty());
  CHECK(input_error([&] { s.input_step(); }) ==
        dir.path.string() + "/new.json: the session has no image yet (pass -i IMAGE to start it)");
}

TEST_CASE("session: import, add steps, save, load round trip") {
  lli::test::TempDir dir;
  write_text(dir / "photo.JPG", "JPEGDATA");
  std::string path = (dir / "s.json").string();
  Session s = Session::load(path);
  int s0 = s.import_image(dir / "photo.JPG");
  CHECK(s0 == 0);
  CHECK(s.steps()[0].file == "step-0000.jpg");
  CHECK(s.steps()[0].tool == "import");
  CHECK(s.steps()[0].params["source"] == "photo.JPG");
  CHECK_FALSE(s.steps()[0].parent.has_value());
  CHECK(s.steps()[0].sha256 == sha256_hex("JPEGDATA"));
  int s1 = s.add_image_step("PNG1", "png", "lli-edit", "inpaint", json{{"dilate", 8}}, 42, s0);
  CHECK(s1 == 1);
  CHECK(s.current() == 1);
  CHECK(s.steps()[1].file == "step-0001.png");
  s.set_masks(1, {NewMask{"MASKA", {}, "png", "lli-segment", json{{"backend", "sam"}}, 0.9, "dog"},
                  NewMask{"MASKB", {}, "png", "lli-segment", json::object(), std::nullopt, ""}});
  s.add_chat_turn(ChatRole::user, "what is this?", 1);
  s.add_chat_turn(ChatRole::assistant, "a dog", 1);
  s.put_cache_bytes(sha256_hex("PNG1"), "sam-vit-base", "EMB", "bin");
  s.save(path);

  Session t = Session::load(path);
  CHECK(t.size() == 2);
  CHECK(t.current() == 1);
  CHECK(t.steps()[1].tool == "lli-edit");
  CHECK(t.steps()[1].op == "inpaint");
  CHECK(t.steps()[1].params == json{{"dilate", 8}});
  CHECK(t.steps()[1].seed == 42);
  CHECK(t.steps()[1].parent == 0);
  CHECK(t.steps()[1].created.size() == 20);
  CHECK(t.image_path(1) == dir.path / "step-0001.png");
  REQUIRE(t.latest_masks().size() == 2);
  CHECK(t.latest_masks()[0].file == "mask-0001-0.png");
  CHECK(t.latest_masks()[1].file == "mask-0001-1.png");
  CHECK(t.latest_masks()[0].score == doctest::Approx(0.9));
  CHECK_FALSE(t.latest_masks()[1].score.has_value());
  CHECK(t.latest_masks()[0].label == "dog");
  CHECK(t.latest_masks()[0].step == 1);
  CHECK(read_file(t.mask_path(t.latest_masks()[1]).string()) == "MASKB");
  REQUIRE(t.chat().size() == 2);
  CHECK(t.chat()[1].role == ChatRole::assistant);
  CHECK(t.chat()[1].text == "a dog");
  CHECK(t.chat()[0].step == 1);
  auto c = t.find_cache(sha256_hex("PNG1"), "sam-vit-base");
  REQUIRE(c.has_value());
  CHECK(read_file(c->string()) == "EMB");
  CHECK_FALSE(t.find_cache(sha256_hex("PNG1"), "sam-vit-large").has_value());
  CHECK(t.dump() == s.dump());  // save/load is lossless
}

TEST_CASE("session: string parse/dump is the stdin/stdout path and is stable") {
  lli::test::TempDir dir;
  Session s("<stdin>", dir.path);
  s.add_image_step("A", "png", "import", "import", json::object(), std::nullopt, std::nullopt);
  s.add_chat_turn(ChatRole::user, "line1\nline2 \"q\"", 0);
  std::string text = s.dump();
  CHECK(text.back() == '\n');
  CHECK(json::parse(text)["lli_session"] == 1);
  Session t = Session::parse(text, "<stdin>", dir.path);
  CHECK(t.dump() == text);
  CHECK(t.chat()[0].text == "line1\nline2 \"q\"");
}

TEST_CASE("session: history is append-only and step files are never overwritten") {
  lli::test::TempDir dir;
  Session s("s.json", dir.path);
  s.add_image_step("A", "png", "import", "import", {}, std::nullopt, std::nullopt);
  s.add_image_step("B", "png", "lli-edit", "remove", {}, std::nullopt, 0);
  // Branch from step 0 again: a new step is appended, history untouched.
  int b = s.add_image_step("C", "png", "lli-edit", "inpaint", {}, 7, s.input_step(0));
  CHECK(b == 2);
  CHECK(s.steps()[2].parent == 0);
  CHECK(s.current() == 2);
  CHECK(read_file(s.image_path(0).string()) == "A");
  CHECK(read_file(s.image_path(1).string()) == "B");
  CHECK(s.steps()[0].sha256 == sha256_hex("A"));

  // A second session sharing the directory does not clobber the first one's files.
  Session other("other.json", dir.path);
  other.add_image_step("OTHER", "png", "import", "import", {}, std::nullopt, std::nullopt);
  CHECK(other.steps()[0].file == "step-0000-2.png");
  CHECK(read_file(s.image_path(0).string()) == "A");
  CHECK(read_file(other.image_path(0).string()) == "OTHER");

  // Masks replace the previous set (new files, old ones not rewritten).
  s.set_masks(1, {NewMask{"M1", {}, "png", "t", {}, std::nullopt, ""}});
  s.set_masks(2, {NewMask{"M2", {}, "png", "t", {}, std::nullopt, ""}});
  REQUIRE(s.latest_masks().size() == 1);
  CHECK(s.latest_masks()[0].step == 2);
  CHECK(read_file((dir / "mask-0001-0.png").string()) == "M1");

  CHECK_THROWS_AS(s.add_image_step("D", "png", "x", "y", {}, std::nullopt, 9), InputError);
  CHECK(s.size() == 3);
}

TEST_CASE("session: --from-step range check") {
  lli::test::TempDir dir;
  Session s("s.json", dir.path);
  s.add_image_step("A", "png", "import", "import", {}, std::nullopt, std::nullopt);
  s.add_image_step("B", "png", "lli-edit", "remove", {}, std::nullopt, 0);
  CHECK(s.input_step() == 1);
  CHECK(s.input_step(0) == 0);
  CHECK(input_error([&] { s.input_step(2); }) == "--from-step 2: s.json has steps 0..1");
  CHECK(input_error([&] { s.input_step(-1); }) == "--from-step -1: s.json has steps 0..1");
}

TEST_CASE("session: modified or missing step image is detected") {
  lli::test::TempDir dir;
  Session s("s.json", dir.path);
  s.add_image_step("ORIGINAL", "png", "import", "import", {}, std::nullopt, std::nullopt);
  fs::path img = dir / "step-0000.png";
  write_text(img, "TAMPERED");
  std::string msg = input_error([&] { s.image_path(0); });
  CHECK(msg.rfind(img.string() + ": steps[0] image was modified after s.json recorded it", 0) == 0);
  fs::remove(img);
  msg = input_error([&] { s.image_path(0); });
  CHECK(msg.rfind(img.string() + ": steps[0] image of s.json is missing", 0) == 0);
  CHECK(input_error([&] { s.image_path(3); }) == "s.json: step 3 does not exist (the session has steps 0..0)");
}

TEST_CASE("session: paths escaping the session directory are rejected") {
  CHECK(is_safe_relative_path("step-0000.png"));
  CHECK(is_safe_relative_path("sub/step.png"));
  CHECK_FALSE(is_safe_relative_path(""));
  CHECK_FALSE(is_safe_relative_path("/etc/passwd"));
  CHECK_FALSE(is_safe_relative_path("../x.png"));
  CHECK_FALSE(is_safe_relative_path("a/../../x.png"));
  json d = one_step_doc();
  d["steps"][0]["file"] = "../secret.png";
  CHECK(parse_error(d) ==
        "s.json: steps[0].file: '../secret.png' must be a path relative to the session directory, without '..'");
  d = one_step_doc();
  d["steps"][0]["file"] = "/tmp/x.png";
  CHECK(parse_error(d).find("steps[0].file: '/tmp/x.png' must be a path relative") != std::string::npos);
  d = one_step_doc();
  d["cache"] = json::array({json{{"image_sha256", sha256_hex("x")}, {"model", "m"}, {"file", "../e.bin"}}});
  CHECK(parse_error(d).find("s.json: cache[0].file: '../e.bin'") == 0);
  // put_cache refuses a file outside the directory.
  lli::test::TempDir dir;
  Session s("s.json", dir / "sess");
  CHECK_THROWS_AS(s.put_cache(sha256_hex("x"), "m", dir / "outside.bin"), RuntimeError);
}

TEST_CASE("session: version and structure validation messages") {
  json d = one_step_doc();
  d["lli_session"] = 2;
  CHECK(parse_error(d) == "s.json: lli_session: version 2 is not supported (this build reads version 1)");
  d = one_step_doc();
  d.erase("lli_session");
  CHECK(parse_error(d) == "s.json: not an lli session file (no \"lli_session\" version key)");
  d = one_step_doc();
  d["current"] = 1;
  CHECK(parse_error(d) == "s.json: current: 1 is out of range (the session has steps 0..0)");
  d = one_step_doc();
  d["steps"][0]["parent"] = 0;
  CHECK(parse_error(d) == "s.json: steps[0].parent: 0 is not an earlier step");
  d = one_step_doc();
  d["steps"][0]["sha256"] = "abc";
  CHECK(parse_error(d) == "s.json: steps[0].sha256: 'abc' is not a sha256 (64 lower-case hex digits)");
  d = one_step_doc();
  d["stepz"] = json::array();
  CHECK(parse_error(d) == "s.json: stepz: unknown key 'stepz' (allowed: lli_session, current, steps, masks, chat, cache)");
  d = one_step_doc();
  d["steps"][0]["params"] = 5;
  CHECK(parse_error(d) == "s.json: steps[0].params: expected an object, got a number");
  d = one_step_doc();
  d["steps"][0]["seed"] = 1.5;
  CHECK(parse_error(d) == "s.json: steps[0].seed: expected an integer, got a non-integer number");
  d = one_step_doc();
  d["chat"] = json::array({json{{"role", "system"}, {"text", "x"}, {"step", 0}}});
  CHECK(parse_error(d) == "s.json: chat[0].role: unknown role 'system' (expected \"user\" or \"assistant\")");
  d = one_step_doc();
  d["masks"] = json::array({json{{"file", "m.png"}, {"sha256", sha256_hex("m")}, {"step", 4}}});
  CHECK(parse_error(d) == "s.json: masks[0].step: step 4 does not exist (the session has steps 0..0)");
  d = one_step_doc();
  d["steps"][0].erase("tool");
  CHECK(parse_error(d) == "s.json: steps[0]: missing key 'tool'");
  // JSON syntax errors carry line:column.
  std::string msg = input_error([] { Session::parse("{\n  \"lli_session\": 1,\n}", "s.json", "."); });
  CHECK(msg.rfind("s.json:3:1: ", 0) == 0);
  // A valid document passes.
  CHECK(parse_error(one_step_doc()) == "<no error>");
}

TEST_CASE("session: cache entries are replaced per key and stale files are ignored") {
  lli::test::TempDir dir;
  Session s("s.json", dir.path);
  std::string sha = sha256_hex("IMG");
  fs::path p = s.cache_file_path(sha, "sam/vit base", "pt");
  CHECK(p.parent_path() == dir.path);
  CHECK(p.filename().string() == "cache-" + sha.substr(0, 16) + "-sam_vit_base.pt");
  write_text(p, "E1");
  s.put_cache(sha, "sam/vit base", p);
  CHECK(s.cache().size() == 1);
  CHECK(s.cache()[0].file == p.filename().string());
  s.put_cache_bytes(sha, "sam/vit base", "E2", "pt");
  CHECK(s.cache().size() == 1);
  CHECK(read_file(s.find_cache(sha, "sam/vit base")->string()) == "E2");
  fs::remove(p);
  CHECK_FALSE(s.find_cache(sha, "sam/vit base").has_value());
}

TEST_CASE("session: session directory is created on the first write") {
  lli::test::TempDir dir;
  fs::path sd = dir / "nested" / "sess";
  Session s = Session::load((dir / "s.json").string(), sd.string());
  CHECK(s.dir() == sd);
  CHECK_FALSE(fs::exists(sd));
  s.add_image_step("A", "png", "import", "import", {}, std::nullopt, std::nullopt);
  CHECK(fs::is_regular_file(sd / "step-0000.png"));
  s.save((dir / "s.json").string());
  Session t = Session::load((dir / "s.json").string(), sd.string());
  CHECK(read_file(t.image_path(0).string()) == "A");
  // Loaded without --session-dir, the steps are looked for beside the session file.
  Session u = Session::load((dir / "s.json").string());
  CHECK(input_error([&] { u.image_path(0); }).find("is missing") != std::string::npos);
}
