#include "lli/log.h"

#include "core/quote.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>

namespace lli {
namespace {
LogLevel g_level = LogLevel::info;
bool g_force_progress = false;
std::recursive_mutex g_mu;  // recursive: a log line inside capture_stderr is captured, not a deadlock
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_line(LogLevel, const std::string& msg) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  std::fprintf(stderr, "%s\n", one_line(msg).c_str());  // one line, whatever a file name holds
  std::fflush(stderr);
}

void set_progress_mode(bool force) { g_force_progress = force; }
bool progress_enabled() {
  if (g_level == LogLevel::quiet) return false;
  return g_force_progress || ::isatty(STDERR_FILENO);
}

std::string capture_stderr(const std::function<void()>& f) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  std::fflush(stderr);
  const int buf = ::memfd_create("lli-stderr", MFD_CLOEXEC);
  const int saved = buf >= 0 ? ::dup(STDERR_FILENO) : -1;
  if (saved < 0 || ::dup2(buf, STDERR_FILENO) < 0) {  // cannot redirect: let it through
    if (saved >= 0) ::close(saved);
    if (buf >= 0) ::close(buf);
    f();
    return {};
  }
  auto restore = [&] {
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
  };
  try {
    f();
  } catch (...) {
    restore();
    ::close(buf);
    throw;
  }
  restore();
  std::string out;
  char chunk[4096];
  ::lseek(buf, 0, SEEK_SET);
  for (ssize_t n; out.size() < 65536 && (n = ::read(buf, chunk, sizeof chunk)) > 0;) out.append(chunk, static_cast<std::size_t>(n));
  ::close(buf);
  return out;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, long total)
    : label_(std::move(label)), total_(total), active_(progress_enabled()), start_(std::chrono::steady_clock::now()) {
  update(0);
}
Progress::~Progress() { finish(); }

void Progress::update(long done) {
  done_ = done;
  if (!active_ || finished_) return;
  const int width = 30;
  int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : 0;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  // Seconds per item once one is done (diffusion steps: "s/it" as diffusers' tqdm bar shows).
  const std::string rate = done_ > 0 ? fmt::format(", {:.2f}s/it", secs / static_cast<double>(done_)) : "";
  std::fprintf(stderr, "\r%s [%s%s] %ld/%ld %.1fs%s", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), done_, total_, secs, rate.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (!active_ || finished_) return;
  finished_ = true;
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace lli
