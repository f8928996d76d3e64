// safetensors reader (memory-mapped, validated) and writer.
// Ref: huggingface/safetensors (Rust crate `safetensors`, src/tensor.rs: read_metadata, validate).
#include "lli/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "core/quote.h"
#include "io/bounded_parse.h"
#include "io/dtype_convert.h"
#include "lli/error.h"
#include "lli/fs.h"

namespace lli::st {

namespace {

constexpr std::uint64_t kMaxHeaderSize = 100'000'000;  // as the reference implementation
constexpr std::uint64_t kMaxIndexSize = 100'000'000;
constexpr const char* kLfsMagic = "version https://git-lfs";

[[noreturn]] void fail(const std::string& file, const std::string& rule) { throw ModelError(file + ": " + rule); }
[[noreturn]] void fail_tensor(const std::string& file, const std::string& tensor, const std::string& rule) {
  throw ModelError(file + ": tensor " + quote_excerpt(tensor) + ": " + rule);
}

std::string quote_short(const std::string& s) { return quote_excerpt(s); }

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                            DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

bool parse_dtype_name(const std::string& s, DType* out) {
  for (DType d : kAllDTypes)
    if (s == dtype_name(d)) {
      *out = d;
      return true;
    }
  return false;
}

std::string lfs_message(const std::string& file) {
  return file + ": this is a Git LFS pointer file, not the weights; run `git lfs pull` in the checkpoint's "
                "repository (or download the file itself)";
}

// The header / index JSON, depth-bounded while parsing; a duplicate key is refused (nlohmann
// would silently keep the last one), with the header's own wording for tensor names and fields.
nlohmann::json parse_json_strict(const char* first, const char* last, const std::string& file,
                                 bool safetensors_header) {
  JsonParseOptions o;
  o.error = ExitCode::model;
  o.syntax_context = safetensors_header ? "header is not valid JSON: " : "not valid JSON: ";
  o.position_prefix = false;
  if (safetensors_header)
    o.on_duplicate = [&](const std::string& path, int depth, const std::string& key) {
      if (depth == 1) fail(file, "header has a duplicate tensor name " + quote_short(key));
      if (depth == 2) fail(file, "tensor '" + path + "': duplicate field " + quote_short(key) + " in the header entry");
    };
  return parse_json_bounded(std::string_view(first, static_cast<std::size_t>(last - first)), file, o);
}

bool read_u64_nonneg(const nlohmann::json& v, std::uint64_t* out) {
  if (!v.is_number_unsigned()) return false;  // nlohmann stores non-negative integers as unsigned
  *out = v.get<std::uint64_t>();
  return true;
}

}  // namespace

// ---- dtypes --------------------------------------------------------------------------------------
std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: return 8;
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::I16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

// ---- mapping -------------------------------------------------------------------------------------
namespace {
// Live checkpoint mappings (base -> size), for release_mapped_pages.
std::mutex& mappings_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::uintptr_t, std::size_t>& live_mappings() {
  static std::map<std::uintptr_t, std::size_t> m;
  return m;
}
}  // namespace

// A file mapping (mmap residency) or the anonymous memory holding a file's tensors (copy
// residency; `region` is the whole mmap'd range, `base` its 2 MiB-aligned start).
struct Mapping {
  void* base = nullptr;
  std::size_t size = 0;
  void* region = nullptr;
  std::size_t region_size = 0;
  std::string path;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  void track() {
    std::lock_guard<std::mutex> lock(mappings_mutex());
    live_mappings()[reinterpret_cast<std::uintptr_t>(base)] = size;
  }
  ~Mapping() {
    if (!base) return;
    {
      std::lock_guard<std::mutex> lock(mappings_mutex());
      live_mappings().erase(reinterpret_cast<std::uintptr_t>(base));
    }
    if (region)
      ::munmap(region, region_size);
    else
      ::munmap(base, size);
  }
};

const char* residency_name(Residency r) { return r == Residency::copy ? "copy" : "mmap"; }

void release_mapped_pages(const void* p, std::size_t n) {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mappings_mutex());
  auto& maps = live_mappings();
  auto it = maps.upper_bound(a);
  if (it == maps.begin()) return;
  --it;
  if (a + n > it->first + it->second) return;  // not inside one live mapping
  // Whole pages only: a page shared with a neighbouring tensor keeps its mapping.
  const std::uintptr_t lo = (a + page - 1) / page * page, hi = (a + n) / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool pread_all(int fd, void* buf, std::size_t n, off_t off) {
  auto* p = static_cast<char*>(buf);
  while (n) {
    ssize_t r = ::pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = 0;  // end of file: no system error to report
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    off += r;
  }
  return true;
}

}  // namespace

