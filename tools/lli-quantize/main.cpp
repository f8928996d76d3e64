// lli-quantize: writes a LLaVA checkpoint whose language-model linears are q8_0 or q4_k (the
// layout of nn/quant_linear.h), as llama.cpp's quantize does for GGUF files. Argument parsing
// and file handling only: the formats and the selection of layers live in lib/.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "common/cli.h"
#include "core/activity.h"
#include "io/dtype_convert.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "models/llava.h"
#include "nn/layers.h"
#include "nn/quant_linear.h"

namespace {

namespace fs = std::filesystem;
using namespace lli;
using namespace lli::cli;

const char* kExamples = R"(
Examples:
  lli-quantize models/llava-1.5-7b-hf models/llava-1.5-7b-q4_k --type q4_k
  lli-quantize models/llava-1.5-7b-hf models/llava-1.5-7b-q8_0 --type q8_0 --json
  lli-chat -m models/llava-1.5-7b-q4_k -i photo.jpg "describe it"   # loads the 4-bit weights
The language model's linears (attention and MLP projections, lm_head) are quantized; the vision
tower, projector, embeddings and norms keep their dtype. Every other file of IN_DIR (config,
tokenizer, processor) is copied. OUT_DIR appears complete or not at all.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 bad checkpoint, 5 runtime (e.g. disk full), 130 interrupted.)";

struct Flags {
  std::string in, out, type;
  bool overwrite = false;
};

// A float tensor of the checkpoint as f32 or bf16 (what the quantizer reads).
torch::Tensor quantizer_input(const st::TensorRef& ref) {
  auto t = to_torch(ref);
  if (t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat32) return t;
  return t.to(torch::kFloat32);
}

