// --device / --dtype / --threads resolution (torch-free header).
#pragma once

#include <string>

namespace lli {

enum class DTypeChoice { automatic, f32, bf16, f16 };

struct DeviceChoice {
  bool cuda = false;
  int index = 0;
  std::string str() const { return cuda ? "cuda:" + std::to_string(index) : "cpu"; }
};

DeviceChoice parse_device(const std::string& s);  // "cpu", "cuda", "cuda:N"; UsageError otherwise
DTypeChoice parse_dtype(const std::string& s);    // "auto", "f32", "bf16", "f16"; UsageError otherwise
const char* dtype_choice_name(DTypeChoice d);

bool cpu_has_avx512_bf16();
// Resolved compute dtype: auto = bf16 on CPUs with AVX512-BF16, f16 on CUDA, f32 otherwise.
// f16 on CPU is refused (no fp16 matmul on CPU in libtorch 1.13): ModelError.
DTypeChoice resolve_dtype(DTypeChoice d, const DeviceChoice& dev);
// Same, with the CPU's bf16 capability given (for tests and for callers that already know it).
DTypeChoice resolve_dtype(DTypeChoice d, const DeviceChoice& dev, bool cpu_bf16);

// Throws ModelError when CUDA is asked for and libtorch has none (or the index is out of range).
void check_device_available(const DeviceChoice& dev);

// Memory this process can still use, in bytes: MemAvailable of /proc/meminfo (free memory plus the
// page cache that can be dropped), lowered to the cgroup's memory.max - memory.current when a limit
// is set. 0 when unknown.
unsigned long long available_memory_bytes();

// threads <= 0: number of cores. Sets libtorch's intra-op threads; returns the count used.
// Also installs lli's CPU tensor allocator (core/cpu_allocator.h) on the first call.
int configure_threads(int threads);

}  // namespace lli
