// Model registry: config lookup order, YAML errors, model resolution, per-tool defaults.
#include "test_util.h"

#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <string>

#include "lli/error.h"
#include "lli/registry.h"

using namespace lli;

namespace {

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// Sets (or unsets, with nullopt) an environment variable for the scope.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(std::string n, std::optional<std::string> value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    if (value) setenv(name.c_str(), value->c_str(), 1);
    else unsetenv(name.c_str());
  }
  ~EnvGuard() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

std::string model_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "<no error>";
}

const char* kSmall = R"(models:
  tiny:
    kind: sam
    path: ${LLI_MODELS:-~/models}/tiny
    source: facebook/sam-vit-base
    dtype: float32
  rel:
    kind: lama
    path: ckpt/rel
tools:
  lli-chat:
    temperature: 0.5
    max_new_tokens: 64
    model: tiny
    sample: yes
  lli-edit:
    dilate: big
)";

}  // namespace

TEST_CASE("registry: expand_path handles ~, ${VAR}, ${VAR:-default} and $VAR") {
  lli::test::TempDir home;
  EnvGuard h("HOME", home.path.string());
  EnvGuard m("LLI_TEST_MODELS_X", std::nullopt);
  CHECK(expand_path("~/a") == home.path.string() + "/a");
  CHECK(expand_path("~") == home.path.string());
  CHECK(expand_path("a/~/b") == "a/~/b");
  CHECK(expand_path("${LLI_TEST_MODELS_X:-~/.cache/m}/x") == home.path.string() + "/.cache/m/x");
  CHECK(expand_path("${LLI_TEST_MODELS_X}/x") == "/x");
  {
    EnvGuard set("LLI_TEST_MODELS_X", std::string("/data/m"));
    CHECK(expand_path("${LLI_TEST_MODELS_X:-~/.cache/m}/x") == "/data/m/x");
    CHECK(expand_path("$LLI_TEST_MODELS_X/y") == "/data/m/y");
  }
  CHECK(expand_path("cost$5") == "cost$5");
  CHECK_THROWS_AS(expand_path("${OOPS"), ModelError);
}

TEST_CASE("registry: config lookup order --config > $LLI_CONFIG > ~/.config > installed > source") {
  lli::test::TempDir home, other;
  EnvGuard h("HOME", home.path.string());
  EnvGuard env("LLI_CONFIG", std::nullopt);

  // Nothing in HOME: the installed or source tree config (the last candidates) is used.
  auto paths = Registry::search_paths();
  REQUIRE(paths.size() >= 2);
  CHECK(paths[0] == home.path / ".config/lli/models.yaml");
  Registry fallback = Registry::load();
  CHECK(fallback.config_file().filename() == "models.yaml");
  CHECK(fallback.config_file() != paths[0]);

  // ~/.config/lli/models.yaml wins over the installed and source ones.
  write_text(home / ".config/lli/models.yaml", "models:\n  home-model: {kind: sam, path: /x}\n");
  Registry r1 = Registry::load();
  CHECK(r1.config_file() == home.path / ".config/lli/models.yaml");
  CHECK(r1.has_model("home-model"));

  // $LLI_CONFIG wins over ~/.config.
  write_text(other / "env.yaml", "models:\n  env-model: {kind: sam, path: /x}\n");
  {
    EnvGuard e("LLI_CONFIG", (other / "env.yaml").string());
    CHECK(Registry::search_paths()[0] == other / "env.yaml");
    Registry r2 = Registry::load();
    CHECK(r2.has_model("env-model"));
    CHECK_FALSE(r2.has_model("home-model"));

    // --config wins over $LLI_CONFIG.
    write_text(other / "flag.yaml", "models:\n  flag-model: {kind: sam, path: /x}\n");
    Registry r3 = Registry::load((other / "flag.yaml").string());
    CHECK(r3.has_model("flag-model"));
    CHECK_FALSE(r3.has_model("env-model"));
    CHECK(Registry::search_paths((other / "flag.yaml").string())[1] == other / "env.yaml");

    // An explicit file that does not exist is an error, not a silent fallback.
    CHECK_THROWS_AS(Registry::load((other / "nope.yaml").string()), UsageError);
  }
  {
    EnvGuard e("LLI_CONFIG", (other / "nope.yaml").string());
    CHECK(model_error([] { Registry::load(); }) == "$LLI_CONFIG=" + (other / "nope.yaml").string() + ": no such file");
  }
}

