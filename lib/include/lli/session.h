// Session files: the chain state shared by all tools (image history, latest masks, chat, caches).
// Torch-free (lli_base).
//
// File format (JSON, versioned):
//   {
//     "lli_session": 1,
//     "current": 2,
//     "steps": [
//       {"file": "step-0000.png", "sha256": "...", "tool": "import", "op": "import",
//        "params": {"source": "photo.jpg"}, "seed": null, "parent": null,
//        "created": "2024-05-01T12:00:00Z"}, ...],
//     "masks": [{"file": "mask-0002-0.png", "sha256": "...", "step": 2, "tool": "lli-segment",
//                "params": {...}, "score": 0.93, "label": ""}],
//     "chat": [{"role": "user", "text": "...", "step": 2, "created": "..."}],
//     "cache": [{"image_sha256": "...", "model": "sam-vit-base", "file": "cache-....bin"}]
//   }
// Step images are files in the session directory, named step-NNNN.<ext> (NNNN = step index, 4+
// digits); masks mask-NNNN-K.png (NNNN = the step the mask was made on, K = index in the set);
// cache files cache-<first 16 hex of the image sha>-<model, [A-Za-z0-9._-] kept>.<ext>.
// Every `file` in a session is relative to the session directory; an absolute path or one with
// ".." is rejected (InputError), so a session file cannot make a tool read or write elsewhere.
//
// Session directory: --session-dir if given; else the directory holding the session file; else
// (session piped through stdin/stdout, path "-") ./lli-session/. It is created on the first write.
//
// New sessions: load() of a path that does not exist yet, or of "-" with empty stdin, gives an
// empty session (no steps). The first tool call then imports its -i image as step 0 with
// import_image() (tool "import", op "import", parent null); later calls read input_step().
//
// History is append-only: steps are only ever added (add_image_step, import_image), never
// rewritten or removed; `current` moves to each new step. Masks are the LATEST set only
// (set_masks replaces them). Chat turns and cache entries are appended.
//
// Concurrent writers: several processes may append to one session file (a batch script with
// `&`, GNU parallel). A session loaded from a file takes an exclusive lock on "<session>.lock"
// (FileLock: flock, waits up to $LLI_LOCK_TIMEOUT s, default 600) at its first change (adding a
// step, setting masks, a chat turn, a cache entry) and RE-READS the file under it, so the change
// is made on the latest history with its final step index; save() writes and releases the lock.
// Every process that saves has its steps recorded, and step files are created without ever
// replacing one (step-NNNN-2.png if another program took the name). A session read from stdin
// ("-") is single-writer: no lock. If the history on disk no longer starts with the steps this
// process loaded (rewritten by another program), the change is refused (InputError).
//
// Validation (load/parse): InputError "session.json: steps[3].parent: 5 is not an earlier step",
// "session.json: lli_session: version 2 is not supported (this build reads version 1)", etc.
// Resolution (image_path/mask_path): a missing file or a sha256 mismatch (the file was modified
// after the session recorded it) is an InputError naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lli {

namespace fs = std::filesystem;

class FileLock;

struct SessionStep {
  std::string file;    // relative to the session directory
  std::string sha256;  // hex of the file's bytes
  std::string tool;    // "import", "lli-edit", "lli-generate", ...
  std::string op;      // "import", "inpaint", "generate", "remove", ...
  nlohmann::json params = nlohmann::json::object();
  std::optional<std::int64_t> seed;
  std::optional<int> parent;  // step index this one was made from; null for imports
  std::string created;        // ISO-8601 UTC, e.g. "2024-05-01T12:00:00Z"
};

struct SessionMask {
  std::string file;  // relative to the session directory
  std::string sha256;
  int step = 0;  // the step (image) it was made on
  std::string tool;
  nlohmann::json params = nlohmann::json::object();
  std::optional<double> score;
  std::string label;  // free text (e.g. the phrase or prompt it answers); may be empty
};

// A mask to store with set_masks(): either `bytes` (encoded image) or `source` (a file to copy).
struct NewMask {
  std::string bytes;
  fs::path source;
  std::string ext = "png";  // of the stored file
  std::string tool;
  nlohmann::json params = nlohmann::json::object();
  std::optional<double> score;
  std::string label;
};

enum class ChatRole { user, assistant };
const char* chat_role_name(ChatRole r);  // "user" / "assistant"

struct ChatTurn {
  ChatRole role = ChatRole::user;
  std::string text;
  int step = 0;  // the image step the turn saw; -1 = none (JSON null)
  std::string created;
};

struct CacheEntry {
  std::string image_sha256;
  std::string model;
  std::string file;  // relative to the session directory
};

class Session {
 public:
  static constexpr int kVersion = 1;

  // The session directory for a session path ("-" = piped) and an optional --session-dir
  // (empty = not given). Not created here.
  static fs::path resolve_dir(const std::string& session_path, const std::string& session_dir = "");

  // Loads a session file ("-" = stdin); a missing file / empty stdin gives a new empty session.
  // session_dir: the --session-dir flag (empty = default, see above). Throws InputError.
  static Session load(const std::string& session_path, const std::string& session_dir = "");