void run(const Flags& f, const CommonOptions& o) {
  nn::quant::QType type;
  if (!nn::quant::parse_qtype(f.type, &type)) throw UsageError("--type: expected q8_0 or q4_k");
  const fs::path in(f.in), out(f.out);
  std::error_code ec;
  if (!fs::is_directory(in, ec)) throw InputError(f.in + ": not a checkpoint directory");
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec))
    throw UsageError("OUT_DIR is IN_DIR (" + f.out + "): lli-quantize never overwrites its input");
  if (fs::exists(out, ec) && !f.overwrite)
    throw UsageError(f.out + " exists; remove it or pass --overwrite");

  // The model's structure names the linears to quantize (placeholders only: nothing is read).
  Activity reading("reading the checkpoint " + f.in);
  const auto cfg = models::load_llava_config(in);
  const auto ckpt = st::Checkpoint::open(in);
  if (ckpt.metadata().count(nn::kQuantMetadataKey))
    throw InputError(ckpt.source() + ": already quantized (" + ckpt.metadata().at(nn::kQuantMetadataKey) + ")");
  std::set<std::string> quantize;
  {
    models::Llava skeleton(cfg);
    for (const auto& item : skeleton->named_modules("", false))
      if (auto* l = dynamic_cast<nn::LinearImpl*>(item.value().get()))
        if (models::llava_quantizable(item.key()) && l->in_features() % nn::quant::kBlock == 0)
          quantize.insert(item.key() + ".weight");
  }

  // Output shards: the input's files, in the same order, each with its own tensors.
  std::map<std::string, std::vector<const st::TensorRef*>> shards;
  for (const auto& [name, ref] : ckpt.all()) shards[fs::path(ref.file).filename().string()].push_back(&ref);
  const bool sharded = fs::path(ckpt.source()).extension() == ".json";

  const fs::path tmp = out.string() + ".tmp-lli-quantize";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path p;
    bool keep = false;
    ~Cleanup() {
      std::error_code e;
      if (!keep) fs::remove_all(p, e);
    }
  } cleanup{tmp};

  // Every other file of the checkpoint directory (config, tokenizer, processor, chat template).
  for (const auto& e : fs::directory_iterator(in)) {
    const auto name = e.path().filename().string();
    if (!e.is_regular_file() || e.path().extension() == ".safetensors" || name == "model.safetensors.index.json")
      continue;
    fs::copy_file(e.path(), tmp / name);
  }

  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t n_quantized = 0, bytes_in = 0, bytes_out = 0;
  for (const auto& [name, ref] : ckpt.all()) {
    bytes_in += static_cast<std::int64_t>(ref.nbytes);
    n_quantized += quantize.count(name);
  }
  Progress bar("quantizing to " + f.type, static_cast<long>(n_quantized));
  long done = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const std::map<std::string, std::string> meta{{"format", "pt"}, {nn::kQuantMetadataKey, f.type}};
  for (const auto& [file, refs] : shards) {
    Activity quantizing("quantizing " + file + " to " + f.type);
    std::vector<torch::Tensor> keep;  // quantized arrays, alive until the shard is written
    std::vector<st::TensorData> data;
    for (const st::TensorRef* ref : refs) {
      check_interrupted();
      if (!quantize.count(ref->name)) {
        data.push_back({ref->name, ref->dtype, ref->shape, ref->data, ref->nbytes});
        continue;
      }
      if (!st::is_floating(ref->dtype) || ref->shape.size() != 2)
        throw ModelError(ref->file + ": tensor " + ref->name + ": expected a 2-D floating-point weight");
      const auto q = nn::quantize_weight(quantizer_input(*ref), type);
      st::release_mapped_pages(ref->data, ref->nbytes);  // read once: keep RSS at the output's size
      for (auto& [qname, t] : nn::quant_tensors(q, ref->name)) {
        keep.push_back(t);
        data.push_back({qname, to_st_dtype(t.scalar_type()), t.sizes().vec(), t.data_ptr(),
                        static_cast<std::size_t>(t.numel()) * t.element_size()});
      }
      bar.update(++done);
    }
    for (const auto& d : data) {
      weight_map[d.name] = file;
      bytes_out += static_cast<std::int64_t>(d.nbytes);
    }
    st::write_file(tmp / file, data, meta);
  }
  bar.finish();
  if (sharded) {
    nlohmann::ordered_json index = {{"metadata", {{"total_size", bytes_out}, {nn::kQuantMetadataKey, f.type}}},
                                    {"weight_map", weight_map}};
    write_file_atomic((tmp / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }

  // OUT_DIR appears at once (an --overwrite'n one is replaced only now).
  if (fs::exists(out, ec)) {
    const fs::path old = out.string() + ".old-lli-quantize";
    fs::remove_all(old, ec);
    fs::rename(out, old);
    fs::rename(tmp, out);
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp, out);
  }
  cleanup.keep = true;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_info("lli-quantize: {} linears to {}: {:.2f} GB -> {:.2f} GB in {:.1f} s; wrote {}", n_quantized, f.type,
           bytes_in / 1e9, bytes_out / 1e9, secs, f.out);
  if (o.json) {
    nlohmann::json j = {{"input", f.in},       {"output", f.out},          {"type", f.type},
                        {"linears", n_quantized}, {"bytes_in", bytes_in}, {"bytes_out", bytes_out},
                        {"seconds", secs},     {"bits_per_weight", nn::quant::bits_per_weight(type)}};
    std::printf("%s\n", j.dump().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lli-quantize: 8-bit (q8_0) or 4-bit (q4_k) LLaVA checkpoints for fast CPU chat"};
  app.footer(kExamples);
  CommonOptions o;
  FlagSet which;
  which.model = which.image = which.output = which.session = which.batch = which.seed = which.device = false;
  add_common_flags(app, o, which);
  Flags f;
  app.add_option("IN_DIR", f.in, "LLaVA checkpoint directory (llava-hf layout)")->required();
  app.add_option("OUT_DIR", f.out, "Directory to write (must not exist, see --overwrite)")->required();
  app.add_option("--type", f.type, "q8_0 (8.5 bits/weight) or q4_k (4.5 bits/weight)")
      ->required()
      ->check(CLI::IsMember({"q8_0", "q4_k"}));
  app.add_flag("--overwrite", f.overwrite, "Replace OUT_DIR when it exists (never IN_DIR)");
  return run_tool("lli-quantize", app, argc, argv, o, [&] {
    apply_runtime_options(o, /*uses_torch=*/true);
    run(f, o);
  });
}