TEST_CASE("registry: installed_demo picks an installed demo-* entry of the kind, in name order") {
  lli::test::TempDir t;
  fs::create_directories(t / "b");
  const Registry r = Registry::parse(
      "models:\n"
      "  demo-a:\n    kind: sam\n    path: missing\n"      // not installed: skipped
      "  demo-b:\n    kind: sam\n    path: b\n"
      "  sam-real:\n    kind: sam\n    path: b\n"           // not a demo-* name
      "  demo-c:\n    kind: lama\n    path: b\n",
      t / "models.yaml");
  const auto d = r.installed_demo("sam");
  REQUIRE(d.has_value());
  CHECK(d->name == "demo-b");
  CHECK(d->kind == "sam");
  CHECK(r.installed_demo("lama")->name == "demo-c");
  CHECK_FALSE(r.installed_demo("llava").has_value());
}

TEST_CASE("registry: the shipped configs/models.yaml parses and names the expected models") {
  lli::test::TempDir home;
  EnvGuard h("HOME", home.path.string());
  EnvGuard env("LLI_CONFIG", std::nullopt);
  EnvGuard m("LLI_MODELS", std::nullopt);
  fs::path shipped = fs::path(LLI_SAMPLES).parent_path() / "configs" / "models.yaml";
  Registry r = Registry::load_file(shipped);
  for (const char* name : {"llava-1.5-7b", "llava-1.5-13b", "sam-vit-base", "sam-vit-large",
                           "sam-vit-huge", "slimsam", "gligen-generation", "gligen-inpainting", "big-lama"})
    CHECK_MESSAGE(r.has_model(name), name);
  CHECK(r.models().at("llava-1.5-7b").source == "llava-hf/llava-1.5-7b-hf");
  CHECK(r.models().at("gligen-inpainting").source == "masterful/gligen-1-4-inpainting-text-box");
  CHECK(r.models().at("sam-vit-huge").kind == "sam");
  // The demo models ship in the repository: their paths are relative to the config file.
  const auto demo = r.resolve_model("demo-sam");
  CHECK(demo.kind == "sam");
  CHECK(fs::equivalent(demo.dir, fs::path(LLI_SAMPLES).parent_path() / "models" / "demo-sam"));
  // ... and are what a tool falls back to when its default checkpoint of that kind is missing.
  const auto fallback = r.installed_demo("sam");
  REQUIRE(fallback.has_value());
  CHECK(fallback->name == "demo-sam");
  const auto owl = r.installed_demo("owlv2");  // lli-segment --text's grounder when no OWL model is installed
  REQUIRE(owl.has_value());
  CHECK(owl->name == "demo-owl");
  CHECK_FALSE(r.installed_demo("owlvit").has_value());
  CHECK(r.tool_string("lli-chat", "model", "") == "llava-1.5-7b");
  CHECK(r.tool_double("lli-chat", "temperature", 1.0) == doctest::Approx(0.2));
  CHECK(r.tool_double("lli-chat", "top_p", 1.0) == doctest::Approx(0.7));
  CHECK(r.tool_int("lli-chat", "max_new_tokens", 0) == 512);
  CHECK(r.tool_string("lli-segment", "backend", "") == "grabcut");
  CHECK(r.tool_string("lli-segment", "model", "") == "sam-vit-base");
  CHECK(r.tool_string("lli-edit", "backend", "") == "auto");
  CHECK(r.tool_int("lli-edit", "dilate", -1) == -1);  // not set: scaled with the image
  CHECK(r.tool_double("lli-edit", "beta", 0) == doctest::Approx(1.0));
  CHECK(r.tool_double("lli-generate", "beta", 0) == doctest::Approx(0.3));
  CHECK(r.tool_int("lli-generate", "steps", 0) == 50);
  CHECK(r.tool_double("lli-generate", "guidance", 0) == doctest::Approx(7.5));
  // demo-gligen grounds every sampling step (its card measures beta 1 against 0.3).
  CHECK(r.model_double("demo-gligen", "beta", 0.3) == doctest::Approx(1.0));
  CHECK(r.model_double("gligen-generation", "beta", 0.3) == doctest::Approx(0.3));
  // Paths default under ~/.cache/lli/models when LLI_MODELS is unset.
  std::string msg = model_error([&] { r.resolve_model("sam-vit-base"); });
  CHECK(msg.find(home.path.string() + "/.cache/lli/models/sam-vit-base") != std::string::npos);
}

