// Writes a random-weight LLaVA-1.5-7B checkpoint for benchmarks: the exact tensor names, shapes and
// sharding layout of llava-hf/llava-1.5-7b-hf (3 shards + model.safetensors.index.json, config.json
// in the same spirit as the public one), stored as bf16. Values are normal * 0.02 (norm weights 1,
// biases normal * 0.02) so activations stay finite; they are drawn once into a pool and each tensor
// views the pool at its own offset, so memory stays small and each shard is streamed by
// lli::st::write_file one tensor after the other.
//
//   make_random_llava OUT_DIR [--preset 7b|mid] [--dtype bf16|f16] [--text-layers N] [--vision-layers N]
//                             [--shards K] [--seed S]
//
// --preset mid: the "mid" LLaVA of the chat-speed benchmarks: the same CLIP ViT-L/14-336 tower with a
// TinyLlama-1.1B-shaped LLaMA (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads).
// --dtype f16: stored as fp16, as llava-hf distributes its checkpoints (lli converts at load).
// The layer overrides make small checkpoints with the same widths for quick runs.
// Ref: llava-hf/llava-1.5-7b-hf config.json and model.safetensors.index.json (transformers 4.45 layout).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/safetensors.h"

namespace {

namespace fs = std::filesystem;

struct Spec {
  std::string name;
  std::vector<std::int64_t> shape;
  enum Kind { random, ones } kind = random;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// LLaVA-1.5-7B sizes (public config.json: LLaMA-7B text tower, CLIP ViT-L/14-336 vision tower).
constexpr std::int64_t kVocab = 32064;
constexpr std::int64_t kVisionHidden = 1024, kVisionInter = 4096, kImage = 336, kPatch = 14;

struct TextShape {
  std::int64_t hidden = 4096, inter = 11008, layers = 32, heads = 32, kv_heads = 32;
  const char* name_or_path = "lmsys/vicuna-7b-v1.5";
};
TextShape text_shape(const std::string& preset) {
  if (preset == "mid") return {2048, 5632, 22, 32, 4, "TinyLlama/TinyLlama-1.1B-Chat-v1.0"};
  return {};
}

std::vector<Spec> llava_specs(const TextShape& ts, std::int64_t text_layers, std::int64_t vision_layers) {
  std::vector<Spec> s;
  const std::string vm = "vision_tower.vision_model.";
  const auto D = kVisionHidden, I = kVisionInter, P = (kImage / kPatch) * (kImage / kPatch);
  s.push_back({vm + "embeddings.class_embedding", {D}});
  s.push_back({vm + "embeddings.patch_embedding.weight", {D, 3, kPatch, kPatch}});
  s.push_back({vm + "embeddings.position_embedding.weight", {P + 1, D}});
  s.push_back({vm + "pre_layrnorm.weight", {D}, Spec::ones});
  s.push_back({vm + "pre_layrnorm.bias", {D}});
  for (std::int64_t i = 0; i < vision_layers; ++i) {
    const std::string l = vm + "encoder.layers." + std::to_string(i) + ".";
    for (const char* p : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      s.push_back({l + "self_attn." + p + ".weight", {D, D}});
      s.push_back({l + "self_attn." + p + ".bias", {D}});
    }
    s.push_back({l + "layer_norm1.weight", {D}, Spec::ones});
    s.push_back({l + "layer_norm1.bias", {D}});
    s.push_back({l + "mlp.fc1.weight", {I, D}});
    s.push_back({l + "mlp.fc1.bias", {I}});
    s.push_back({l + "mlp.fc2.weight", {D, I}});
    s.push_back({l + "mlp.fc2.bias", {D}});
    s.push_back({l + "layer_norm2.weight", {D}, Spec::ones});
    s.push_back({l + "layer_norm2.bias", {D}});
  }
  s.push_back({vm + "post_layernorm.weight", {D}, Spec::ones});
  s.push_back({vm + "post_layernorm.bias", {D}});

  const auto H = ts.hidden, F = ts.inter, KV = ts.hidden / ts.heads * ts.kv_heads;
  s.push_back({"multi_modal_projector.linear_1.weight", {H, D}});
  s.push_back({"multi_modal_projector.linear_1.bias", {H}});
  s.push_back({"multi_modal_projector.linear_2.weight", {H, H}});
  s.push_back({"multi_modal_projector.linear_2.bias", {H}});

  const std::string lm = "language_model.model.";
  s.push_back({lm + "embed_tokens.weight", {kVocab, H}});
  for (std::int64_t i = 0; i < text_layers; ++i) {
    const std::string l = lm + "layers." + std::to_string(i) + ".";
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      const bool kv = std::string(p) == "k_proj" || std::string(p) == "v_proj";
      s.push_back({l + "self_attn." + p + ".weight", {kv ? KV : H, H}});
    }
    s.push_back({l + "mlp.gate_proj.weight", {F, H}});
    s.push_back({l + "mlp.up_proj.weight", {F, H}});
    s.push_back({l + "mlp.down_proj.weight", {H, F}});
    s.push_back({l + "input_layernorm.weight", {H}, Spec::ones});
    s.push_back({l + "post_attention_layernorm.weight", {H}, Spec::ones});
  }
  s.push_back({lm + "norm.weight", {H}, Spec::ones});
  s.push_back({"language_model.lm_head.weight", {kVocab, H}});
  return s;
}

nlohmann::ordered_json llava_config(const TextShape& ts, std::int64_t text_layers, std::int64_t vision_layers,
                                    const char* dtype) {
  nlohmann::ordered_json text = {{"_name_or_path", ts.name_or_path},
                                 {"architectures", {"LlamaForCausalLM"}},
                                 {"hidden_size", ts.hidden},
                                 {"intermediate_size", ts.inter},
                                 {"max_position_embeddings", 4096},
                                 {"model_type", "llama"},
                                 {"num_attention_heads", ts.heads},
                                 {"num_hidden_layers", text_layers},
                                 {"num_key_value_heads", ts.kv_heads},
                                 {"rms_norm_eps", 1e-05},
                                 {"torch_dtype", dtype},
                                 {"vocab_size", kVocab}};
  nlohmann::ordered_json vision = {{"hidden_size", kVisionHidden},
                                   {"image_size", kImage},
                                   {"intermediate_size", kVisionInter},
                                   {"model_type", "clip_vision_model"},
                                   {"num_attention_heads", 16},
                                   {"num_hidden_layers", vision_layers},
                                   {"patch_size", kPatch},
                                   {"projection_dim", 768},
                                   {"vocab_size", 32000}};
  return {{"architectures", {"LlavaForConditionalGeneration"}},
          {"ignore_index", -100},
          {"image_seq_length", 576},
          {"image_token_index", 32000},
          {"model_type", "llava"},
          {"pad_token_id", 32001},
          {"projector_hidden_act", "gelu"},
          {"text_config", text},
          {"tie_word_embeddings", false},
          {"torch_dtype", dtype},
          {"transformers_version", "4.45.1"},
          {"vision_config", vision},
          {"vision_feature_layer", -2},
          {"vision_feature_select_strategy", "default"},
          {"vocab_size", kVocab},
          {"_lli_note", "random weights (bench/make_random_llava), not a usable model"}};
}

void run(const fs::path& out, const std::string& preset, bool f16, std::int64_t text_layers,
         std::int64_t vision_layers, int n_shards, std::uint64_t seed) {
  const TextShape ts = text_shape(preset);
  if (text_layers == 0) text_layers = ts.layers;
  if (text_layers < 1 || vision_layers < 2)
    throw lli::UsageError("--text-layers must be >= 1 and --vision-layers >= 2 (vision_feature_layer is -2)");
  if (n_shards < 1) throw lli::UsageError("--shards must be >= 1");
  fs::create_directories(out);
  const auto specs = llava_specs(ts, text_layers, vision_layers);
  const auto st_dtype = f16 ? lli::st::DType::F16 : lli::st::DType::BF16;
  const auto torch_dtype = f16 ? torch::kFloat16 : torch::kBFloat16;

  std::int64_t largest = 0, total = 0;
  for (const auto& s : specs) {
    largest = std::max(largest, s.numel());
    total += s.numel() * 2;
  }
  // Pool of random bf16 values, a little larger than the largest tensor.
  const std::int64_t pool_n = largest + (1 << 22);
  std::fprintf(stderr, "drawing %.0f M random values...\n", pool_n / 1e6);
  auto gen = at::detail::createCPUGenerator(seed);
  auto pool = (torch::randn({pool_n}, gen) * 0.02).to(torch_dtype).contiguous();
  std::int64_t max_ones = 0;
  for (const auto& s : specs)
    if (s.kind == Spec::ones) max_ones = std::max(max_ones, s.numel());
  auto ones = torch::ones({max_ones}, torch_dtype);
  const auto* pool_p = static_cast<const std::uint16_t*>(pool.data_ptr());

  // Shard boundaries by cumulative size, in module order (as transformers' save_pretrained does).
  std::vector<std::vector<lli::st::TensorData>> shards(static_cast<std::size_t>(n_shards));
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::int64_t done = 0;
  for (const auto& s : specs) {
    const int k = std::min<int>(n_shards - 1, static_cast<int>(done * n_shards / total));
    lli::st::TensorData t;
    t.name = s.name;
    t.dtype = st_dtype;
    t.shape = s.shape;
    t.nbytes = static_cast<std::size_t>(s.numel()) * 2;
    if (s.kind == Spec::ones) {
      t.data = ones.data_ptr();
    } else {
      const auto room = static_cast<std::uint64_t>(pool_n - s.numel() + 1);
      const auto off = (std::hash<std::string>{}(s.name) ^ (seed * 0x9E3779B97F4A7C15ull)) % room;
      t.data = pool_p + off;
    }
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
    weight_map[s.name] = fname;
    shards[static_cast<std::size_t>(k)].push_back(std::move(t));
    done += s.numel() * 2;
  }
  for (int k = 0; k < n_shards; ++k) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
    std::fprintf(stderr, "writing %s (%zu tensors)...\n", fname, shards[static_cast<std::size_t>(k)].size());
    lli::st::write_file(out / fname, shards[static_cast<std::size_t>(k)], {{"format", "pt"}});
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  lli::write_file_atomic((out / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  lli::write_file_atomic((out / "config.json").string(), llava_config(ts, text_layers, vision_layers, f16 ? "float16" : "bfloat16").dump(2) + "\n");
  std::fprintf(stderr, "wrote %s: %zu tensors, %.2f GB %s, %d shard(s)\n", out.string().c_str(), specs.size(),
               total / 1e9, f16 ? "fp16" : "bf16", n_shards);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a random-weight LLaVA-1.5-7B (llava-hf layout, bf16) checkpoint for benchmarks"};
  std::string out;
  std::int64_t text_layers = 0, vision_layers = 24;
  int shards = 3;
  std::uint64_t seed = 0;
  std::string preset = "7b", dtype = "bf16";
  app.add_option("out_dir", out, "output directory (about 14 GB with the full layer counts)")->required();
  app.add_option("--preset", preset, "text tower shape: 7b (LLaMA-7B) or mid (TinyLlama-1.1B)")
      ->check(CLI::IsMember({"7b", "mid"}));
  app.add_option("--dtype", dtype, "stored dtype")->check(CLI::IsMember({"bf16", "f16"}));
  app.add_option("--text-layers", text_layers, "LLaMA decoder layers (default: the preset's, 7B: 32, mid: 22)");
  app.add_option("--vision-layers", vision_layers, "CLIP encoder layers (ViT-L/14: 24)");
  app.add_option("--shards", shards, "number of safetensors shards (llava-hf: 3)");
  app.add_option("--seed", seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  try {
    run(out, preset, dtype == "f16", text_layers, vision_layers, shards, seed);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "make_random_llava: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_random_llava: %s\n", e.what());
    return 5;
  }
  return 0;
}
