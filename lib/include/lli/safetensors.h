// safetensors reader and writer (no libtorch here; see tensor_io.h for the torch bridge).
//
// Reader: single file or sharded checkpoint (model.safetensors.index.json), memory-mapped; tensor
// data is referenced in place and kept alive by a shared_ptr to the mapping. Validation follows the
// format's reference implementation: header length capped at 100,000,000 bytes before anything is
// allocated; header is JSON with no duplicate names; known dtype; shape x dtype size computed with
// overflow checks and equal to the offsets' span; tensors cover the data section exactly (start at
// 0, no gap, no overlap, end at end of file); __metadata__ only string->string; shard names in an
// index confined to the checkpoint directory; Git-LFS pointer files named as such.
// Every rejection is an lli::ModelError naming the file, the tensor and the rule.
//
// Residency (OpenOptions): `mmap` (default) maps the file and tensors view the page cache in place;
// `copy` reads the data section with parallel preads into 2 MiB-aligned anonymous memory advised for
// transparent huge pages (converting floating tensors to OpenOptions::float_dtype on the way), so that
// the CPU reads weights from huge-page memory instead of 4 KiB page-cache pages (llama.cpp's --no-mmap).
// The header is validated the same way in both modes before any data is read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lli::st {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::size_t dtype_size(DType d);
const char* dtype_name(DType d);  // "F32", ...

struct Mapping;  // an mmap'd file; opaque

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;  // points into the mapping
  std::size_t nbytes = 0;
  std::shared_ptr<const Mapping> owner;  // keeps `data` alive
  std::string file;                      // for messages
};

enum class Residency { mmap, copy };
const char* residency_name(Residency r);  // "mmap", "copy"

struct OpenOptions {
  Residency residency = Residency::mmap;
  // copy only: F16/BF16/F32/F64 tensors are stored converted to this dtype (F32, BF16 or F16);
  // none = as in the file. Integer and BOOL tensors are never converted.
  std::optional<DType> float_dtype;
  // copy only: which floating tensors float_dtype applies to (by name; unset = all).
  std::function<bool(const std::string& name)> convert;
  int threads = 0;  // copy only: parallel readers (0 = number of cores)
  // copy only: called from the opening thread with bytes read so far and the total of the data
  // sections of every file of the checkpoint.
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

// Drops this process's resident pages of [p, p + n) when the range lies inside a live checkpoint
// mapping: for a tensor that was converted or copied at load (its mapped bytes are never read
// again), so peak RSS is the converted weights, not converted weights + file. Whole pages only (a
// page shared with a neighbouring tensor stays); the file's pages stay in the page cache, and a
// later read faults them back in unchanged. A `copy` checkpoint's pages are freed (they read as
// zeros afterwards: only for tensors that nothing reads again). No-op for any other memory.
void release_mapped_pages(const void* p, std::size_t n);

// One .safetensors file.
class File {
 public:
  // `data_total`: the progress total to report (0 = this file's data section); `data_done`: bytes
  // of earlier files already reported (sharded checkpoints).
  static File open(const std::filesystem::path& path, const OpenOptions& opts = {}, std::uint64_t data_done = 0,
                   std::uint64_t data_total = 0);
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorRef>& tensors() const { return tensors_; }  // in data-offset order

 private:
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorRef> tensors_;
};

// A checkpoint: a .safetensors file, a directory holding model.safetensors, or a directory
// (or index path) with model.safetensors.index.json naming shards. `index_name` lets callers
// open e.g. "diffusion_pytorch_model.safetensors.index.json".
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& path, const std::string& stem = "model",
                         const OpenOptions& opts = {});
  bool contains(const std::string& name) const { return by_name_.count(name) != 0; }
  const TensorRef& get(const std::string& name) const;  // ModelError if absent
  std::vector<std::string> names() const;               // sorted
  const std::map<std::string, TensorRef>& all() const { return by_name_; }
  const std::string& source() const { return source_; }  // path for messages
  // The __metadata__ of the file (the first shard's for a sharded checkpoint).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string source_;
  std::map<std::string, TensorRef> by_name_;
  std::map<std::string, std::string> metadata_;
};

// Writer (atomic: temp file + rename). `data` must hold nbytes for each tensor.
struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;
};
void write_file(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace lli::st