TEST_CASE("registry: precedence built-in < YAML, and typed getters check types") {
  Registry empty;
  CHECK(empty.tool_double("lli-chat", "temperature", 0.2) == doctest::Approx(0.2));
  CHECK_FALSE(empty.tool_default("lli-chat", "temperature").has_value());
  Registry r = Registry::parse(kSmall, "/cfg/models.yaml");
  CHECK(r.tool_double("lli-chat", "temperature", 0.2) == doctest::Approx(0.5));
  CHECK(r.tool_int("lli-chat", "max_new_tokens", 512) == 64);
  CHECK(r.tool_int("lli-chat", "absent", 7) == 7);
  CHECK(r.tool_bool("lli-chat", "sample", false) == true);
  CHECK(r.tool_default("lli-chat", "model") == std::optional<std::string>("tiny"));
  CHECK(r.tool_string("lli-generate", "model", "builtin") == "builtin");
  CHECK(model_error([&] { r.tool_int("lli-edit", "dilate", 8); }) ==
        "/cfg/models.yaml:17:13: tools.lli-edit.dilate: 'big' is not an integer");
  CHECK(model_error([&] { r.tool_double("lli-edit", "dilate", 8); }) ==
        "/cfg/models.yaml:17:13: tools.lli-edit.dilate: 'big' is not a number");
  CHECK(model_error([&] { r.tool_int("lli-chat", "temperature", 1); }) ==
        "/cfg/models.yaml:12:18: tools.lli-chat.temperature: '0.5' is not an integer");
  CHECK(model_error([&] { r.tool_bool("lli-chat", "model", false); }) ==
        "/cfg/models.yaml:14:12: tools.lli-chat.model: 'tiny' is not a boolean (true or false)");
}

TEST_CASE("registry: a model's defaults override tools.<tool>, are typed and named in errors") {
  const char* yaml =
      "models:\n"
      "  g:\n"
      "    kind: gligen\n"
      "    path: /x\n"
      "    defaults: {beta: 1.0, steps: 20, bad: big}\n"
      "  h: {kind: gligen, path: /y}\n"
      "tools:\n"
      "  lli-generate: {beta: 0.3}\n";
  Registry r = Registry::parse(yaml, "m.yaml");
  const double tool_beta = r.tool_double("lli-generate", "beta", 0.5);
  CHECK(tool_beta == doctest::Approx(0.3));
  CHECK(r.model_double("g", "beta", tool_beta) == doctest::Approx(1.0));
  CHECK(r.model_double("h", "beta", tool_beta) == doctest::Approx(0.3));      // no defaults: the value so far
  CHECK(r.model_double("absent", "beta", tool_beta) == doctest::Approx(0.3));
  CHECK(r.model_int("g", "steps", 50) == 20);
  CHECK(r.model_default("g", "bad") == std::optional<std::string>("big"));
  CHECK_FALSE(r.model_default("g", "guidance").has_value());
  CHECK(model_error([&] { r.model_double("g", "bad", 1); }) == "m.yaml:5:43: models.g.defaults.bad: 'big' is not a number");
  CHECK(model_error([&] { r.model_int("g", "beta", 1); }) == "m.yaml:5:22: models.g.defaults.beta: '1.0' is not an integer");
  CHECK(model_error([] { Registry::parse("models:\n  a: {kind: sam, path: /x, defaults: 3}\n", "m.yaml"); }) ==
        "m.yaml:2:38: models.a.defaults: expected a mapping key -> value");
  CHECK(model_error([] { Registry::parse("models:\n  a: {kind: sam, path: /x, defaults: {k: [1]}}\n", "m.yaml"); }) ==
        "m.yaml:2:42: models.a.defaults.k: expected a single value");
}

