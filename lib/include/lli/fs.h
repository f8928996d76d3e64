// Files: atomic writes (temp file in the target directory, then rename), whole-file reads,
// interruption (Ctrl-C stops between steps and leaves no partial file), sha256.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lli {

namespace fs = std::filesystem;

// Reads a whole file ("-" = stdin). Throws InputError naming the file.
std::string read_file(const std::string& path, std::uint64_t max_bytes = UINT64_MAX);
std::string fmt_size_error(const std::string& path, std::uint64_t size, std::uint64_t max);

// An output written to a temporary file "<dir>/.lli-tmp-<pid>-<n>-<name>" (n counts this
// process's temporary files; <name> is the target's file name, cut to 100 bytes) and renamed over
// `path` on commit(). The temporary file is created with O_CREAT | O_EXCL | O_NOFOLLOW: whatever
// already has that name (a file, or a symbolic link planted there) is never opened or followed;
// the next n is tried. Destroyed without commit() (error, exception, Ctrl-C) the temporary file
// is removed; the path is registered so that a signal handler can unlink it too. A process killed
// outright (SIGKILL, power loss) leaves it behind: the first AtomicFile of a later process in that
// directory removes every ".lli-tmp-<pid>-*" whose process no longer exists
// (remove_stale_temporaries).
class AtomicFile {
 public:
  explicit AtomicFile(fs::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view bytes);  // append
  void commit();                       // fsync, rename over the target
  // fsync, then move to the target only if nothing exists there (renameat2 RENAME_NOREPLACE, or
  // a check + rename where the file system has no such call). false (temporary file removed)
  // when the target exists: the caller picks another name.
  bool commit_new();
  const fs::path& temp_path() const { return tmp_; }
  const fs::path& path() const { return path_; }

 private:
  void close_checked();
  fs::path path_;
  fs::path tmp_;
  int fd_ = -1;
  bool done_ = false;
};

// Removes the temporary files ".lli-tmp-<pid>-*" of `dir` whose process `pid` no longer exists
// (kill(pid, 0) fails with ESRCH): what a killed lli left. Links are removed, never followed; a
// process in another PID namespace sharing the directory would look dead (not a supported setup).
// Errors are ignored. AtomicFile calls it once per directory and process; returns how many went.
int remove_stale_temporaries(const fs::path& dir);

// An exclusive advisory lock (flock) on `lock_path`, for read-modify-write of a shared file
// (sessions: "<session>.lock" beside it). The lock file is created if missing and left in place
// (removing it would race with the next locker); a process that dies releases its lock. Waits up
// to lock_timeout_seconds(), saying so in one log line after a second; then RuntimeError
// "<what>: another lli process holds <lock_path> (gave up after N s; set LLI_LOCK_TIMEOUT to wait
// longer)".
// Ctrl-C while waiting throws InterruptedError.
class FileLock {
 public:
  FileLock(const fs::path& lock_path, const std::string& what);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Seconds a FileLock waits: $LLI_LOCK_TIMEOUT (a number >= 0; UsageError otherwise), else 600.
double lock_timeout_seconds();

// Writes bytes atomically to `path`; "-" writes to stdout.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Refuses to write over an input unless `overwrite` (InputError).
void check_not_overwriting(const fs::path& out, const std::vector<fs::path>& inputs, bool overwrite);

// Ctrl-C / SIGTERM: install_signal_handlers() once in main; long loops call check_interrupted(),
// which throws InterruptedError once a signal arrived. A second signal exits at once (130)
// after unlinking every pending temp file. SIGPIPE and SIGXFSZ are ignored: a closed pipe or a
// file past RLIMIT_FSIZE (ulimit -f) is a write error (exit 5, one line), not a silent death.
void install_signal_handlers();
bool interrupted();
void check_interrupted();
void request_interrupt();          // for tests
void reset_interrupt_for_tests();  // for tests

// Hex sha256 of bytes / of a file.
std::string sha256_hex(std::string_view bytes);
std::string sha256_file(const fs::path& path);

}  // namespace lli
