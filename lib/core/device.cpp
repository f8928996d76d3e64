// --device / --dtype / --threads resolution.
#include "lli/device.h"

#include <cstdio>

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <dlfcn.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "core/cpu_allocator.h"
#include "lli/error.h"

namespace lli {

DeviceChoice parse_device(const std::string& s) {
  DeviceChoice d;
  if (s == "cpu") return d;
  if (s == "cuda") {
    d.cuda = true;
    return d;
  }
  if (s.rfind("cuda:", 0) == 0) {
    std::string n = s.substr(5);
    bool digits = !n.empty() && n.size() <= 4;
    for (char c : n) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (digits) {
      d.cuda = true;
      d.index = std::stoi(n);
      return d;
    }
  }
  throw UsageError("--device '" + s + "': expected cpu, cuda or cuda:N (N = 0, 1, ...)");
}

DTypeChoice parse_dtype(const std::string& s) {
  if (s == "auto") return DTypeChoice::automatic;
  if (s == "f32") return DTypeChoice::f32;
  if (s == "bf16") return DTypeChoice::bf16;
  if (s == "f16") return DTypeChoice::f16;
  throw UsageError("--dtype '" + s + "': expected auto, f32, bf16 or f16");
}

const char* dtype_choice_name(DTypeChoice d) {
  switch (d) {
    case DTypeChoice::automatic: return "auto";
    case DTypeChoice::f32: return "f32";
    case DTypeChoice::bf16: return "bf16";
    case DTypeChoice::f16: return "f16";
  }
  return "?";
}

namespace {

bool cpuinfo_has_flag(const std::string& flag) {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream ss(line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
    std::string w;
    while (ss >> w)
      if (w == flag) return true;
    return false;  // the first CPU's flags are representative
  }
  return false;
}

bool detect_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) >= 7 && __get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    const bool osxsave = (ecx >> 27) & 1;
    bool os_avx512 = false;
    if (osxsave) {
      unsigned lo = 0, hi = 0;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      os_avx512 = (lo & 0xe6) == 0xe6;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state enabled by the OS
    }
    if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return os_avx512 && ((eax >> 5) & 1);
  }
#endif
  return cpuinfo_has_flag("avx512_bf16");
}

}  // namespace

bool cpu_has_avx512_bf16() {
  static const bool has = detect_avx512_bf16();
  return has;
}

DTypeChoice resolve_dtype(DTypeChoice d, const DeviceChoice& dev) {
  return resolve_dtype(d, dev, dev.cuda ? false : cpu_has_avx512_bf16());
}

DTypeChoice resolve_dtype(DTypeChoice d, const DeviceChoice& dev, bool cpu_bf16) {
  if (d == DTypeChoice::automatic) {
    if (dev.cuda) return DTypeChoice::f16;
    return cpu_bf16 ? DTypeChoice::bf16 : DTypeChoice::f32;
  }
  if (d == DTypeChoice::f16 && !dev.cuda)
    throw ModelError("--dtype f16 on cpu: fp16 matmul is not available on CPU in libtorch; use --dtype bf16 (fast "
                     "on CPUs with AVX512-BF16) or --dtype f32, or run on cuda");
  return d;
}

void check_device_available(const DeviceChoice& dev) {
  if (!dev.cuda) return;
  // The CUDA device guard is registered by libtorch_cuda whether or not a GPU is present.
  if (!c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA))
    throw ModelError("--device " + dev.str() +
                     ": this libtorch was built without CUDA; rebuild lli against a CUDA libtorch via "
                     "CMAKE_PREFIX_PATH (or use --device cpu)");
  if (!torch::cuda::is_available())
    throw ModelError("--device " + dev.str() + ": no CUDA device is available (driver not loaded, or "
                     "CUDA_VISIBLE_DEVICES hides every GPU); use --device cpu");
  const auto n = static_cast<int>(torch::cuda::device_count());
  if (dev.index < 0 || dev.index >= n)
    throw ModelError("--device " + dev.str() + ": only " + std::to_string(n) + " CUDA device" + (n == 1 ? "" : "s") +
                     " visible");
}

namespace {

// OpenBLAS (Debian's libopenblas0-pthread behind libblas.so.3) keeps its own pool of worker
// threads that spin with sched_yield between calls. Next to libtorch's OpenMP threads they
// oversubscribe the cores: on the 2-core machines here the SAM mask decoder (many small fp32
// GEMMs) spent 50-90 ms per prompt in the kernel (300,000 sched_yield calls for 22 prompts) and
// ran 2x slower. The large products lli runs go through oneDNN or libtorch's own parallel loops,
// so OpenBLAS runs single-threaded (measured: SAM f32 encoder unchanged, decoder 2x faster).
// Looked up at run time: the BLAS behind libtorch may not be OpenBLAS. $OPENBLAS_NUM_THREADS,
// when set, is left to OpenBLAS.
void limit_openblas_threads() {
  if (std::getenv("OPENBLAS_NUM_THREADS")) return;
  using SetThreads = void (*)(int);
  if (auto* f = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(1);
}

}  // namespace

namespace {
// The first number in a small text file (0 when absent or "max", i.e. no limit).
unsigned long long read_number(const char* path) {
  unsigned long long v = 0;
  if (FILE* f = std::fopen(path, "r")) {
    if (std::fscanf(f, "%llu", &v) != 1) v = 0;
    std::fclose(f);
  }
  return v;
}
}  // namespace

unsigned long long available_memory_bytes() {
  unsigned long long avail = 0;
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %llu kB", &avail) == 1) {
        avail <<= 10;
        break;
      }
    std::fclose(f);
  }
  const unsigned long long max = read_number("/sys/fs/cgroup/memory.max");
  if (max > 0) {
    // The cgroup's anonymous memory (its page cache can be reclaimed, as MemAvailable assumes).
    unsigned long long used = 0;
    bool found = false;
    if (FILE* f = std::fopen("/sys/fs/cgroup/memory.stat", "r")) {
      char line[256];
      while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "anon %llu", &used) == 1) {
          found = true;
          break;
        }
      std::fclose(f);
    }
    if (!found) used = read_number("/sys/fs/cgroup/memory.current");
    const unsigned long long left = max > used ? max - used : 0;
    if (avail == 0 || left < avail) avail = left;
  }
  return avail;
}

int configure_threads(int threads) {
  int n = threads;
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  limit_openblas_threads();
  install_cpu_allocator();
  return n;
}

}  // namespace lli
