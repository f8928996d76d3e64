// Output rows of a matrix-vector product split over libtorch's threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace lli::nn {

// Calls f(n0, n1) once per thread on equal contiguous shares of [0, n) (each thread streams one
// region of the weights), using at most n / min_rows threads. Handing out smaller chunks from a
// shared counter instead (so that a thread on a busier core takes fewer) measured no better on the
// 2-core VM: 41-49 vs 44-61 ms per decode step of the mid model, and on 7B q4_k medians of
// 134 ms (static) vs 132 / 139 ms (4 / 16 chunks per thread) over 5-6 interleaved runs each.
template <class F>
void parallel_rows(std::int64_t n, std::int64_t min_rows, const F& f) {
  const std::int64_t nt = std::max<std::int64_t>(1, std::min<std::int64_t>(at::get_num_threads(), n / min_rows));
  at::parallel_for(0, nt, 1, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) f(n * t / nt, n * (t + 1) / nt);
  });
}

}  // namespace lli::nn