TEST_CASE("registry: malformed YAML and bad entries name file:line:column") {
  std::string msg = model_error([] { Registry::parse("models:\n  a: [1, 2\n", "m.yaml"); });
  CHECK(msg.rfind("m.yaml:", 0) == 0);
  CHECK(msg.find("m.yaml:3:1: ") == 0);
  CHECK(model_error([] { Registry::parse("modelz: {}\n", "m.yaml"); }) ==
        "m.yaml:1:1: unknown top-level key 'modelz' (allowed: models, tools)");
  CHECK(model_error([] { Registry::parse("models:\n  a:\n    kind: sam\n    pth: /x\n", "m.yaml"); }) ==
        "m.yaml:4:5: models.a: unknown key 'pth' (allowed: kind, path, source, dtype, description, defaults)");
  CHECK(model_error([] { Registry::parse("models:\n  a:\n    kind: sam\n", "m.yaml"); }) ==
        "m.yaml:3:5: models.a: missing 'path'");
  CHECK(model_error([] { Registry::parse("models:\n  a: {kind: sam, path: /x, dtype: int8}\n", "m.yaml"); }) ==
        "m.yaml:2:35: models.a.dtype: 'int8' is not float32, float16 or bfloat16");
  CHECK(model_error([] { Registry::parse("tools:\n  lli-chat:\n    stop: [a, b]\n", "m.yaml"); }) ==
        "m.yaml:3:11: tools.lli-chat.stop: expected a single value");
  CHECK(model_error([] { Registry::parse("- a\n- b\n", "m.yaml"); }) ==
        "m.yaml:1:1: expected a mapping with 'models' and 'tools'");
  CHECK(Registry::parse("", "m.yaml").models().empty());
  // Through load_file too.
  lli::test::TempDir dir;
  write_text(dir / "bad.yaml", "models: [\n");
  CHECK(model_error([&] { Registry::load_file(dir / "bad.yaml"); }).rfind((dir / "bad.yaml").string() + ":", 0) == 0);
}

TEST_CASE("registry: resolve_model by directory, by name, unknown, missing directory") {
  lli::test::TempDir root, home;
  EnvGuard h("HOME", home.path.string());
  EnvGuard m("LLI_MODELS", root.path.string());
  Registry r = Registry::parse(kSmall, root / "cfg" / "models.yaml");

  // A directory argument is used as it is.
  fs::create_directories(root / "somewhere");
  ResolvedModel d = r.resolve_model((root / "somewhere").string());
  CHECK(d.dir == root / "somewhere");
  CHECK_FALSE(d.from_registry);
  CHECK(d.kind.empty());

  // A registry name whose directory is missing: where it was expected and how to get it.
  std::string msg = model_error([&] { r.resolve_model("tiny"); });
  CHECK(msg == "model 'tiny' (sam) is not installed: expected its checkpoint directory at " +
                   (root / "tiny").string() + " (from " + (root / "cfg/models.yaml").string() +
                   "); get it with `huggingface-cli download facebook/sam-vit-base --local-dir " +
                   (root / "tiny").string() +
                   "` on a machine with network access (or set LLI_MODELS, or pass a checkpoint directory)");

  // Present: resolved with the entry's metadata; the env var is honoured.
  fs::create_directories(root / "tiny");
  ResolvedModel t = r.resolve_model("tiny");
  CHECK(t.from_registry);
  CHECK(t.dir == root / "tiny");
  CHECK(t.kind == "sam");
  CHECK(t.dtype == "float32");
  CHECK(t.source == "facebook/sam-vit-base");

  // Relative registry paths are relative to the config file's directory.
  fs::create_directories(root / "cfg" / "ckpt" / "rel");
  CHECK(r.resolve_model("rel").dir == root / "cfg" / "ckpt" / "rel");

  // Unknown names list the known ones.
  CHECK(model_error([&] { r.resolve_model("llava-9b"); }) ==
        "unknown model 'llava-9b' (known in " + (root / "cfg/models.yaml").string() +
            ": rel, tiny; or pass a checkpoint directory)");
  CHECK(model_error([&] { r.resolve_model("./no/such/dir"); }) ==
        "./no/such/dir: checkpoint directory does not exist");
  CHECK(model_error([&] { Registry().resolve_model("x"); }) ==
        "unknown model 'x' (known in no model config found: none; or pass a checkpoint directory)");
}
