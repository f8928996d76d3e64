// Writes a random-weight GLIGEN (Stable Diffusion 1.4 + GLIGEN text-box grounding) UNet and VAE for
// benchmarks, in the diffusers layout: OUT/unet/{config.json, diffusion_pytorch_model.safetensors}
// and OUT/vae/{config.json, diffusion_pytorch_model.safetensors}, with the config values of
// masterful/gligen-1-4-generation-text-box (block_out_channels [320, 640, 1280, 1280],
// layers_per_block 2, attention_head_dim 8 (= heads), cross_attention_dim 768, attention_type
// "gated": a fuser in every transformer block and the position net with positive_len = out_dim =
// 768; VAE [128, 256, 512, 512], 2 resnets per level, sample_size 512).
// The tensor names and shapes are those of lli's module trees built from these configs (which the
// golden-fixture tests check against diffusers' own state_dicts). Values: normal * 0.02 (norm
// weights 1, the fuser gates 0.3), drawn once into a pool that each tensor views at its own offset.
//
//   make_random_gligen OUT_DIR [--dtype f32|f16|bf16] [--seed S] [--inpainting] [--pipeline-from DIR]
//
// --inpainting: the UNet of masterful/gligen-1-4-inpainting-text-box (in_channels 9: noisy latent,
// masked-image latent, mask). --pipeline-from DIR: a whole pipeline for the tools (lli-generate,
// lli-edit replace/inpaint): model_index.json, scheduler/ and tokenizer/ copied from DIR (a golden
// fixture such as gligen-inpaint-tiny-a), and text_encoder/ with CLIP ViT-L/14's text sizes (768
// wide, 12 layers, 12 heads) over that tokenizer's vocabulary.
//
// Ref: masterful/gligen-1-4-generation-text-box unet/config.json, CompVis/stable-diffusion-v1-4
// vae/config.json (diffusers layout).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/safetensors.h"
#include "models/clip_text.h"
#include "models/config_json.h"
#include "models/unet.h"
#include "models/vae.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;

