#include "lli/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include "lli/error.h"
#include "lli/log.h"

namespace lli {

namespace {
// A stream of unknown size (stdin, a pipe, a FIFO, /dev/fd/N of a shell's process substitution):
// read in chunks, refused as soon as it passes max_bytes.
std::string read_stream(std::istream& in, const std::string& name, std::uint64_t max_bytes) {
  std::string out;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<std::size_t>(in.gcount()));
    if (out.size() > max_bytes) throw InputError(fmt_size_error(name, out.size(), max_bytes) + " (read so far)");
  }
  return out;
}
}  // namespace

std::string read_file(const std::string& path, std::uint64_t max_bytes) {
  std::string out;
  if (path == "-") return read_stream(std::cin, "<stdin>", max_bytes);
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw InputError(path + ": is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  if (!fs::is_regular_file(path, ec)) return read_stream(f, path, max_bytes);  // no size to seek to
  f.seekg(0, std::ios::end);
  auto size = static_cast<std::uint64_t>(f.tellg());
  if (size > max_bytes) throw InputError(fmt_size_error(path, size, max_bytes));
  f.seekg(0);
  out.resize(size);
  if (size && !f.read(out.data(), static_cast<std::streamsize>(size)))
    throw InputError(path + ": read error");
  return out;
}

std::string fmt_size_error(const std::string& path, std::uint64_t size, std::uint64_t max) {
  return path + ": file is " + std::to_string(size) + " bytes, more than the limit of " +
         std::to_string(max);
}

// ---- pending temp files, unlinked by the signal handler --------------------------------------
namespace {
constexpr int kMaxPending = 64;
std::array<std::atomic<const char*>, kMaxPending> g_pending{};
std::mutex g_pending_mu;
std::atomic<int> g_signals{0};

void register_pending(const char* p) {
  std::lock_guard<std::mutex> lock(g_pending_mu);
  for (auto& slot : g_pending) {
    const char* expected = nullptr;
    if (slot.compare_exchange_strong(expected, p)) return;
  }
}
void unregister_pending(const char* p) {
  std::lock_guard<std::mutex> lock(g_pending_mu);
  for (auto& slot : g_pending) {
    const char* expected = p;
    if (slot.compare_exchange_strong(expected, nullptr)) return;
  }
}

extern "C" void lli_on_signal(int) {
  if (g_signals.fetch_add(1) >= 1) {
    for (auto& slot : g_pending) {
      const char* p = slot.load();
      if (p) ::unlink(p);
    }
    _exit(130);
  }
}

constexpr const char* kTempPrefix = ".lli-tmp-";
std::atomic<unsigned> g_temp_counter{0};

// ".lli-tmp-<pid>-<n>-<name>", the name cut to 100 bytes (the whole stays under NAME_MAX).
std::string temp_name(const std::string& target_name) {
  return kTempPrefix + std::to_string(::getpid()) + "-" + std::to_string(g_temp_counter.fetch_add(1)) + "-" +
         target_name.substr(0, 100);
}

// The pid of a temporary file's name, or -1.
long temp_owner(const char* name) {
  if (std::strncmp(name, kTempPrefix, std::strlen(kTempPrefix)) != 0) return -1;
  const char* p = name + std::strlen(kTempPrefix);
  char* end = nullptr;
  errno = 0;
  const long pid = std::strtol(p, &end, 10);
  if (errno != 0 || end == p || *end != '-' || pid <= 0) return -1;
  return pid;
}

// Directories already swept by this process.
std::mutex g_swept_mu;
std::set<std::string> g_swept;
}  // namespace

int remove_stale_temporaries(const fs::path& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  const long self = static_cast<long>(::getpid());
  while (const dirent* e = ::readdir(d)) {
    const long pid = temp_owner(e->d_name);
    if (pid < 0 || pid == self) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to probe)
    if (::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = lli_on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGXFSZ, SIG_IGN);
}
bool interrupted() { return g_signals.load() > 0; }
void check_interrupted() {
  if (interrupted()) throw InterruptedError();
}
void request_interrupt() { g_signals.fetch_add(1); }
void reset_interrupt_for_tests() { g_signals.store(0); }

// ---- AtomicFile -------------------------------------------------------------------------------
AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw InputError(path_.string() + ": output directory " + dir.string() + " does not exist");
  {
    std::error_code cec;
    const std::string key = fs::weakly_canonical(fs::absolute(dir, cec), cec).string();
    std::lock_guard<std::mutex> lock(g_swept_mu);
    if (g_swept.insert(key).second) {
      const int n = remove_stale_temporaries(dir);
      if (n) log_info("{}: removed {} temporary file(s) left by killed lli processes", dir.string(), n);
    }
  }
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    tmp_ = dir / temp_name(path_.filename().string());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0)
    throw RuntimeError(path_.string() + ": cannot create a temporary file in " + dir.string() + " (" +
                       std::strerror(errno) + ")");
  register_pending(tmp_.c_str());
}

AtomicFile::~AtomicFile() {
  if (!done_) {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(tmp_.c_str());
    unregister_pending(tmp_.c_str());
  }
}

void AtomicFile::write(std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw RuntimeError(path_.string() + ": write failed (" + std::strerror(errno) + ")");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// close() reports the errors a network or quota file system defers to it.
void AtomicFile::close_checked() {
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && errno != EINTR)
    throw RuntimeError(path_.string() + ": write failed (" + std::strerror(errno) + ")");
}

