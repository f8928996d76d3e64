// Batch mode shared by all tools: `-i DIR` or `-i @list.txt` with `--outdir DIR`.
// Items are sorted by path; `--shard K/N` (1 <= K <= N) keeps items whose index i (0-based,
// after sorting) satisfies i % N == K-1; an item whose output already exists is skipped unless
// --overwrite (so an interrupted run resumes); inputs are never overwritten; one failing item does
// not stop the others (the exit code is that of the first failure); Ctrl-C stops between items.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"

namespace lli::cli {

namespace fs = std::filesystem;

// True when -i names a directory or an @list file.
bool is_batch_input(const std::string& image_arg);

// Image files of a directory (png/jpg/jpeg/webp/bmp, not recursive) or the lines of an @list
// file (blank lines and lines starting with '#' skipped; relative paths are relative to the
// current directory). Sorted. InputError on an unreadable list / directory, or two items with
// the same stem (outputs would collide).
std::vector<fs::path> list_batch_inputs(const std::string& image_arg);

struct Shard {
  int k = 1, n = 1;
};
// Parses "K/N" (UsageError otherwise); empty = 1/1.
Shard parse_shard(const std::string& s);

// A file of `dir` whose stem is `stem` with one of `exts` (tried in order; e.g. {".json"} or the
// image extensions), or with suffix (e.g. stem + ".mask" + ext); nullopt if none.
std::optional<fs::path> find_by_stem(const fs::path& dir, const std::string& stem,
                                     const std::vector<std::string>& suffixes,
                                     const std::vector<std::string>& exts);

struct BatchItem {
  fs::path input;
  std::string stem;
  fs::path output;  // primary output, used for the skip-if-exists check
};

// Runs `fn` for every item of the shard. `output_for(input)` gives the primary output path.
// `fn(item, result)` fills the JSON result; with --json one JSON line per item is printed.
// Returns the exit code (0 when every item succeeded or was skipped).
int run_batch(const CommonOptions& o, const std::string& tool,
              const std::function<fs::path(const fs::path& input)>& output_for,
              const std::function<void(const BatchItem& item, nlohmann::json& result)>& fn);

}  // namespace lli::cli