nlohmann::ordered_json unet_config() {
  return {{"_class_name", "UNet2DConditionModel"},
          {"_diffusers_version", "0.15.0.dev0"},
          {"act_fn", "silu"},
          {"attention_head_dim", 8},
          {"attention_type", "gated"},
          {"block_out_channels", {320, 640, 1280, 1280}},
          {"center_input_sample", false},
          {"class_embed_type", nullptr},
          {"conv_in_kernel", 3},
          {"conv_out_kernel", 3},
          {"cross_attention_dim", 768},
          {"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
          {"downsample_padding", 1},
          {"dual_cross_attention", false},
          {"flip_sin_to_cos", true},
          {"freq_shift", 0},
          {"in_channels", 4},
          {"layers_per_block", 2},
          {"mid_block_scale_factor", 1},
          {"mid_block_type", "UNetMidBlock2DCrossAttn"},
          {"norm_eps", 1e-05},
          {"norm_num_groups", 32},
          {"num_class_embeds", nullptr},
          {"only_cross_attention", false},
          {"out_channels", 4},
          {"projection_class_embeddings_input_dim", nullptr},
          {"resnet_time_scale_shift", "default"},
          {"sample_size", 64},
          {"time_cond_proj_dim", nullptr},
          {"time_embedding_type", "positional"},
          {"timestep_post_act", nullptr},
          {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
          {"upcast_attention", false},
          {"use_linear_projection", false},
          {"_lli_note", "random weights (bench/make_random_gligen), not a usable model"}};
}

nlohmann::ordered_json vae_config() {
  return {{"_class_name", "AutoencoderKL"},
          {"_diffusers_version", "0.15.0.dev0"},
          {"act_fn", "silu"},
          {"block_out_channels", {128, 256, 512, 512}},
          {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}},
          {"in_channels", 3},
          {"latent_channels", 4},
          {"layers_per_block", 2},
          {"norm_num_groups", 32},
          {"out_channels", 3},
          {"sample_size", 512},
          {"scaling_factor", 0.18215},
          {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}},
          {"_lli_note", "random weights (bench/make_random_gligen), not a usable model"}};
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Writes every parameter of `module` (names and shapes = the checkpoint's) with pool values.
void write_weights(const torch::nn::Module& module, const fs::path& file, torch::Dtype dtype, std::uint64_t seed) {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::int64_t largest = 0, total = 0;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    params.emplace_back(p.key(), p.value());
    largest = std::max(largest, p.value().numel());
    total += p.value().numel();
  }
  const std::int64_t pool_n = largest + (1 << 20);
  auto gen = at::detail::createCPUGenerator(seed);
  auto pool = (torch::randn({pool_n}, gen) * 0.02).to(dtype).contiguous();
  auto ones = torch::ones({largest}, torch::TensorOptions().dtype(dtype));
  auto gates = torch::full({1}, 0.3, torch::TensorOptions().dtype(dtype));
  const auto esize = static_cast<std::int64_t>(pool.element_size());
  const auto st_dtype = dtype == torch::kFloat32 ? lli::st::DType::F32
                        : dtype == torch::kHalf  ? lli::st::DType::F16
                                                 : lli::st::DType::BF16;
  std::vector<lli::st::TensorData> out;
  for (const auto& [name, t] : params) {
    lli::st::TensorData d;
    d.name = name;
    d.dtype = st_dtype;
    d.shape = t.sizes().vec();
    d.nbytes = static_cast<std::size_t>(t.numel() * esize);
    const bool norm_weight = ends_with(name, ".weight") && t.dim() == 1 &&
                             (name.find("norm") != std::string::npos);
    if (norm_weight) {
      d.data = ones.data_ptr();
    } else if (ends_with(name, "alpha_attn") || ends_with(name, "alpha_dense")) {
      d.data = gates.data_ptr();
    } else {
      const auto room = static_cast<std::uint64_t>(pool_n - t.numel() + 1);
      const auto off = (std::hash<std::string>{}(name) ^ (seed * 0x9E3779B97F4A7C15ull)) % room;
      d.data = static_cast<const char*>(pool.data_ptr()) + off * static_cast<std::uint64_t>(esize);
    }
    out.push_back(std::move(d));
  }
  std::fprintf(stderr, "writing %s (%zu tensors, %.2f GB)...\n", file.string().c_str(), out.size(),
               static_cast<double>(total * esize) / 1e9);
  lli::st::write_file(file, out, {{"format", "pt"}});
}

nlohmann::ordered_json text_encoder_config(std::int64_t vocab_size) {
  return {{"architectures", {"CLIPTextModel"}},
          {"attention_dropout", 0.0},
          {"bos_token_id", 0},
          {"eos_token_id", 2},
          {"hidden_act", "quick_gelu"},
          {"hidden_size", 768},
          {"initializer_factor", 1.0},
          {"initializer_range", 0.02},
          {"intermediate_size", 3072},
          {"layer_norm_eps", 1e-05},
          {"max_position_embeddings", 77},
          {"model_type", "clip_text_model"},
          {"num_attention_heads", 12},
          {"num_hidden_layers", 12},
          {"pad_token_id", 1},
          {"projection_dim", 768},
          {"torch_dtype", "float32"},
          {"vocab_size", vocab_size},
          {"_lli_note", "random weights (bench/make_random_gligen), not a usable model"}};
}

// model_index.json, scheduler/ and tokenizer/ from `from`; text_encoder/ at CLIP-L sizes.
void write_pipeline_parts(const fs::path& from, const fs::path& out, torch::Dtype dtype, std::uint64_t seed) {
  for (const char* sub : {"scheduler", "tokenizer"}) {
    fs::create_directories(out / sub);
    fs::copy(from / sub, out / sub, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  }
  fs::copy_file(from / "model_index.json", out / "model_index.json", fs::copy_options::overwrite_existing);
  const auto te_from = nlohmann::json::parse(lli::read_file((from / "text_encoder" / "config.json").string()));
  const auto tc = text_encoder_config(te_from.at("vocab_size").get<std::int64_t>());
  fs::create_directories(out / "text_encoder");
  lli::write_file_atomic((out / "text_encoder" / "config.json").string(), tc.dump(2) + "\n");
  const auto tj = nlohmann::json::parse(tc.dump());
  m::CLIPTextModel te(m::parse_clip_text_config(m::ConfigReader(tj, "text_encoder/config.json")));
  write_weights(*te, out / "text_encoder" / "model.safetensors", dtype, seed + 2);
}

void run(const fs::path& out, const std::string& dtype_name, std::uint64_t seed, bool inpainting,
         const std::string& pipeline_from) {
  const torch::Dtype dtype = dtype_name == "f32"   ? torch::kFloat32
                             : dtype_name == "f16" ? torch::kHalf
                             : dtype_name == "bf16" ? torch::kBFloat16
                                                    : throw lli::UsageError("--dtype must be f32, f16 or bf16");
  const std::string file = dtype == torch::kHalf ? "diffusion_pytorch_model.fp16.safetensors"
                                                 : "diffusion_pytorch_model.safetensors";
  for (const char* sub : {"unet", "vae"}) fs::create_directories(out / sub);
  auto uc = unet_config();
  if (inpainting) uc["in_channels"] = 9;
  lli::write_file_atomic((out / "unet" / "config.json").string(), uc.dump(2) + "\n");
  auto ucfg = m::parse_unet_config(nlohmann::json::parse(uc.dump()), "unet/config.json");
  ucfg.gligen = true;
  m::UNet2DConditionModel unet(ucfg);
  write_weights(*unet, out / "unet" / file, dtype, seed);

  const auto vc = vae_config();
  lli::write_file_atomic((out / "vae" / "config.json").string(), vc.dump(2) + "\n");
  m::AutoencoderKL vae(m::parse_vae_config(nlohmann::json::parse(vc.dump()), "vae/config.json"));
  write_weights(*vae, out / "vae" / file, dtype, seed + 1);
  if (!pipeline_from.empty()) write_pipeline_parts(pipeline_from, out, dtype, seed);
  std::fprintf(stderr, "wrote %s\n", out.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a random-weight SD-1.4 + GLIGEN UNet and VAE (diffusers layout) for benchmarks"};
  std::string out, dtype = "f32";
  std::uint64_t seed = 0;
  app.add_option("out_dir", out, "output directory (unet/ and vae/; about 3.6 GB in f32)")->required();
  app.add_option("--dtype", dtype, "stored dtype: f32 (diffusion_pytorch_model.safetensors), f16 (the .fp16 variant), bf16");
  app.add_option("--seed", seed, "random seed");
  bool inpainting = false;
  std::string pipeline_from;
  app.add_flag("--inpainting", inpainting, "the inpainting UNet (in_channels 9)");
  app.add_option("--pipeline-from", pipeline_from,
                 "copy model_index.json, scheduler/, tokenizer/ from this pipeline directory and write a CLIP-L text_encoder/");
  CLI11_PARSE(app, argc, argv);
  try {
    run(out, dtype, seed, inpainting, pipeline_from);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "make_random_gligen: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_random_gligen: %s\n", e.what());
    return 5;
  }
  return 0;
}
