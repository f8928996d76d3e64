// Helpers shared by the model (libtorch) tests: golden-fixture loading, tensor comparison,
// activation recording through nn::Tap, image reading (error_of / has: test_util.h).
#pragma once

#include <doctest/doctest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "nn/tap.h"
#include "test_util.h"  // error_of, has

namespace lli::test {

// Every tensor of a golden.safetensors file, copied out of the mapping.
inline std::map<std::string, torch::Tensor> load_golden(const std::filesystem::path& file) {
  auto f = lli::st::File::open(file);
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : f.tensors()) out[t.name] = lli::to_torch(t).clone();
  return out;
}

// max |a - b| in fp64 (0 for empty tensors); the shapes must match.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  if (a.numel() == 0) return 0;
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).abs().max().item<double>();
}

// Records tapped activations: per name, by index (index >= 0) or in call order (index -1).
struct Recorder {
  std::map<std::string, std::vector<torch::Tensor>> seen;
  lli::nn::Tap tap() {
    return [this](const std::string& name, std::int64_t index, const torch::Tensor& t) {
      auto& v = seen[name];
      if (index < 0) {
        v.push_back(t.detach().clone());
      } else {
        if (static_cast<std::int64_t>(v.size()) <= index) v.resize(static_cast<std::size_t>(index + 1));
        v[static_cast<std::size_t>(index)] = t.detach().clone();
      }
    };
  }
};

inline cv::Mat read_rgb(const std::filesystem::path& p) {
  cv::Mat bgr = cv::imread(p.string(), cv::IMREAD_COLOR);
  REQUIRE(!bgr.empty());
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

}  // namespace lli::test
