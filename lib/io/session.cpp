// Session files (see lli/session.h for the format and the rules).
#include "lli/session.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "io/bounded_parse.h"
#include "io/json_util.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"

namespace lli {

using nlohmann::json;

namespace {
using json_util::check_keys;
using json_util::Ctx;
using json_util::type_name;

constexpr std::uint64_t kMaxSessionBytes = 64ull << 20;
constexpr std::uint64_t kMaxImportBytes = 1ull << 30;

const json& require(const Ctx& c, const json& obj, const char* key, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end()) c.fail(path, std::string("missing key '") + key + "'");
  return *it;
}

std::string get_string(const Ctx& c, const json& v, const std::string& path, bool non_empty = false) {
  if (!v.is_string()) c.fail(path, "expected a string, got " + type_name(v));
  const auto& s = v.get_ref<const std::string&>();
  if (non_empty && s.empty()) c.fail(path, "must not be empty");
  return s;
}

std::int64_t get_int(const Ctx& c, const json& v, const std::string& path) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      c.fail(path, "integer out of range");
    return v.get<std::int64_t>();
  }
  c.fail(path, "expected an integer, got " + (v.is_number() ? "a non-integer number" : type_name(v)));
}

bool is_sha256_hex(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

std::string get_sha(const Ctx& c, const json& v, const std::string& path) {
  std::string s = get_string(c, v, path);
  if (!is_sha256_hex(s)) c.fail(path, quote_excerpt(s) + " is not a sha256 (64 lower-case hex digits)");
  return s;
}

std::string get_rel_path(const Ctx& c, const json& v, const std::string& path) {
  std::string s = get_string(c, v, path);
  if (!is_safe_relative_path(s))
    c.fail(path, quote_excerpt(s) + " must be a path relative to the session directory, without '..'");
  return s;
}

int get_step_ref(const Ctx& c, const json& v, const std::string& path, int n_steps) {
  std::int64_t s = get_int(c, v, path);
  if (s < 0 || s >= n_steps)
    c.fail(path, "step " + std::to_string(s) + " does not exist (the session has " +
                     (n_steps ? "steps 0.." + std::to_string(n_steps - 1) : std::string("no steps")) + ")");
  return static_cast<int>(s);
}

json get_params(const Ctx& c, const json& obj, const std::string& path) {
  auto it = obj.find("params");
  if (it == obj.end() || it->is_null()) return json::object();
  if (!it->is_object()) c.fail(path + ".params", "expected an object, got " + type_name(*it));
  return *it;
}

std::string clean_ext(std::string ext) {
  if (!ext.empty() && ext[0] == '.') ext.erase(0, 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (ext.empty() || ext.size() > 16 ||
      !std::all_of(ext.begin(), ext.end(), [](unsigned char ch) { return std::isalnum(ch); }))
    throw RuntimeError("session: file extension " + quote_excerpt(ext) + " is not valid");
  return ext;
}

std::string pad4(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d", i);
  return buf;
}

std::string sanitize_name(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) out += (std::isalnum(ch) || ch == '.' || ch == '_' || ch == '-') ? static_cast<char>(ch) : '_';
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out.substr(0, 64);
}

}  // namespace

const char* chat_role_name(ChatRole r) { return r == ChatRole::assistant ? "assistant" : "user"; }

