// lli's CPU allocator (core/cpu_allocator.h) and the tiled transposing copy (nn/transpose_copy.h).
#include <torch/torch.h>

#include <cstdint>

#include "core/cpu_allocator.h"
#include "lli/device.h"
#include "nn/transpose_copy.h"
#include "test_util.h"

TEST_CASE("cpu allocator: installed by configure_threads, large blocks huge-page aligned and reused") {
  const int before = at::get_num_threads();
  lli::configure_threads(before);
  const auto s0 = lli::cpu_allocator_stats();
  if (!s0.installed) {
    MESSAGE("SKIPPED: LLI_CPU_ALLOCATOR=system keeps libtorch's allocator");
    return;
  }
  const std::int64_t n = 3 << 20;  // 12 MiB of fp32: a large block
  void* first = nullptr;
  {
    auto a = torch::full({n}, 2.5f);
    first = a.data_ptr();
    CHECK(reinterpret_cast<std::uintptr_t>(first) % (std::uintptr_t{2} << 20) == 0);
    CHECK(a.sum().item<double>() == doctest::Approx(2.5 * static_cast<double>(n)));
  }
  const auto s1 = lli::cpu_allocator_stats();
  CHECK(s1.cached >= static_cast<std::size_t>(n) * 4);
  {
    auto b = torch::zeros({n});  // same size: served from the cache, and zeroed as asked
    CHECK(b.data_ptr() == first);
    CHECK(b.abs().max().item<float>() == 0.0f);
  }
  const auto s2 = lli::cpu_allocator_stats();
  CHECK(s2.hits > s1.hits);
  // small tensors go to posix_memalign, 64-byte aligned as libtorch's own allocator
  auto small = torch::ones({7});
  CHECK(reinterpret_cast<std::uintptr_t>(small.data_ptr()) % 64 == 0);
  CHECK(small.sum().item<float>() == 7.0f);
  lli::cpu_allocator_release_cache();
  CHECK(lli::cpu_allocator_stats().cached == 0);
}

TEST_CASE("transpose_copy: [B, M, N, E] -> [B, N, M, E] with fp32 <-> bf16 as torch casts") {
  torch::manual_seed(3);
  for (std::int64_t E : {1, 2}) {
    // sizes that are not multiples of the 32-element tile
    auto src = torch::randn({2, 45, 70, E}) * 100;
    for (auto sd : {torch::kFloat32, torch::kBFloat16})
      for (auto dd : {torch::kFloat32, torch::kBFloat16}) {
        auto s = src.to(sd);
        auto d = torch::empty({2, 70, 45, E}, torch::TensorOptions().dtype(dd));
        lli::nn::transpose_copy(s, d);
        auto want = s.permute({0, 2, 1, 3}).to(dd).contiguous();
        CHECK(torch::equal(d, want));
      }
  }
  auto bad = torch::empty({2, 3, 4, 3});
  auto out = torch::empty({2, 4, 3, 3});
  CHECK_THROWS(lli::nn::transpose_copy(bad, out));
}