// ---- copy residency ------------------------------------------------------------------------------
namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;

// `n` bytes of anonymous memory, 2 MiB aligned and advised for transparent huge pages (THP runs
// in "madvise" mode on many hosts: without the advice the CPU walks 4 KiB pages).
std::shared_ptr<Mapping> anonymous_region(std::size_t n, const std::string& file) {
  auto m = std::make_shared<Mapping>();
  m->path = file;
  m->size = n;
  if (n == 0) return m;
  m->region_size = n + kHugePage;
  m->region = ::mmap(nullptr, m->region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m->region == MAP_FAILED) {
    m->region = nullptr;
    fail(file, "cannot allocate " + std::to_string(n >> 20) + " MiB to copy the weights into (" +
                   std::strerror(errno) + "; try --weights mmap)");
  }
  const auto a = reinterpret_cast<std::uintptr_t>(m->region);
  m->base = reinterpret_cast<void*>((a + kHugePage - 1) / kHugePage * kHugePage);
#ifdef MADV_HUGEPAGE
  ::madvise(m->base, n, MADV_HUGEPAGE);
#endif
  m->track();
  return m;
}

// Gives the parts of [base, base + n) that the kernel backed with 4 KiB pages at first touch (no
// free 2 MiB page then: memory fragmented by the page cache or other processes) huge pages now,
// copying them (MADV_COLLAPSE, Linux >= 6.1; an older kernel refuses the call and nothing
// changes). Reads over 4 KiB pages ran at about half the speed here. Skipped when the
// administrator turned transparent huge pages off ("[never]") or LLI_HUGEPAGE_COLLAPSE=0.
void collapse_to_huge_pages(void* base, std::size_t n) {
#ifdef MADV_COLLAPSE
  constexpr int kCollapse = MADV_COLLAPSE;
#else
  constexpr int kCollapse = 25;  // Linux's value; glibc 2.36's headers do not name it yet
#endif
  const char* e = std::getenv("LLI_HUGEPAGE_COLLAPSE");
  if (e && std::strcmp(e, "0") == 0) return;
  static const bool thp_off = [] {
    std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    return !f || !std::getline(f, line) || line.find("[never]") != std::string::npos;
  }();
  if (thp_off) return;
  const std::size_t whole = n / kHugePage * kHugePage;  // base is 2 MiB aligned
  if (whole) ::madvise(base, whole, kCollapse);
}

struct CopyEntry {
  TensorRef* ref;       // data/dtype/nbytes are filled in here
  std::uint64_t begin;  // offset in the file's data section
  std::uint64_t src_bytes;
  DType src_dtype;
};

