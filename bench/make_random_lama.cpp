// A random-weight LaMa checkpoint with big-lama's shapes (benchmarks only): config.yaml with
// big-lama's generator section (ngf 64, 3 downsamplings, 18 FFC blocks with ratio 0.75, no LFU,
// sigmoid output; 51 M parameters) and generator.safetensors with the original key names.
//
//   make_random_lama DIR [--seed S] [--ngf 64] [--n-blocks 18] [--n-downsampling 3] [--ratio 0.75] [--lfu]
//
// Weights are scaled so that activations stay in a normal range through the 18 residual blocks
// (no inf/NaN/denormals that would distort timings).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/tensor_io.h"
#include "models/lama.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;

std::string big_lama_yaml(int ngf, int n_down, int n_blocks, double ratio, bool lfu) {
  const char* l = lfu ? "true" : "false";
  return fmt::format(R"(# random-weight checkpoint with big-lama's generator shapes (make_random_lama)
generator:
  kind: ffc_resnet
  input_nc: 4
  output_nc: 3
  ngf: {}
  n_downsampling: {}
  n_blocks: {}
  add_out_act: sigmoid
  init_conv_kwargs:
    ratio_gin: 0
    ratio_gout: 0
    enable_lfu: {}
  downsample_conv_kwargs:
    ratio_gin: ${{generator.init_conv_kwargs.ratio_gout}}
    ratio_gout: ${{generator.downsample_conv_kwargs.ratio_gin}}
    enable_lfu: {}
  resnet_conv_kwargs:
    ratio_gin: {}
    ratio_gout: ${{generator.resnet_conv_kwargs.ratio_gin}}
    enable_lfu: {}
training_model:
  kind: default
  concat_mask: true
)",
                     ngf, n_down, n_blocks, l, l, ratio, l);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"random-weight LaMa checkpoint with big-lama's shapes"};
  std::string dir;
  std::uint64_t seed = 0;
  int ngf = 64, n_blocks = 18, n_down = 3;
  double ratio = 0.75;
  bool lfu = false;
  app.add_option("dir", dir, "output directory")->required();
  app.add_option("--seed", seed, "random seed");
  app.add_option("--ngf", ngf, "generator width");
  app.add_option("--n-blocks", n_blocks, "FFC resnet blocks");
  app.add_option("--n-downsampling", n_down, "downsampling steps");
  app.add_option("--ratio", ratio, "global (spectral) channel ratio of the resnet blocks");
  app.add_flag("--lfu", lfu, "enable the local Fourier unit");
  CLI11_PARSE(app, argc, argv);
  try {
    fs::create_directories(dir);
    const std::string yaml = big_lama_yaml(ngf, n_down, n_blocks, ratio, lfu);
    auto cfg = m::parse_lama_config(yaml, "config.yaml");
    m::LamaGenerator model(cfg);
    auto gen = at::detail::createCPUGenerator(seed);
    lli::TensorMap tensors;
    std::int64_t n_params = 0;
    auto fill = [&](const std::string& name, const torch::Tensor& p) {
      const auto last = name.substr(name.rfind('.') + 1);
      torch::Tensor t;
      if (last == "num_batches_tracked") {
        t = torch::zeros({}, torch::kInt64);
      } else if (last == "running_mean") {
        t = torch::randn(p.sizes(), gen) * 0.05;
      } else if (last == "running_var") {
        t = torch::rand(p.sizes(), gen) * 0.5 + 0.75;
      } else if (p.dim() == 1) {  // BatchNorm weight/bias, conv bias
        t = last == "weight" ? torch::rand(p.sizes(), gen) * 0.2 + 0.4 : torch::randn(p.sizes(), gen) * 0.02;
      } else {  // conv weights: He-like scale over the fan-in, damped
        const auto fan_in = p.numel() / p.size(0);
        t = torch::randn(p.sizes(), gen) * (0.5 * std::sqrt(2.0 / static_cast<double>(fan_in)));
      }
      if (last != "num_batches_tracked") n_params += t.numel();
      tensors[name] = t.contiguous();
    };
    for (const auto& p : model->named_parameters()) fill(p.key(), p.value());
    for (const auto& b : model->named_buffers()) fill(b.key(), b.value());
    lli::save_tensors(fs::path(dir) / "generator.safetensors", tensors, {{"format", "pt"}});
    lli::write_file_atomic((fs::path(dir) / "config.yaml").string(), yaml);
    std::printf("wrote %s: %zu tensors, %.2f M values\n", dir.c_str(), tensors.size(), static_cast<double>(n_params) / 1e6);
  } catch (const lli::Error& e) {
    std::fprintf(stderr, "make_random_lama: %s\n", e.what());
    return static_cast<int>(e.code());
  }
  return 0;
}
