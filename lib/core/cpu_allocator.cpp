// CPU tensor allocator: see cpu_allocator.h for why.
#include "core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

namespace lli {
namespace {

constexpr std::size_t kHuge = std::size_t{2} << 20;       // THP size on x86-64
constexpr std::size_t kLargeThreshold = std::size_t{1} << 20;
constexpr std::size_t kSmallAlign = 64;                    // libtorch's own CPU alignment

std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

bool env_cache_set(std::size_t* bytes) {
  if (const char* s = std::getenv("LLI_CPU_CACHE_MB")) {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(s, &end, 10);
    if (end != s && *end == '\0') {
      *bytes = static_cast<std::size_t>(mb) << 20;
      return true;
    }
  }
  return false;
}

// At most 1/8 of physical memory.
std::size_t ram_bound(std::size_t want) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  const std::size_t phys = pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
  return phys == 0 ? want : std::min(want, phys / 8);
}

constexpr std::size_t kDefaultCacheMiB = 256;

std::size_t env_cache_limit() {
  std::size_t b = 0;
  return env_cache_set(&b) ? b : ram_bound(kDefaultCacheMiB << 20);
}

// Maps `size` bytes (a multiple of kHuge) at a kHuge-aligned address, advised for huge pages.
void* map_huge(std::size_t size) {
  const std::size_t span = size + kHuge;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t aligned = round_up(base, kHuge);
  if (aligned > base) ::munmap(p, aligned - base);
  const std::uintptr_t tail = aligned + size, end = base + span;
  if (end > tail) ::munmap(reinterpret_cast<void*>(tail), end - tail);
  ::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(aligned);
}

std::atomic<int>& no_cache_scopes() {
  static std::atomic<int> n{0};
  return n;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(std::size_t cache_limit) { stats_.cache_limit = cache_limit; }

  c10::DataPtr allocate(std::size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &free_any, c10::Device(c10::DeviceType::CPU)};
    if (n < kLargeThreshold) {
      void* p = nullptr;
      if (::posix_memalign(&p, kSmallAlign, n) != 0 || !p) throw std::bad_alloc();
      return {p, p, &free_small, c10::Device(c10::DeviceType::CPU)};
    }
    void* p = self().take(round_up(n, kHuge));
    return {p, p, &free_any, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_any; }

  CpuAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void raise_cache_limit(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.cache_limit = std::max(stats_.cache_limit, bytes);
  }

  void release_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    while (!free_.empty()) evict_locked(free_.begin());
    live_peak_ = stats_.mapped;  // the peak starts again from what is live now
  }

  static CachingCpuAllocator*& instance() {
    static CachingCpuAllocator* a = nullptr;
    return a;
  }

 private:
  struct Cached {
    void* ptr;
    std::uint64_t seq;  // free order, for evicting the oldest first
  };

  CachingCpuAllocator& self() const { return const_cast<CachingCpuAllocator&>(*this); }

  static void free_small(void* p) { std::free(p); }

  static void free_any(void* p) {
    if (!p) return;
    CachingCpuAllocator* a = instance();
    if (!a || !a->give_back(p)) std::free(p);
  }

