// CPU tensor allocator: large buffers on 2 MiB-aligned, huge-page-advised memory, reused
// between operators instead of returned to the kernel (torch-free header).
//
// Why: on these hosts a fresh 4 KiB page costs a fault that fills memory at ~0.3 GB/s. glibc
// serves every allocation above 32 MiB (and many above its dynamic threshold) with a fresh mmap,
// so each large activation of a convolutional network (LaMa at 512^2: 64 MiB per feature map)
// is faulted in again on every operator. Measured on bench_lama f32 512^2 (2 threads): 4.37 s
// with glibc's malloc, 2.58 s with GLIBC_TUNABLES=glibc.malloc.hugetlb=1; this allocator gets the
// same effect without an environment variable and, by reusing freed blocks, without faults after
// the first call.
//
// Knobs: LLI_CPU_ALLOCATOR=system keeps libtorch's default allocator; LLI_CPU_CACHE_MB caps the
// bytes kept for reuse (default 256 MiB, at most 1/8 of RAM; workloads whose many large
// activations recur every call, as LaMa's, raise it with cpu_allocator_reserve_cache). Cached
// blocks are resident: the cap is what the cache may add to peak RSS. The weight binder empties
// the cache after each load (the modules' placeholder parameters).
#pragma once

#include <cstddef>

namespace lli {

struct CpuAllocatorStats {
  bool installed = false;
  std::size_t large_threshold = 0;  // bytes; smaller requests go to posix_memalign
  std::size_t cache_limit = 0;      // bytes of freed large blocks kept for reuse
  std::size_t mapped = 0;           // bytes currently mapped for large blocks (live + cached)
  std::size_t cached = 0;           // bytes of freed large blocks held in the cache
  std::size_t peak_mapped = 0;
  std::size_t hits = 0;    // large requests served from the cache
  std::size_t misses = 0;  // large requests that mapped new memory
};

// Installs the allocator as libtorch's CPU allocator (once; later calls do nothing). Returns
// false when LLI_CPU_ALLOCATOR=system asked to keep libtorch's. Called by configure_threads.
bool install_cpu_allocator();
CpuAllocatorStats cpu_allocator_stats();
// Raises the cache cap to `bytes` (at most 1/8 of RAM) unless LLI_CPU_CACHE_MB is set. LaMa: each
// call allocates ~100 distinct large sizes; with a 1 GiB cache every call after the first reuses
// them all (bench_lama bf16 512^2: 1.43 s with no cache, 1.21 s with 128 MiB, 1.06 s with 1 GiB).
void cpu_allocator_reserve_cache(std::size_t bytes);
// Unmaps every cached block (e.g. before a long idle phase). Live tensors are untouched.
void cpu_allocator_release_cache();

// While one exists (any thread), freed large blocks are unmapped at once instead of cached: the
// weight binder holds one while it replaces a module's placeholder parameters by the checkpoint's
// tensors, so those placeholders (fp32, the size of the model) leave RSS one by one as with
// glibc's malloc instead of filling the cache first.
struct CpuAllocatorNoCache {
  CpuAllocatorNoCache();
  ~CpuAllocatorNoCache();
  CpuAllocatorNoCache(const CpuAllocatorNoCache&) = delete;
  CpuAllocatorNoCache& operator=(const CpuAllocatorNoCache&) = delete;
};

}  // namespace lli
