// Small helpers shared by the benchmarks: wall time, median, peak RSS, "name: value unit" lines.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cpu_allocator.h"

namespace lli::bench {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Peak resident set size of this process so far (getrusage ru_maxrss).
inline double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Process CPU time (user + system, all threads), ms: on cores shared with other work it shows
// what the process itself spent.
inline double cpu_ms() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

inline double sys_ms() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_stime.tv_sec * 1e3 + u.ru_stime.tv_usec / 1e3;
}

inline long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

inline void metric(const std::string& name, double v, const char* unit) {
  std::printf("%s: %.2f %s\n", name.c_str(), v, unit);
  std::fflush(stdout);
}

// lli's CPU allocator (core/cpu_allocator.h): peak mapped bytes and cache hits/misses.
inline void allocator_metrics() {
  const auto s = lli::cpu_allocator_stats();
  if (!s.installed) {
    std::printf("cpu_allocator: system (LLI_CPU_ALLOCATOR=system)\n");
    return;
  }
  metric("cpu_allocator_peak_mapped_mib", static_cast<double>(s.peak_mapped) / (1 << 20), "MiB");
  metric("cpu_allocator_cached_mib", static_cast<double>(s.cached) / (1 << 20), "MiB");
  std::printf("cpu_allocator_hits_misses: %zu %zu\n", s.hits, s.misses);
}

}  // namespace lli::bench