  void* take(std::size_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The smallest cached block that fits without wasting more than half of the request.
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 2) {
        void* p = it->second.ptr;
        const std::size_t got = it->first;
        free_.erase(it);
        stats_.cached -= got;
        live_[p] = got;
        live_peak_ = std::max(live_peak_, stats_.mapped - stats_.cached);
        ++stats_.hits;
        return p;
      }
      // A miss: mapped memory stays within twice the peak of live bytes, so cached blocks (oldest
      // first) that a new mapping would push past that bound are unmapped first.
      const std::size_t live = stats_.mapped - stats_.cached;
      const std::size_t bound = std::max(2 * live_peak_, live + size);
      while (!free_.empty() && stats_.mapped + size > bound) evict_locked(oldest_locked());
    }
    void* p = map_huge(size);
    if (!p) {
      release_cache();  // give cached memory back and try once more
      p = map_huge(size);
      if (!p) throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = size;
    stats_.mapped += size;
    live_peak_ = std::max(live_peak_, stats_.mapped - stats_.cached);
    if (stats_.mapped > stats_.peak_mapped) stats_.peak_mapped = stats_.mapped;
    ++stats_.misses;
    return p;
  }

  // False when p is not a large block of this allocator (a small one: the caller frees it).
  bool give_back(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return false;
    const std::size_t size = it->second;
    live_.erase(it);
    if (size > stats_.cache_limit || no_cache_scopes().load(std::memory_order_relaxed) > 0) {
      ::munmap(p, size);
      stats_.mapped -= size;
      return true;
    }
    free_.emplace(size, Cached{p, ++seq_});
    stats_.cached += size;
    while (stats_.cached > stats_.cache_limit) evict_locked(oldest_locked());
    return true;
  }

  std::multimap<std::size_t, Cached>::iterator oldest_locked() {
    auto oldest = free_.begin();
    for (auto f = free_.begin(); f != free_.end(); ++f)
      if (f->second.seq < oldest->second.seq) oldest = f;
    return oldest;
  }

  void evict_locked(std::multimap<std::size_t, Cached>::iterator it) {
    ::munmap(it->second.ptr, it->first);
    stats_.cached -= it->first;
    stats_.mapped -= it->first;
    free_.erase(it);
  }

  std::mutex mu_;
  std::unordered_map<void*, std::size_t> live_;
  std::multimap<std::size_t, Cached> free_;
  std::uint64_t seq_ = 0;
  std::size_t live_peak_ = 0;  // most bytes of large blocks live at once
  CpuAllocatorStats stats_;
};

}  // namespace

bool install_cpu_allocator() {
  static std::once_flag once;
  static bool installed = false;
  std::call_once(once, [] {
    const char* mode = std::getenv("LLI_CPU_ALLOCATOR");
    if (mode && std::string(mode) == "system") return;
    // Never freed: tensors may outlive every other static (libtorch's own statics included).
    auto* a = new CachingCpuAllocator(env_cache_limit());
    CachingCpuAllocator::instance() = a;
    c10::SetCPUAllocator(a, /*priority=*/100);
    installed = true;
    if (const char* v = std::getenv("LLI_CPU_ALLOCATOR_STATS"); v && *v && std::string(v) != "0")
      std::atexit([] {
        const auto s = cpu_allocator_stats();
        std::fprintf(stderr, "lli cpu allocator: peak mapped %.0f MiB, mapped %.0f MiB, cached %.0f MiB, hits %zu, misses %zu\n",
                     static_cast<double>(s.peak_mapped) / (1 << 20), static_cast<double>(s.mapped) / (1 << 20),
                     static_cast<double>(s.cached) / (1 << 20), s.hits, s.misses);
      });
  });
  return installed;
}

CpuAllocatorStats cpu_allocator_stats() {
  CachingCpuAllocator* a = CachingCpuAllocator::instance();
  if (!a) return {};
  CpuAllocatorStats s = a->stats();
  s.installed = true;
  s.large_threshold = kLargeThreshold;
  return s;
}

void cpu_allocator_reserve_cache(std::size_t bytes) {
  std::size_t env = 0;
  if (env_cache_set(&env)) return;  // LLI_CPU_CACHE_MB decides
  if (CachingCpuAllocator* a = CachingCpuAllocator::instance()) a->raise_cache_limit(ram_bound(bytes));
}

CpuAllocatorNoCache::CpuAllocatorNoCache() { no_cache_scopes().fetch_add(1); }
CpuAllocatorNoCache::~CpuAllocatorNoCache() { no_cache_scopes().fetch_sub(1); }

void cpu_allocator_release_cache() {
  if (CachingCpuAllocator* a = CachingCpuAllocator::instance()) a->release_cache();
}

}  // namespace lli