// Reads the entries' bytes from fd into one anonymous region (converted as opts.float_dtype asks),
// in chunks spread over threads; reports progress from the calling thread.
void copy_entries(int fd, const std::string& file, std::uint64_t data_start, std::vector<CopyEntry>& entries,
                  const OpenOptions& opts, std::uint64_t data_done, std::uint64_t data_total) {
  std::vector<std::size_t> out_off(entries.size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    if (opts.float_dtype && is_floating(e.src_dtype) && e.src_dtype != *opts.float_dtype &&
        (!opts.convert || opts.convert(e.ref->name))) {
      e.ref->dtype = *opts.float_dtype;
      e.ref->nbytes = static_cast<std::size_t>(e.src_bytes / dtype_size(e.src_dtype) * dtype_size(e.ref->dtype));
    }
    total = (total + 63) / 64 * 64;  // 64-byte aligned tensors
    out_off[i] = total;
    total += e.ref->nbytes;
  }
  auto region = anonymous_region(total, file);
  char* base = static_cast<char*>(region->base);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    entries[i].ref->owner = region;
    entries[i].ref->data = entries[i].ref->nbytes ? base + out_off[i] : nullptr;
  }

  // Work items: up to 16 MiB of file bytes each, whole elements.
  struct Item {
    std::size_t entry;
    std::uint64_t off, len;  // within the tensor's source bytes
  };
  constexpr std::uint64_t kChunk = std::uint64_t(16) << 20;
  std::vector<Item> items;
  for (std::size_t i = 0; i < entries.size(); ++i)
    for (std::uint64_t off = 0; off < entries[i].src_bytes; off += kChunk)
      items.push_back({i, off, std::min(kChunk, entries[i].src_bytes - off)});

  std::atomic<std::size_t> next{0};
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_mu;
  auto work = [&](bool report) {
    std::vector<char> bounce;
    for (std::size_t k; !failed.load() && (k = next.fetch_add(1)) < items.size();) {
      const Item& it = items[k];
      const CopyEntry& e = entries[it.entry];
      const off_t src = static_cast<off_t>(data_start + e.begin + it.off);
      char* dst = static_cast<char*>(const_cast<void*>(e.ref->data));
      bool ok;
      if (e.ref->dtype == e.src_dtype) {
        ok = pread_all(fd, dst + it.off, it.len, src);
      } else {
        bounce.resize(kChunk);
        ok = pread_all(fd, bounce.data(), it.len, src);
        const std::size_t es = dtype_size(e.src_dtype), ed = dtype_size(e.ref->dtype);
        if (ok) convert_floats(bounce.data(), e.src_dtype, dst + it.off / es * ed, e.ref->dtype, it.len / es);
      }
      if (!ok) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!failed.exchange(true))
          error = "read error in tensor " + quote_short(e.ref->name) + " (" +
                  (errno ? std::strerror(errno) : "unexpected end of file") + ")";
        return;
      }
      const std::uint64_t d = done.fetch_add(it.len) + it.len;
      if (report && opts.progress) opts.progress(data_done + d, data_total);
    }
  };
  unsigned n_threads = opts.threads > 0 ? static_cast<unsigned>(opts.threads) : std::thread::hardware_concurrency();
  n_threads = std::max(1u, std::min<unsigned>(n_threads, static_cast<unsigned>(std::max<std::size_t>(1, items.size()))));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n_threads; ++t) pool.emplace_back(work, false);
  work(true);
  for (auto& t : pool) t.join();
  if (failed) fail(file, error);
  collapse_to_huge_pages(region->base, total);
  if (opts.progress) opts.progress(data_done + done.load(), data_total);
}

}  // namespace

