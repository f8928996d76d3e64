// Operator profile for the benchmarks: runs f under libtorch's (legacy) profiler and prints the
// operators at nesting depth `depth` (0 = top level) by total CPU time, then the wall time spent
// outside them (lli's hand-written kernels, glue).
#pragma once

#include <torch/torch.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lli::bench {

inline void profile_ops(const std::string& what, const std::function<void()>& f, int depth = 0, int top = 20) {
  namespace prof = torch::autograd::profiler;
  std::map<std::string, std::pair<double, int>> total;  // name -> (us, calls)
  double wall_us = 0;
  {
    prof::TLSLegacyProfilerGuard guard(
        prof::ProfilerConfig(prof::ProfilerState::CPU),
        std::function<void(const prof::thread_event_lists&)>([&](const prof::thread_event_lists& lists) {
          for (auto& list : lists) {
            std::vector<const prof::LegacyEvent*> stack;
            for (const auto& e : list) {
              if (e.kindStr() == std::string("push")) {
                stack.push_back(&e);
              } else if (e.kindStr() == std::string("pop") && !stack.empty()) {
                const auto* start = stack.back();
                stack.pop_back();
                if (static_cast<int>(stack.size()) == depth) {
                  auto& t = total[start->name()];
                  t.first += start->cpuElapsedUs(e);
                  t.second += 1;
                }
              }
            }
          }
        }));
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wall_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  std::vector<std::pair<double, std::string>> v;
  double sum = 0;
  for (const auto& [name, t] : total) {
    v.emplace_back(t.first, name + " x" + std::to_string(t.second));
    sum += t.first;
  }
  std::sort(v.rbegin(), v.rend());
  std::printf("# profile of %s: %.1f ms wall; operators at depth %d:\n", what.c_str(), wall_us / 1e3, depth);
  for (int i = 0; i < top && i < static_cast<int>(v.size()); ++i)
    std::printf("#   %9.2f ms  %s\n", v[static_cast<std::size_t>(i)].first / 1e3, v[static_cast<std::size_t>(i)].second.c_str());
  std::printf("#   %9.2f ms  (outside operators: hand-written kernels, glue)\n", (wall_us - sum) / 1e3);
  std::fflush(stdout);
}

}  // namespace lli::bench
