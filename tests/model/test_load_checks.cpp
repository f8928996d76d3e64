// Checks at the right stage (issue 11): a checkpoint tensor whose dtype cannot be what the module
// holds (I32 where weights are F32/F16/BF16) is refused by the binder at load (exit 4, file +
// tensor + got/expected), not at the first matmul; names are echoed escaped.
#include <torch/torch.h>

#include <fstream>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "model_test_util.h"
#include "models/sam.h"
#include "nn/layers.h"

namespace {

using lli::test::error_of;
using lli::test::has;
using lli::test::TempDir;
namespace fs = std::filesystem;

struct TwoImpl : torch::nn::Module {
  TwoImpl() {
    fc = register_module("fc", lli::nn::Linear(3, 4));
    bn = register_module("bn", lli::nn::BatchNorm2d(4));
  }
  lli::nn::Linear fc{nullptr};
  lli::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(Two);

lli::TensorMap two_weights() {
  return {{"fc.weight", torch::ones({4, 3})},        {"fc.bias", torch::zeros({4})},
          {"bn.weight", torch::ones({4})},           {"bn.bias", torch::zeros({4})},
          {"bn.running_mean", torch::zeros({4})},    {"bn.running_var", torch::ones({4})},
          {"bn.num_batches_tracked", torch::tensor(7, torch::kInt64)}};
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST_CASE("binder: a tensor of the wrong dtype kind is refused at load with got and expected") {
  lli::BindOptions o;
  o.source = "ckpt/model.safetensors";
  {
    Two m;
    CHECK_NOTHROW(lli::bind_weights(*m, two_weights(), o));
  }
  {  // fp16 / bf16 weights and an int32 counter are fine (converted / integer kept)
    Two m;
    auto w = two_weights();
    w["fc.weight"] = w["fc.weight"].to(torch::kBFloat16);
    w["fc.bias"] = w["fc.bias"].to(torch::kHalf);
    w["bn.num_batches_tracked"] = w["bn.num_batches_tracked"].to(torch::kInt32);
    CHECK_NOTHROW(lli::bind_weights(*m, w, o));
  }
  Two m;
  const void* before = m->fc->weight.data_ptr();
  auto w = two_weights();
  w["fc.weight"] = torch::ones({4, 3}, torch::kInt32);
  w["bn.num_batches_tracked"] = torch::tensor(1.5);
  const std::string msg = error_of<lli::ModelError>([&] { lli::bind_weights(*m, w, o); });
  MESSAGE(msg);
  CHECK(msg ==
        "ckpt/model.safetensors: checkpoint does not match the model: 2 tensors of the wrong dtype: "
        "fc.weight: I32, expected a floating-point dtype (F32, F16, BF16 or F64), "
        "bn.num_batches_tracked: F32, expected an integer dtype (I64, I32, I16, I8 or U8)");
  CHECK(m->fc->weight.data_ptr() == before);  // nothing was bound
}

TEST_CASE("binder: checkpoint names are echoed escaped, one line") {
  Two m;
  auto w = two_weights();
  w["fc.weight\nINJECTED"] = torch::ones({1});
  const std::string msg = error_of<lli::ModelError>([&] { lli::bind_weights(*m, w); });
  CHECK(has(msg, "1 unexpected key: fc.weight\\nINJECTED"));
  CHECK(msg.find('\n') == std::string::npos);
}

TEST_CASE("sam-tiny-a with one F32 tensor relabelled I32 (same bytes) fails to load: exit 4 naming file and tensor") {
  const fs::path src = lli::test::fixtures_dir() / "sam-tiny-a";
  TempDir t;
  for (const char* f : {"config.json", "preprocessor_config.json"}) fs::copy_file(src / f, t / f);
  std::string bytes = read_bytes(src / "model.safetensors");
  // Relabel the first F32 tensor of the header: "dtype":"F32" -> "I32" (4 bytes each, same size).
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  std::string header = bytes.substr(8, n);
  const auto at = header.find("\"F32\"");
  REQUIRE(at != std::string::npos);
  const auto name_end = header.rfind("\":{", at);
  const auto name_start = header.rfind('"', name_end - 1);
  REQUIRE(name_end != std::string::npos);
  const std::string tensor = header.substr(name_start + 1, name_end - name_start - 1);
  bytes.replace(8 + at + 1, 3, "I32");
  {
    std::ofstream f(t / "model.safetensors", std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  CHECK_NOTHROW(lli::st::File::open(t / "model.safetensors"));  // a valid file: the check is the binder's
  const std::string msg = error_of<lli::ModelError>([&] { lli::models::load_sam(t.path); });
  MESSAGE("relabelled " << tensor << ": " << msg);
  CHECK(has(msg, "model.safetensors"));
  CHECK(has(msg, tensor + ": I32, expected a floating-point dtype (F32, F16, BF16 or F64)"));
  CHECK(has(msg, "1 tensor of the wrong dtype"));
}