// ---- File ----------------------------------------------------------------------------------------
File File::open(const std::filesystem::path& path, const OpenOptions& opts, std::uint64_t data_done,
                std::uint64_t data_total) {
  File out;
  out.path_ = path.string();
  const std::string& file = out.path_;

  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(file, "is a directory, expected a .safetensors file");
  Fd fd;
  fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) fail(file, std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(file, std::string("cannot stat (") + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) fail(file, "is not a regular file");
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  // Git LFS pointer: a small text file instead of the weights.
  const std::size_t magic_len = std::strlen(kLfsMagic);
  if (file_size >= magic_len) {
    std::string head(magic_len, '\0');
    if (pread_all(fd.fd, head.data(), magic_len, 0) && head == kLfsMagic) throw ModelError(lfs_message(file));
  }
  if (file_size == 0) fail(file, "file is empty (0 bytes); expected a safetensors file (truncated download?)");
  if (file_size < 8)
    fail(file, "file is truncated: " + std::to_string(file_size) +
                   " bytes, too short for the 8-byte header length");

  unsigned char len_bytes[8];
  if (!pread_all(fd.fd, len_bytes, 8, 0)) fail(file, std::string("read error (") + std::strerror(errno) + ")");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];  // little-endian
  if (n > kMaxHeaderSize)
    fail(file, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderSize) +
                   " bytes (not a safetensors file?)");
  if (n + 8 > file_size)
    fail(file, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(file_size) +
                   " bytes; truncated?)");

  std::string header_text(static_cast<std::size_t>(n), '\0');
  if (n && !pread_all(fd.fd, header_text.data(), header_text.size(), 8))
    fail(file, std::string("read error in the header (") + std::strerror(errno) + ")");
  nlohmann::json header =
      parse_json_strict(header_text.data(), header_text.data() + header_text.size(), file, /*safetensors_header=*/true);
  header_text = std::string();
  if (!header.is_object()) fail(file, "header is not a JSON object");

  const std::uint64_t data_start = 8 + n;
  const std::uint64_t data_size = file_size - data_start;
  struct Entry {
    TensorRef ref;
    std::uint64_t begin = 0, end = 0;
  };
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(file, "__metadata__ is not a JSON object of string -> string");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(file, "__metadata__ value of " + quote_short(m.key()) + " is " + m.value().type_name() +
                         ", not a string (__metadata__ must map strings to strings)");
        out.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(file, name, "header entry is not an object with dtype/shape/data_offsets");
    for (auto f = v.begin(); f != v.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        fail_tensor(file, name, "unknown field " + quote_short(f.key()) +
                                    " in the header entry (expected exactly dtype, shape, data_offsets)");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) fail_tensor(file, name, std::string("header entry has no '") + key + "' field");

    Entry e;
    e.ref.name = name;
    e.ref.file = file;
    const auto& jd = v["dtype"];
    if (!jd.is_string()) fail_tensor(file, name, "dtype is not a string");
    if (!parse_dtype_name(jd.get<std::string>(), &e.ref.dtype))
      fail_tensor(file, name, "unsupported dtype " + quote_short(jd.get<std::string>()) +
                                  " (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");

    const auto& js = v["shape"];
    if (!js.is_array()) fail_tensor(file, name, "shape is not an array");
    std::uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : js) {
      std::uint64_t dim = 0;
      if (!read_u64_nonneg(d, &dim))
        fail_tensor(file, name, "shape entry " + json_excerpt(d) + " is not a non-negative integer");
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail_tensor(file, name, "shape entry " + std::to_string(dim) + " is too large");
      e.ref.shape.push_back(static_cast<std::int64_t>(dim));
      if (dim != 0 && numel > std::numeric_limits<std::uint64_t>::max() / dim) overflow = true;
      numel *= dim;
    }
    const std::uint64_t esize = dtype_size(e.ref.dtype);
    if (!overflow && numel > std::numeric_limits<std::uint64_t>::max() / esize) overflow = true;
    // A zero dimension makes the product 0 whatever overflowed before it.
    if (overflow && std::find(e.ref.shape.begin(), e.ref.shape.end(), 0) != e.ref.shape.end()) {
      overflow = false;
      numel = 0;
    }
    if (overflow)
      fail_tensor(file, name, "shape " + shape_str(e.ref.shape) + " x " + dtype_name(e.ref.dtype) +
                                  " overflows the byte size");
    const std::uint64_t nbytes = numel * esize;

    const auto& jo = v["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !read_u64_nonneg(jo[0], &e.begin) || !read_u64_nonneg(jo[1], &e.end))
      fail_tensor(file, name, "data_offsets " + json_excerpt(jo) + " is not [begin, end] of non-negative integers");
    if (e.begin > e.end)
      fail_tensor(file, name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                  "] has begin > end");
    if (e.end - e.begin != nbytes)
      fail_tensor(file, name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                  "] span " + std::to_string(e.end - e.begin) + " bytes but shape " +
                                  shape_str(e.ref.shape) + " x " + dtype_name(e.ref.dtype) + " needs " +
                                  std::to_string(nbytes));
    if (e.end > data_size)
      fail_tensor(file, name, "data_offsets end " + std::to_string(e.end) + " is past the end of the data section (" +
                                  std::to_string(data_size) + " bytes; truncated file?)");
    e.ref.nbytes = static_cast<std::size_t>(nbytes);
    entries.push_back(std::move(e));
  }

  // The tensors must cover the data section exactly.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin > pos) {
      if (!prev)
        fail_tensor(file, e.ref.name, "first tensor starts at data offset " + std::to_string(e.begin) +
                                          ", not 0 (gap at the start of the data section)");
      fail_tensor(file, e.ref.name, "gap in the data section: starts at " + std::to_string(e.begin) +
                                        " but tensor " + quote_short(prev->ref.name) + " ends at " + std::to_string(pos));
    }
    if (e.begin < pos)
      fail_tensor(file, e.ref.name, "overlaps tensor " + quote_short(prev->ref.name) + ": starts at " + std::to_string(e.begin) +
                                        " before its end " + std::to_string(pos));
    pos = e.end;
    prev = &e;
  }
  if (pos != data_size)
    fail(file, "tensors cover " + std::to_string(pos) + " bytes of the " + std::to_string(data_size) +
                   "-byte data section (trailing bytes at the end of the file)");

  // Everything is valid: now the data.
  if (opts.residency == Residency::copy) {
    std::vector<CopyEntry> ce;
    ce.reserve(entries.size());
    for (auto& e : entries) ce.push_back({&e.ref, e.begin, e.end - e.begin, e.ref.dtype});
    copy_entries(fd.fd, file, data_start, ce, opts, data_done, data_total ? data_total : data_size);
  } else {
    // Map the whole file: private and writable, so an accidental write is copy-on-write in memory.
    auto mapping = std::make_shared<Mapping>();
    mapping->path = file;
    mapping->size = static_cast<std::size_t>(file_size);
    void* base = ::mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
    if (base == MAP_FAILED) fail(file, std::string("mmap failed (") + std::strerror(errno) + ")");
    mapping->base = base;
    mapping->track();
#ifdef MADV_HUGEPAGE
    // Lets the kernel read the file into 2 MiB page-cache folios and map them with huge pages
    // (Linux 6.x with large-folio file systems; elsewhere the advice is ignored).
    ::madvise(base, mapping->size, MADV_HUGEPAGE);
#endif
    const char* bytes = static_cast<const char*>(base);
    for (auto& e : entries) {
      e.ref.owner = mapping;
      e.ref.data = bytes + data_start + e.begin;
    }
  }

  out.tensors_.reserve(entries.size());
  for (auto& e : entries) out.tensors_.push_back(std::move(e.ref));
  return out;
}

