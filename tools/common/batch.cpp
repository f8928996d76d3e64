#include "batch.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "core/activity.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"

namespace lli::cli {

namespace {
const std::vector<std::string> kImageExts = {".png", ".jpg", ".jpeg", ".webp", ".bmp"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
}  // namespace

bool is_batch_input(const std::string& image_arg) {
  if (image_arg.empty() || image_arg == "-") return false;
  if (image_arg[0] == '@') return true;
  std::error_code ec;
  return fs::is_directory(image_arg, ec);
}

std::vector<fs::path> list_batch_inputs(const std::string& image_arg) {
  std::vector<fs::path> items;
  if (image_arg[0] == '@') {
    const std::string list = image_arg.substr(1);
    std::ifstream f(list);
    if (!f) throw InputError(list + ": cannot open the batch list file");
    std::string line;
    while (std::getline(f, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
      size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#') continue;
      items.emplace_back(line.substr(start));
    }
  } else {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(image_arg, ec)) {
      if (!e.is_regular_file()) continue;
      const std::string ext = lower(e.path().extension().string());
      if (std::find(kImageExts.begin(), kImageExts.end(), ext) != kImageExts.end()) items.push_back(e.path());
    }
    if (ec) throw InputError(image_arg + ": cannot list the directory (" + ec.message() + ")");
  }
  std::sort(items.begin(), items.end());
  std::map<std::string, fs::path> stems;
  for (const auto& p : items) {
    auto [it, fresh] = stems.emplace(p.stem().string(), p);
    if (!fresh)
      throw InputError(image_arg + ": " + it->second.string() + " and " + p.string() +
                       " have the same stem; their outputs would collide");
  }
  return items;
}

Shard parse_shard(const std::string& s) {
  Shard sh;
  if (s.empty()) return sh;
  int k = 0, n = 0;
  char extra = 0;
  if (std::sscanf(s.c_str(), "%d/%d%c", &k, &n, &extra) != 2 || n < 1 || k < 1 || k > n)
    throw UsageError("--shard '" + s + "': expected K/N with 1 <= K <= N, e.g. --shard 2/4");
  sh.k = k;
  sh.n = n;
  return sh;
}

std::optional<fs::path> find_by_stem(const fs::path& dir, const std::string& stem,
                                     const std::vector<std::string>& suffixes, const std::vector<std::string>& exts) {
  std::error_code ec;
  for (const auto& suffix : suffixes)
    for (const auto& ext : exts) {
      fs::path p = dir / (stem + suffix + ext);
      if (fs::is_regular_file(p, ec)) return p;
    }
  return std::nullopt;
}

int run_batch(const CommonOptions& o, const std::string& tool,
              const std::function<fs::path(const fs::path& input)>& output_for,
              const std::function<void(const BatchItem& item, nlohmann::json& result)>& fn) {
  if (o.outdir.empty()) throw UsageError("batch mode (-i " + o.image + ") needs --outdir DIR");
  if (!o.output.empty()) throw UsageError("-o is for one image; batch mode writes into --outdir");
  if (!o.session.empty()) throw UsageError("--session works on one image at a time; not with a batch -i");
  const Shard shard = parse_shard(o.shard);
  std::error_code ec;
  fs::create_directories(o.outdir, ec);
  if (ec) throw InputError(o.outdir + ": cannot create the output directory (" + ec.message() + ")");

  const auto all = list_batch_inputs(o.image);
  std::vector<fs::path> mine;
  for (size_t i = 0; i < all.size(); ++i)
    if (static_cast<int>(i % shard.n) == shard.k - 1) mine.push_back(all[i]);
  log_info("{}: {} item(s) in {} (shard {}/{}: {})", tool, all.size(), o.image, shard.k, shard.n, mine.size());

  int first_error = 0, n_ok = 0, n_skip = 0, n_fail = 0;
  Progress bar(tool, static_cast<long>(mine.size()));
  long done = 0;
  for (const auto& input : mine) {
    check_interrupted();
    BatchItem item{input, input.stem().string(), output_for(input)};
    nlohmann::json result = {{"input", input.string()}, {"output", item.output.string()}};
    std::error_code e2;
    auto item_failed = [&](int code, const std::string& msg) {
      result["status"] = "error";
      result["error"] = msg;
      result["exit_code"] = code;
      if (!first_error) first_error = code;
      ++n_fail;
      print_error(tool, msg);
    };
    if (fs::is_symlink(item.output, e2)) {
      // Never written through, never replaced: the link may point anywhere.
      item_failed(static_cast<int>(ExitCode::bad_input),
                  item.output.string() + ": is a symbolic link (to " + fs::read_symlink(item.output, e2).string() +
                      "); lli does not write through or replace links in --outdir");
    } else if (!o.overwrite && fs::exists(item.output, e2)) {
      result["status"] = "skipped";
      result["reason"] = "output exists (use --overwrite to redo)";
      ++n_skip;
    } else {
      if (fs::exists(item.output, e2) && fs::equivalent(item.output, input, e2))
        throw UsageError(item.output.string() + ": output would overwrite its input");
      try {
        Activity processing("processing " + input.filename().string());
        fn(item, result);
        result["status"] = "ok";
        ++n_ok;
      } catch (const InterruptedError&) {
        throw;
      } catch (const Error& e) {
        if (e.code() == ExitCode::runtime && is_allocation_failure(e.what()))
          item_failed(5, input.string() + ": " + out_of_memory_message(tool, e.what()));
        else
          item_failed(static_cast<int>(e.code()), e.what());
      } catch (const std::exception& e) {
        const std::string what = e.what();
        const bool oom = dynamic_cast<const std::bad_alloc*>(&e) || is_allocation_failure(what);
        item_failed(5, input.string() + ": " + (oom ? out_of_memory_message(tool, what)
                                                    : what.substr(0, what.find('\n'))));
      }
    }
    if (o.json) {
      std::printf("%s\n", result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      std::fflush(stdout);
    }
    bar.update(++done);
  }
  bar.finish();
  log_info("{}: {} done, {} skipped (output exists), {} failed", tool, n_ok, n_skip, n_fail);
  return first_error;
}

}  // namespace lli::cli