std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool is_safe_relative_path(const std::string& rel) {
  if (rel.empty() || rel.find('\0') != std::string::npos) return false;
  fs::path p(rel);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

// ---- construction, load, save ----------------------------------------------------------------

Session::Session(std::string name, fs::path dir) : name_(std::move(name)), dir_(std::move(dir)) {}

fs::path Session::resolve_dir(const std::string& session_path, const std::string& session_dir) {
  if (!session_dir.empty()) return fs::path(session_dir);
  if (session_path == "-") return fs::path("lli-session");
  fs::path parent = fs::path(session_path).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

Session Session::load(const std::string& session_path, const std::string& session_dir) {
  std::string name = session_path == "-" ? "<stdin>" : session_path;
  fs::path dir = resolve_dir(session_path, session_dir);
  if (session_path == "-") return parse(read_file(session_path, kMaxSessionBytes), name, dir);
  std::error_code ec;
  Session s = fs::exists(session_path, ec) ? parse(read_file(session_path, kMaxSessionBytes), name, dir)
                                           : Session(name, dir);
  s.path_ = session_path;  // file-backed: changes lock and re-read it
  return s;
}

void Session::begin_change() {
  if (path_.empty() || path_ == "-" || lock_) return;
  auto lock = std::make_shared<FileLock>(path_ + ".lock", name_);
  std::error_code ec;
  if (fs::exists(path_, ec)) {
    // Another process may have appended since load(): continue from the file's history, which
    // must still start with the steps this process saw (their indices are in use).
    Session disk = parse(read_file(path_, kMaxSessionBytes), name_, dir_);
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      if (i >= disk.steps_.size() || disk.steps_[i].file != steps_[i].file || disk.steps_[i].sha256 != steps_[i].sha256)
        throw InputError(name_ + ": the session was rewritten by another program while this one ran (step " +
                         std::to_string(i) + " is gone or different); nothing was recorded");
    }
    current_ = disk.current_;
    steps_ = std::move(disk.steps_);
    masks_ = std::move(disk.masks_);
    chat_ = std::move(disk.chat_);
    cache_ = std::move(disk.cache_);
  }
  lock_ = std::move(lock);
}

Session Session::parse(std::string_view text, const std::string& name, const fs::path& dir) {
  Session s(name, dir);
  if (std::all_of(text.begin(), text.end(), [](unsigned char ch) { return std::isspace(ch); }))
    return s;
  if (text.size() > kMaxSessionBytes) throw InputError(fmt_size_error(name, text.size(), kMaxSessionBytes));
  json doc = parse_json_bounded(text, name, ExitCode::bad_input);
  Ctx c{name};
  if (!doc.is_object()) c.fail("", "expected a JSON object at the top level, got " + type_name(doc));
  auto ver = doc.find("lli_session");
  if (ver == doc.end())
    c.fail("", "not an lli session file (no \"lli_session\" version key)");
  if (!ver->is_number_integer() || ver->get<std::int64_t>() != kVersion)
    c.fail("lli_session", "version " + json_excerpt(*ver) + " is not supported (this build reads version " +
                              std::to_string(kVersion) + ")");
  check_keys(c, doc, "", {"lli_session", "current", "steps", "masks", "chat", "cache"});

  if (auto it = doc.find("steps"); it != doc.end()) {
    if (!it->is_array()) c.fail("steps", "expected an array, got " + type_name(*it));
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& o = (*it)[i];
      std::string p = "steps[" + std::to_string(i) + "]";
      if (!o.is_object()) c.fail(p, "expected an object, got " + type_name(o));
      check_keys(c, o, p, {"file", "sha256", "tool", "op", "params", "seed", "parent", "created"});
      SessionStep st;
      st.file = get_rel_path(c, require(c, o, "file", p), p + ".file");
      st.sha256 = get_sha(c, require(c, o, "sha256", p), p + ".sha256");
      st.tool = get_string(c, require(c, o, "tool", p), p + ".tool", true);
      st.op = get_string(c, require(c, o, "op", p), p + ".op");
      st.params = get_params(c, o, p);
      if (auto sd = o.find("seed"); sd != o.end() && !sd->is_null()) st.seed = get_int(c, *sd, p + ".seed");
      if (auto pa = o.find("parent"); pa != o.end() && !pa->is_null()) {
        std::int64_t v = get_int(c, *pa, p + ".parent");
        if (v < 0 || v >= static_cast<std::int64_t>(i))
          c.fail(p + ".parent", std::to_string(v) + " is not an earlier step");
        st.parent = static_cast<int>(v);
      }
      if (auto cr = o.find("created"); cr != o.end()) st.created = get_string(c, *cr, p + ".created");
      s.steps_.push_back(std::move(st));
    }
  }
  int n = s.size();
  auto cur = doc.find("current");
  if (n == 0) {
    if (cur != doc.end() && !cur->is_null() && !(cur->is_number_integer() && cur->get<std::int64_t>() == -1))
      c.fail("current", json_excerpt(*cur) + " is out of range (the session has no steps)");
  } else {
    if (cur == doc.end() || cur->is_null()) c.fail("current", "missing (the session has steps)");
    std::int64_t v = get_int(c, *cur, "current");
    if (v < 0 || v >= n)
      c.fail("current", std::to_string(v) + " is out of range (the session has steps 0.." +
                            std::to_string(n - 1) + ")");
    s.current_ = static_cast<int>(v);
  }

  if (auto it = doc.find("masks"); it != doc.end()) {
    if (!it->is_array()) c.fail("masks", "expected an array, got " + type_name(*it));
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& o = (*it)[i];
      std::string p = "masks[" + std::to_string(i) + "]";
      if (!o.is_object()) c.fail(p, "expected an object, got " + type_name(o));
      check_keys(c, o, p, {"file", "sha256", "step", "tool", "params", "score", "label"});
      SessionMask m;
      m.file = get_rel_path(c, require(c, o, "file", p), p + ".file");
      m.sha256 = get_sha(c, require(c, o, "sha256", p), p + ".sha256");
      m.step = get_step_ref(c, require(c, o, "step", p), p + ".step", n);
      if (auto t = o.find("tool"); t != o.end()) m.tool = get_string(c, *t, p + ".tool");
      m.params = get_params(c, o, p);
      if (auto sc = o.find("score"); sc != o.end() && !sc->is_null()) {
        if (!sc->is_number()) c.fail(p + ".score", "expected a number, got " + type_name(*sc));
        m.score = sc->get<double>();
      }
      if (auto l = o.find("label"); l != o.end()) m.label = get_string(c, *l, p + ".label");
      s.masks_.push_back(std::move(m));
    }
  }

  if (auto it = doc.find("chat"); it != doc.end()) {
    if (!it->is_array()) c.fail("chat", "expected an array, got " + type_name(*it));
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& o = (*it)[i];
      std::string p = "chat[" + std::to_string(i) + "]";
      if (!o.is_object()) c.fail(p, "expected an object, got " + type_name(o));
      check_keys(c, o, p, {"role", "text", "step", "created"});
      ChatTurn t;
      std::string role = get_string(c, require(c, o, "role", p), p + ".role");
      if (role == "user") t.role = ChatRole::user;
      else if (role == "assistant") t.role = ChatRole::assistant;
      else c.fail(p + ".role", "unknown role " + quote_excerpt(role) + " (expected \"user\" or \"assistant\")");
      t.text = get_string(c, require(c, o, "text", p), p + ".text");
      const json& st = require(c, o, "step", p);
      t.step = st.is_null() ? -1 : get_step_ref(c, st, p + ".step", n);
      if (auto cr = o.find("created"); cr != o.end()) t.created = get_string(c, *cr, p + ".created");
      s.chat_.push_back(std::move(t));
    }
  }

  if (auto it = doc.find("cache"); it != doc.end()) {
    if (!it->is_array()) c.fail("cache", "expected an array, got " + type_name(*it));
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& o = (*it)[i];
      std::string p = "cache[" + std::to_string(i) + "]";
      if (!o.is_object()) c.fail(p, "expected an object, got " + type_name(o));
      check_keys(c, o, p, {"image_sha256", "model", "file"});
      CacheEntry e;
      e.image_sha256 = get_sha(c, require(c, o, "image_sha256", p), p + ".image_sha256");
      e.model = get_string(c, require(c, o, "model", p), p + ".model", true);
      e.file = get_rel_path(c, require(c, o, "file", p), p + ".file");
      s.cache_.push_back(std::move(e));
    }
  }
  return s;
}