  // Parses session JSON text (empty or whitespace-only text = new session). `name` is used in
  // messages; `dir` is the session directory. Throws InputError.
  static Session parse(std::string_view text, const std::string& name, const fs::path& dir);

  // A new empty session in `dir`.
  Session(std::string name, fs::path dir);

  // Serialises to JSON text (pretty, 2-space indent, trailing newline).
  std::string dump() const;
  // Writes dump() atomically to `path` ("-" = stdout). For the file it was loaded from: under
  // the session lock (taken now, re-reading the file, if no change took it yet), then released;
  // the next change re-reads the file again.
  void save(const std::string& path);

  const std::string& name() const { return name_; }  // for messages
  const fs::path& dir() const { return dir_; }
  bool empty() const { return steps_.empty(); }
  int size() const { return static_cast<int>(steps_.size()); }
  int current() const { return current_; }  // -1 when empty
  const std::vector<SessionStep>& steps() const { return steps_; }
  const SessionStep& step(int index) const;  // InputError if out of range

  // The step a tool reads: `from_step` (--from-step N) if given, else current. InputError if the
  // session is empty ("no image yet: pass -i") or N is out of range ("--from-step 7: the session
  // has steps 0..3").
  int input_step(std::optional<int> from_step = std::nullopt) const;

  // Absolute path of a step's image, after checking the file exists and its sha256 matches
  // (InputError naming the file otherwise).
  fs::path image_path(int step) const;
  // Checks a step's image without returning its path.
  void verify_step(int step) const { (void)image_path(step); }

  // Appends a step holding `image_bytes` (written atomically as step-NNNN.<ext>, ext without
  // dot, e.g. "png"); `parent` must be an existing step or nullopt. Returns the new step index,
  // which becomes current.
  int add_image_step(std::string_view image_bytes, const std::string& ext, const std::string& tool,
                     const std::string& op, const nlohmann::json& params,
                     std::optional<std::int64_t> seed, std::optional<int> parent);
  // Same, copying an existing image file (ext taken from it, lower-cased).
  int add_image_step_from_file(const fs::path& source, const std::string& tool,
                               const std::string& op, const nlohmann::json& params,
                               std::optional<std::int64_t> seed, std::optional<int> parent);
  // Imports `image` as a new root step (tool "import", op "import", params {"source": filename},
  // parent null). Returns its index.
  int import_image(const fs::path& image);

  // Replaces the latest masks with `masks`, all made on `step` (written as mask-NNNN-K.<ext>).
  void set_masks(int step, const std::vector<NewMask>& masks);
  const std::vector<SessionMask>& latest_masks() const { return masks_; }
  // Absolute path of a mask file after checking existence and sha256.
  fs::path mask_path(const SessionMask& mask) const;

  void add_chat_turn(ChatRole role, const std::string& text, int step);
  const std::vector<ChatTurn>& chat() const { return chat_; }

  // Cache of derived artefacts (e.g. image embeddings) keyed by image sha256 + model name.
  // find_cache: the absolute file if recorded and present on disk (a stale entry whose file is
  // gone gives nullopt). cache_file_path: where to write a new artefact (directory created).
  // put_cache: records `file` (absolute inside the session dir, or relative to it), replacing an
  // entry with the same key. put_cache_bytes: writes bytes atomically and records them.
  std::optional<fs::path> find_cache(const std::string& image_sha256,
                                     const std::string& model) const;
  fs::path cache_file_path(const std::string& image_sha256, const std::string& model,
                           const std::string& ext) const;
  void put_cache(const std::string& image_sha256, const std::string& model, const fs::path& file);
  fs::path put_cache_bytes(const std::string& image_sha256, const std::string& model,
                           std::string_view bytes, const std::string& ext);
  const std::vector<CacheEntry>& cache() const { return cache_; }

 private:
  void ensure_dir() const;
  fs::path checked_file(const std::string& rel, const std::string& sha, const std::string& what) const;
  fs::path to_relative(const fs::path& file) const;
  fs::path link_outside(const fs::path& p) const;
  // Before a change: for a file-backed session, takes the lock and re-reads the file (once until
  // the next save).
  void begin_change();

  std::string name_;
  fs::path dir_;
  std::string path_;                // the file it was loaded from; "" (parsed text) or "-" (stdin): no lock
  std::shared_ptr<FileLock> lock_;  // held from the first change to save()
  int current_ = -1;
  std::vector<SessionStep> steps_;
  std::vector<SessionMask> masks_;
  std::vector<ChatTurn> chat_;
  std::vector<CacheEntry> cache_;
  std::vector<fs::path> created_;  // step and mask files written since the last save(), removed if it fails
};

// Current UTC time as ISO-8601 ("2024-05-01T12:00:00Z").
std::string now_iso8601();

// True if `rel` is a safe session-relative path: non-empty, relative, no "..", no root name.
bool is_safe_relative_path(const std::string& rel);

}  // namespace lli