void AtomicFile::commit() {
  if (done_) return;
  check_interrupted();
  if (::fsync(fd_) != 0 && errno != EINVAL)
    throw RuntimeError(path_.string() + ": fsync failed (" + std::strerror(errno) + ")");
  close_checked();
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw RuntimeError(path_.string() + ": rename from temporary file failed (" + std::strerror(errno) + ")");
  done_ = true;
  unregister_pending(tmp_.c_str());
}

bool AtomicFile::commit_new() {
  if (done_) return true;
  check_interrupted();
  if (::fsync(fd_) != 0 && errno != EINVAL)
    throw RuntimeError(path_.string() + ": fsync failed (" + std::strerror(errno) + ")");
  close_checked();
  bool placed = false;
  if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) == 0) {
    placed = true;
  } else if (errno != EEXIST) {
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
      throw RuntimeError(path_.string() + ": rename from temporary file failed (" + std::strerror(errno) + ")");
    std::error_code ec;  // no RENAME_NOREPLACE here: check, then rename
    if (!fs::exists(path_, ec)) {
      if (::rename(tmp_.c_str(), path_.c_str()) != 0)
        throw RuntimeError(path_.string() + ": rename from temporary file failed (" + std::strerror(errno) + ")");
      placed = true;
    }
  }
  if (!placed) ::unlink(tmp_.c_str());
  done_ = true;
  unregister_pending(tmp_.c_str());
  return placed;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  if (path == "-") {
    std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::cout.flush();
    if (!std::cout) throw RuntimeError("<stdout>: write failed");
    return;
  }
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void check_not_overwriting(const fs::path& out, const std::vector<fs::path>& inputs, bool overwrite) {
  if (overwrite || out == "-") return;
  std::error_code ec;
  for (const auto& in : inputs) {
    if (in.empty() || in == "-") continue;
    if (fs::exists(out, ec) && fs::equivalent(out, in, ec))
      throw UsageError(out.string() + ": output is the same file as the input; refusing to overwrite it "
                       "(choose another output, or pass --overwrite)");
  }
}

// ---- FileLock -----------------------------------------------------------------------------------
double lock_timeout_seconds() {
  const char* e = std::getenv("LLI_LOCK_TIMEOUT");
  if (!e || !*e) return 600.0;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(e, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0) || v > 1e9)
    throw UsageError(std::string("LLI_LOCK_TIMEOUT = '") + e + "' is not a number of seconds >= 0");
  return v;
}

FileLock::FileLock(const fs::path& lock_path, const std::string& what) : path_(lock_path) {
  const double timeout_s = lock_timeout_seconds();
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw RuntimeError(what + ": cannot create the lock file " + path_.string() + " (" + std::strerror(errno) + ")");
  const auto t0 = std::chrono::steady_clock::now();
  bool told = false;
  int pause_ms = 2;
  for (;;) {
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
    const int err = errno;
    if (err == EINTR) continue;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string fail;
    if (err != EWOULDBLOCK)
      fail = what + ": cannot lock " + path_.string() + " (" + std::strerror(err) + ")";
    else if (waited >= timeout_s)
      fail = fmt::format("{}: another lli process holds {} (gave up after {:g} s; set LLI_LOCK_TIMEOUT to wait longer)",
                         what, path_.string(), timeout_s);
    if (!fail.empty() || interrupted()) {
      ::close(fd_);
      fd_ = -1;
      check_interrupted();
      throw RuntimeError(fail);
    }
    if (!told && waited >= 1.0) {
      log_info("{}: waiting for {} (another lli process is writing it)", what, path_.string());
      told = true;
    }
    ::usleep(static_cast<useconds_t>(pause_ms) * 1000);
    pause_ms = std::min(pause_ms * 2, 50);
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

// ---- sha256 (FIPS 180-4) -----------------------------------------------------------------------
namespace {
struct Sha256 {
  std::uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char buf[64];
  size_t buf_len = 0;
  std::uint64_t total = 0;

  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void block(const unsigned char* p) {
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t(p[4 * i]) << 24) | (std::uint32_t(p[4 * i + 1]) << 16) |
             (std::uint32_t(p[4 * i + 2]) << 8) | std::uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      std::uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      std::uint32_t ch = (e & f) ^ (~e & g);
      std::uint32_t t1 = hh + S1 + ch + k[i] + w[i];
      std::uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      std::uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
      std::uint32_t t2 = S0 + mj;
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }

  void update(const unsigned char* p, size_t n) {
    total += n;
    while (n) {
      size_t take = std::min(n, size_t(64) - buf_len);
      std::memcpy(buf + buf_len, p, take);
      buf_len += take; p += take; n -= take;
      if (buf_len == 64) { block(buf); buf_len = 0; }
    }
  }

  std::string hex() {
    std::uint64_t bits = total * 8;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (buf_len != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (auto v : h)
      for (int s = 28; s >= 0; s -= 4) out += digits[(v >> s) & 0xf];
    return out;
  }
};
}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Sha256 s;
  s.update(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return s.hex();
}

std::string sha256_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  Sha256 s;
  std::vector<char> chunk(1 << 20);
  while (f) {
    f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    s.update(reinterpret_cast<const unsigned char*>(chunk.data()), static_cast<size_t>(f.gcount()));
  }
  return s.hex();
}

}  // namespace lli