// ---- Checkpoint ----------------------------------------------------------------------------------
namespace {

bool is_within(const std::filesystem::path& root, const std::filesystem::path& p) {
  auto r = root.begin(), q = p.begin();
  for (; r != root.end(); ++r, ++q) {
    if (r->empty()) continue;  // trailing separator of root
    if (q == p.end() || *r != *q) return false;
  }
  return true;
}

std::string read_small_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path.string(), std::string("cannot open (") + std::strerror(errno) + ")");
  f.seekg(0, std::ios::end);
  auto size = static_cast<std::uint64_t>(f.tellg());
  if (size > kMaxIndexSize)
    fail(path.string(), "index file is " + std::to_string(size) + " bytes, more than the limit of " +
                            std::to_string(kMaxIndexSize));
  f.seekg(0);
  std::string s(size, '\0');
  if (size && !f.read(s.data(), static_cast<std::streamsize>(size))) fail(path.string(), "read error");
  return s;
}

void add_file(std::map<std::string, TensorRef>& by_name, const File& f) {
  for (const auto& t : f.tensors()) by_name.emplace(t.name, t);
}

void open_index(const std::filesystem::path& index_path, std::map<std::string, TensorRef>& by_name,
                std::map<std::string, std::string>& metadata, const OpenOptions& opts) {
  namespace fs = std::filesystem;
  const std::string file = index_path.string();
  std::string text = read_small_file(index_path);
  if (text.rfind(kLfsMagic, 0) == 0) throw ModelError(lfs_message(file));
  nlohmann::json j = parse_json_strict(text.data(), text.data() + text.size(), file, /*safetensors_header=*/false);
  if (!j.is_object()) fail(file, "index is not a JSON object");
  if (!j.contains("weight_map")) fail(file, "index has no 'weight_map'");
  const auto& wm = j["weight_map"];
  if (!wm.is_object()) fail(file, "weight_map is not an object of tensor name -> shard file");

  fs::path dir = index_path.has_parent_path() ? index_path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::path root = fs::canonical(dir, ec);
  if (ec) fail(file, "cannot resolve the checkpoint directory (" + ec.message() + ")");
  // The Hugging Face hub cache keeps files as symlinks <repo>/snapshots/<rev>/x -> ../../blobs/<hash>:
  // there the repository's blobs/ directory is allowed too (still confined to that repository).
  std::optional<fs::path> blobs;
  if (root.parent_path().filename() == "snapshots") blobs = root.parent_path().parent_path() / "blobs";

  // Validate every shard name before opening anything.
  std::map<std::string, fs::path> shards;  // name in the index -> resolved path
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    const std::string where = "weight_map." + one_line(it.key(), 60);  // the key escaped, bounded
    if (!it.value().is_string())
      fail(file, where + " is " + it.value().type_name() + ", not a shard file name");
    const std::string shard = it.value().get<std::string>();
    if (shards.count(shard)) continue;
    fs::path sp(shard);
    if (shard.empty()) fail(file, where + ": empty shard name");
    if (sp.is_absolute())
      fail(file, where + ": shard " + quote_short(shard) +
                     " is an absolute path; shards must be inside the checkpoint directory");
    for (const auto& part : sp)
      if (part == "..")
        fail(file, where + ": shard " + quote_short(shard) +
                       " contains '..'; shards must be inside the checkpoint directory");
    fs::path full = dir / sp;
    if (!fs::exists(full, ec))
      fail(file, where + ": shard " + quote_short(shard) + " does not exist (" + full.string() +
                     "; incomplete download?)");
    fs::path real = fs::canonical(full, ec);
    if (ec) fail(file, "shard " + quote_short(shard) + ": cannot resolve (" + ec.message() + ")");
    if (!is_within(root, real) && !(blobs && is_within(*blobs, real)))
      fail(file, where + ": shard " + quote_short(shard) + " resolves to " + real.string() +
                     ", outside the checkpoint directory " + root.string() + " (symlink escape)");
    shards.emplace(shard, full);
  }

  std::uint64_t total = 0, done = 0;  // progress over all shards (file sizes: headers are small)
  for (const auto& [shard, full] : shards) total += fs::file_size(full, ec);
  std::map<std::string, std::map<std::string, TensorRef>> files;  // shard -> its tensors by name
  for (const auto& [shard, full] : shards) {
    File f = File::open(full, opts, done, total);
    done += fs::file_size(full, ec);
    if (metadata.empty()) metadata = f.metadata();
    auto& m = files[shard];
    for (const auto& t : f.tensors()) {
      if (!wm.contains(t.name))
        fail(f.path(), "tensor " + quote_short(t.name) + " is not listed in the index's weight_map (" + file +
                           "; shards from another version?)");
      m.emplace(t.name, t);
    }
  }
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    const std::string shard = it.value().get<std::string>();
    const auto& m = files.at(shard);
    auto t = m.find(it.key());
    if (t == m.end())
      fail(file, "weight_map maps tensor " + quote_short(it.key()) + " to " + quote_short(shard) +
                     ", which has no such tensor (shards from another version?)");
    by_name.emplace(it.key(), t->second);
  }
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& path, const std::string& stem, const OpenOptions& opts) {
  namespace fs = std::filesystem;
  Checkpoint c;
  std::error_code ec;
  fs::path target = path;
  if (fs::is_directory(path, ec)) {
    fs::path single = path / (stem + ".safetensors");
    fs::path index = path / (stem + ".safetensors.index.json");
    if (fs::exists(single, ec))
      target = single;
    else if (fs::exists(index, ec))
      target = index;
    else
      fail(path.string(), "no " + stem + ".safetensors or " + stem +
                              ".safetensors.index.json in this directory (is it a checkpoint directory?)");
  } else if (!fs::exists(path, ec)) {
    fail(path.string(), "no such file or directory");
  }
  c.source_ = target.string();
  if (target.extension() == ".json") {
    open_index(target, c.by_name_, c.metadata_, opts);
  } else {
    File f = File::open(target, opts);
    c.metadata_ = f.metadata();
    add_file(c.by_name_, f);
  }
  return c;
}