std::string Session::dump() const {
  json j = json::object();
  j["lli_session"] = kVersion;
  j["current"] = current_ < 0 ? json(nullptr) : json(current_);
  json steps = json::array();
  for (const auto& st : steps_) {
    steps.push_back({{"file", st.file},
                     {"sha256", st.sha256},
                     {"tool", st.tool},
                     {"op", st.op},
                     {"params", st.params},
                     {"seed", st.seed ? json(*st.seed) : json(nullptr)},
                     {"parent", st.parent ? json(*st.parent) : json(nullptr)},
                     {"created", st.created}});
  }
  j["steps"] = steps;
  json masks = json::array();
  for (const auto& m : masks_) {
    masks.push_back({{"file", m.file},
                     {"sha256", m.sha256},
                     {"step", m.step},
                     {"tool", m.tool},
                     {"params", m.params},
                     {"score", m.score ? json(*m.score) : json(nullptr)},
                     {"label", m.label}});
  }
  j["masks"] = masks;
  json chat = json::array();
  for (const auto& t : chat_)
    chat.push_back({{"role", chat_role_name(t.role)},
                    {"text", t.text},
                    {"step", t.step < 0 ? json(nullptr) : json(t.step)},
                    {"created", t.created}});
  j["chat"] = chat;
  json cache = json::array();
  for (const auto& e : cache_)
    cache.push_back({{"image_sha256", e.image_sha256}, {"model", e.model}, {"file", e.file}});
  j["cache"] = cache;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

void Session::save(const std::string& path) {
  const bool own = !path_.empty() && path_ != "-" && path == path_;
  if (own) begin_change();  // even with no change: never write back a stale history
  try {
    write_file_atomic(path, dump());
  } catch (...) {
    // Not recorded (disk full, ...): the step and mask files written for it would be orphans.
    for (const auto& f : created_) {
      std::error_code ec;
      fs::remove(f, ec);
    }
    created_.clear();
    throw;
  }
  created_.clear();
  if (own) lock_.reset();
}

// ---- steps -----------------------------------------------------------------------------------

const SessionStep& Session::step(int index) const {
  if (index < 0 || index >= size())
    throw InputError(name_ + ": step " + std::to_string(index) + " does not exist (the session has " +
                     (empty() ? std::string("no steps") : "steps 0.." + std::to_string(size() - 1)) + ")");
  return steps_[static_cast<std::size_t>(index)];
}

int Session::input_step(std::optional<int> from_step) const {
  if (empty())
    throw InputError(name_ + ": the session has no image yet (pass -i IMAGE to start it)");
  if (!from_step) return current_;
  if (*from_step < 0 || *from_step >= size())
    throw InputError("--from-step " + std::to_string(*from_step) + ": " + name_ + " has steps 0.." +
                     std::to_string(size() - 1));
  return *from_step;
}

void Session::ensure_dir() const {
  std::error_code ec;
  if (fs::is_directory(dir_, ec)) return;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    throw RuntimeError(dir_.string() + ": cannot create the session directory (" + ec.message() + ")");
}

// A session entry that is (or passes through) a symbolic link resolving outside the session
// directory: its target, else empty.
fs::path Session::link_outside(const fs::path& p) const {
  std::error_code ec;
  bool link = false;
  for (fs::path q = p; !q.empty() && q != dir_ && q.has_relative_path(); q = q.parent_path()) {
    if (fs::is_symlink(q, ec)) link = true;
    if (q == q.parent_path()) break;
  }
  if (!link) return {};
  const fs::path base = fs::weakly_canonical(fs::absolute(dir_, ec), ec);
  const fs::path target = fs::weakly_canonical(fs::absolute(p, ec), ec);
  const std::string rel = target.lexically_relative(base).string();
  return is_safe_relative_path(rel) ? fs::path() : target;
}

fs::path Session::checked_file(const std::string& rel, const std::string& sha,
                               const std::string& what) const {
  if (!is_safe_relative_path(rel))
    throw InputError(name_ + ": " + what + ": " + quote_excerpt(rel) + " escapes the session directory");
  fs::path p = dir_ / rel;
  if (const fs::path out = link_outside(p); !out.empty())
    throw InputError(p.string() + ": " + what + " of " + name_ + " is a symbolic link to " + out.string() +
                     ", outside the session directory; refused");
  std::error_code ec;
  if (!fs::is_regular_file(p, ec))
    throw InputError(p.string() + ": " + what + " of " + name_ +
                     " is missing (session directory " + dir_.string() + "; see --session-dir)");
  std::string got = sha256_file(p);
  if (got != sha)
    throw InputError(p.string() + ": " + what + " was modified after " + name_ +
                     " recorded it (sha256 " + got.substr(0, 16) + "... != recorded " +
                     sha.substr(0, 16) + "...)");
  return p;
}

fs::path Session::image_path(int index) const {
  const SessionStep& st = step(index);
  return checked_file(st.file, st.sha256, "steps[" + std::to_string(index) + "] image");
}

namespace {
// Writes `bytes` as a NEW file in `dir`: stem.ext, else stem-2.ext, stem-3.ext, ... (another
// session or process may share the directory; no file is ever replaced). Returns the name.
std::string write_new_file(const fs::path& dir, const std::string& stem, const std::string& ext,
                           std::string_view bytes) {
  std::error_code ec;
  for (int k = 1;; ++k) {
    if (k > 100000) throw RuntimeError(dir.string() + ": no free file name for " + stem);
    std::string name = stem + (k == 1 ? "" : "-" + std::to_string(k)) + "." + ext;
    if (fs::exists(dir / name, ec)) continue;
    AtomicFile out(dir / name);
    out.write(bytes);
    if (out.commit_new()) return name;
  }
}
}  // namespace

int Session::add_image_step(std::string_view image_bytes, const std::string& ext,
                            const std::string& tool, const std::string& op,
                            const nlohmann::json& params, std::optional<std::int64_t> seed,
                            std::optional<int> parent) {
  if (parent && (*parent < 0 || *parent >= size()))
    throw InputError(name_ + ": parent step " + std::to_string(*parent) + " does not exist");
  if (!params.is_object() && !params.is_null())
    throw RuntimeError(name_ + ": step params must be a JSON object");
  std::string e = clean_ext(ext);
  begin_change();  // the file's latest history: size() is the new step's final index
  ensure_dir();
  int index = size();
  std::string file = write_new_file(dir_, "step-" + pad4(index), e, image_bytes);
  created_.push_back(dir_ / file);
  SessionStep st;
  st.file = file;
  st.sha256 = sha256_hex(image_bytes);
  st.tool = tool;
  st.op = op;
  st.params = params.is_null() ? json::object() : params;
  st.seed = seed;
  st.parent = parent;
  st.created = now_iso8601();
  steps_.push_back(std::move(st));
  current_ = index;
  return index;
}

int Session::add_image_step_from_file(const fs::path& source, const std::string& tool,
                                      const std::string& op, const nlohmann::json& params,
                                      std::optional<std::int64_t> seed, std::optional<int> parent) {
  std::string bytes = read_file(source.string(), kMaxImportBytes);
  std::string ext = source.extension().string();
  if (ext.empty()) throw InputError(source.string() + ": image file has no extension (.png, .jpg, ...)");
  return add_image_step(bytes, ext, tool, op, params, seed, parent);
}

int Session::import_image(const fs::path& image) {
  return add_image_step_from_file(image, "import", "import",
                                  json{{"source", image.filename().string()}}, std::nullopt,
                                  std::nullopt);
}

// ---- masks, chat -----------------------------------------------------------------------------

void Session::set_masks(int step_index, const std::vector<NewMask>& masks) {
  begin_change();
  (void)step(step_index);
  std::vector<SessionMask> out;
  if (!masks.empty()) ensure_dir();
  for (std::size_t k = 0; k < masks.size(); ++k) {
    const NewMask& nm = masks[k];
    std::string bytes = nm.bytes;
    if (bytes.empty()) {
      if (nm.source.empty())
        throw RuntimeError(name_ + ": mask " + std::to_string(k) + " has neither bytes nor a source file");
      bytes = read_file(nm.source.string(), kMaxImportBytes);
    }
    std::string file = write_new_file(dir_, "mask-" + pad4(step_index) + "-" + std::to_string(k), clean_ext(nm.ext), bytes);
    created_.push_back(dir_ / file);
    SessionMask m;
    m.file = file;
    m.sha256 = sha256_hex(bytes);
    m.step = step_index;
    m.tool = nm.tool;
    m.params = nm.params.is_null() ? json::object() : nm.params;
    m.score = nm.score;
    m.label = nm.label;
    out.push_back(std::move(m));
  }
  masks_ = std::move(out);
}

fs::path Session::mask_path(const SessionMask& mask) const {
  return checked_file(mask.file, mask.sha256, "mask (made on step " + std::to_string(mask.step) + ")");
}

void Session::add_chat_turn(ChatRole role, const std::string& text, int step_index) {
  begin_change();
  if (step_index != -1) (void)step(step_index);
  chat_.push_back(ChatTurn{role, text, step_index, now_iso8601()});
}

// ---- cache -----------------------------------------------------------------------------------

std::optional<fs::path> Session::find_cache(const std::string& image_sha256,
                                            const std::string& model) const {
  for (const auto& e : cache_) {
    if (e.image_sha256 != image_sha256 || e.model != model) continue;
    fs::path p = dir_ / e.file;
    std::error_code ec;
    if (!is_safe_relative_path(e.file) || !fs::is_regular_file(p, ec)) return std::nullopt;
    if (const fs::path out = link_outside(p); !out.empty()) {
      log_info("{}: cache {} is a symbolic link to {}, outside the session directory; not used", name_,
               p.string(), out.string());
      return std::nullopt;
    }
    return p;
  }
  return std::nullopt;
}

fs::path Session::cache_file_path(const std::string& image_sha256, const std::string& model,
                                  const std::string& ext) const {
  ensure_dir();
  return dir_ / ("cache-" + sanitize_name(image_sha256.substr(0, 16)) + "-" + sanitize_name(model) +
                 "." + clean_ext(ext));
}

fs::path Session::to_relative(const fs::path& file) const {
  fs::path rel = file;
  if (file.is_absolute()) {
    std::error_code ec;
    fs::path base = fs::weakly_canonical(fs::absolute(dir_, ec), ec);
    fs::path target = fs::weakly_canonical(file, ec);
    rel = target.lexically_relative(base);
  }
  if (!is_safe_relative_path(rel.string()))
    throw RuntimeError(name_ + ": cache file " + file.string() + " is not inside the session directory " +
                       dir_.string());
  return rel;
}

void Session::put_cache(const std::string& image_sha256, const std::string& model, const fs::path& file) {
  if (!is_sha256_hex(image_sha256))
    throw RuntimeError(name_ + ": put_cache: " + quote_excerpt(image_sha256) + " is not a sha256");
  if (model.empty()) throw RuntimeError(name_ + ": put_cache: empty model name");
  begin_change();
  fs::path abs = file.is_absolute() ? file : dir_ / file;
  std::string rel = to_relative(file.is_absolute() ? file : fs::absolute(abs)).string();
  for (auto& e : cache_) {
    if (e.image_sha256 == image_sha256 && e.model == model) {
      e.file = rel;
      return;
    }
  }
  cache_.push_back(CacheEntry{image_sha256, model, rel});
}

fs::path Session::put_cache_bytes(const std::string& image_sha256, const std::string& model,
                                  std::string_view bytes, const std::string& ext) {
  begin_change();
  fs::path p = cache_file_path(image_sha256, model, ext);
  std::error_code ec;
  if (fs::is_symlink(p, ec))
    throw InputError(p.string() + ": the cache file of " + name_ + " is a symbolic link; refusing to replace it");
  AtomicFile f(p);
  f.write(bytes);
  f.commit();
  put_cache(image_sha256, model, fs::absolute(p));
  return p;
}

}  // namespace lli