const TensorRef& Checkpoint::get(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail(source_, "no tensor " + quote_short(name) + " in the checkpoint");
  return it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [k, v] : by_name_) out.push_back(k);
  return out;
}

// ---- writer --------------------------------------------------------------------------------------
void write_file(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      throw RuntimeError(file + ": cannot write a tensor named " + quote_short(t.name));
    if (!seen.insert(t.name).second) throw RuntimeError(file + ": tensor " + quote_short(t.name) + " given twice");
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) throw RuntimeError(file + ": tensor " + quote_short(t.name) + ": negative dimension in " + shape_str(t.shape));
      numel *= static_cast<std::uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.nbytes)
      throw RuntimeError(file + ": tensor " + quote_short(t.name) + ": " + std::to_string(t.nbytes) + " bytes given but shape " +
                         shape_str(t.shape) + " x " + dtype_name(t.dtype) + " needs " +
                         std::to_string(numel * dtype_size(t.dtype)));
    if (t.nbytes && !t.data) throw RuntimeError(file + ": tensor " + quote_short(t.name) + ": no data");
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw RuntimeError(file + ": cannot encode the header (" + e.what() + ")");
  }
  h.append((8 - h.size() % 8) % 8, ' ');
  char len[8];
  std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);

  AtomicFile out(path);
  out.write(std::string_view(len, 8));
  out.write(h);
  for (const auto& t : tensors)
    if (t.nbytes) out.write(std::string_view(static_cast<const char*>(t.data), t.nbytes));
  out.commit();
}

}  // namespace lli::st
