// The safetensors <-> libtorch bridge (zero-copy views, dtype mapping), the strict weight binder,
// and --device / --dtype / --threads resolution.
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "lli/device.h"
#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "nn/layers.h"
#include "test_util.h"

namespace {

using lli::test::TempDir;
namespace fs = std::filesystem;
namespace st = lli::st;

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

template <class F>
std::string model_error(F&& f) {
  try {
    f();
  } catch (const lli::ModelError& e) {
    CHECK(e.code() == lli::ExitCode::model);
    return e.what();
  }
  return "<no error>";
}

// A small module tree with parameters and buffers at several depths:
//   fc.{weight,bias}, blocks.0.{weight,bias}, blocks.1 (placeholder), blocks.2.{weight,bias},
//   bn.{weight,bias,running_mean,running_var,num_batches_tracked}, mask (bool buffer)
struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc = register_module("fc", lli::nn::Linear(3, 4));
    blocks = register_module("blocks", torch::nn::ModuleList());
    blocks->push_back(lli::nn::LayerNorm(4, 1e-5));
    blocks->push_back(lli::nn::Identity());  // blocks.1 has no weights
    blocks->push_back(lli::nn::Linear(4, 2));
    bn = register_module("bn", lli::nn::BatchNorm2d(2));
    mask = register_buffer("mask", lli::nn::placeholder({2}, torch::kBool));
  }
  lli::nn::Linear fc{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  lli::nn::BatchNorm2d bn{nullptr};
  torch::Tensor mask;
};
TORCH_MODULE(Tiny);

// Checkpoint tensors matching Tiny exactly (fp32 weights, int64 counter, bool mask).
lli::TensorMap tiny_weights(const std::string& prefix = "") {
  lli::TensorMap m;
  auto f = [](std::vector<std::int64_t> shape, float base) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return torch::arange(n, torch::kFloat32).reshape(shape) + base;
  };
  m[prefix + "fc.weight"] = f({4, 3}, 1);
  m[prefix + "fc.bias"] = f({4}, 100);
  m[prefix + "blocks.0.weight"] = f({4}, 200);
  m[prefix + "blocks.0.bias"] = f({4}, 300);
  m[prefix + "blocks.2.weight"] = f({2, 4}, 400);
  m[prefix + "blocks.2.bias"] = f({2}, 500);
  m[prefix + "bn.weight"] = f({2}, 600);
  m[prefix + "bn.bias"] = f({2}, 700);
  m[prefix + "bn.running_mean"] = f({2}, 800);
  m[prefix + "bn.running_var"] = f({2}, 900);
  m[prefix + "bn.num_batches_tracked"] = torch::tensor(7, torch::kInt64);
  m[prefix + "mask"] = torch::tensor({true, false});
  return m;
}

}  // namespace

// ---- to_torch / load / save -------------------------------------------------------------------------
TEST_CASE("tensor_io to_torch views the mapped data in place and keeps the mapping alive") {
  TempDir dir;
  fs::path p = dir / "w.safetensors";
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  st::write_file(p, {{"w", st::DType::F32, {2, 3}, v.data(), 24}});
  torch::Tensor t;
  const void* mapped = nullptr;
  {
    st::File f = st::File::open(p);
    const auto& ref = f.tensors().at(0);
    mapped = ref.data;
    t = lli::to_torch(ref);
    CHECK(t.data_ptr() == ref.data);  // no copy
  }
  // File and TensorRef are gone: the tensor's deleter still owns the mapping.
  CHECK(t.device().is_cpu());
  CHECK((t.scalar_type() == torch::kFloat32));
  CHECK((t.sizes() == torch::IntArrayRef({2, 3})));
  CHECK(t.data_ptr() == mapped);
  CHECK(torch::equal(t, torch::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}).reshape({2, 3})));
}

TEST_CASE("tensor_io maps every safetensors dtype to its torch dtype") {
  TempDir dir;
  fs::path p = dir / "all.safetensors";
  lli::TensorMap in;
  in["f64"] = torch::tensor({1.5, -2.25}, torch::kFloat64);
  in["f32"] = torch::tensor({1.5f, -2.25f});
  in["f16"] = torch::tensor({1.5f, -2.25f}).to(torch::kFloat16);
  in["bf16"] = torch::tensor({1.5f, -2.25f}).to(torch::kBFloat16);
  in["i64"] = torch::tensor({int64_t(1) << 40, int64_t(-3)}, torch::kInt64);
  in["i32"] = torch::tensor({70000, -3}, torch::kInt32);
  in["i16"] = torch::tensor({300, -3}, torch::kInt16);
  in["i8"] = torch::tensor({100, -3}, torch::kInt8);
  in["u8"] = torch::tensor({200, 3}, torch::kUInt8);
  in["bool"] = torch::tensor({true, false, true});
  in["scalar"] = torch::tensor(2.5f);
  in["empty"] = torch::zeros({0, 4});
  in["strided"] = torch::arange(6, torch::kFloat32).reshape({2, 3}).t();  // non-contiguous
  lli::save_tensors(p, in, {{"format", "pt"}});

  st::File f = st::File::open(p);
  CHECK(f.metadata().at("format") == "pt");
  const std::map<std::string, st::DType> expect = {
      {"f64", st::DType::F64}, {"f32", st::DType::F32}, {"f16", st::DType::F16}, {"bf16", st::DType::BF16},
      {"i64", st::DType::I64}, {"i32", st::DType::I32}, {"i16", st::DType::I16}, {"i8", st::DType::I8},
      {"u8", st::DType::U8},   {"bool", st::DType::BOOL}};
  for (const auto& ref : f.tensors())
    if (expect.count(ref.name)) CHECK_MESSAGE(ref.dtype == expect.at(ref.name), ref.name);

  auto out = lli::load_tensors(st::Checkpoint::open(p));
  REQUIRE(out.size() == in.size());
  for (const auto& [name, t] : in) {
    CAPTURE(name);
    CHECK((out.at(name).scalar_type() == t.scalar_type()));
    CHECK((out.at(name).sizes() == t.sizes()));
    CHECK(torch::equal(out.at(name), t));
  }
  CHECK((out.at("bool").scalar_type() == torch::kBool));
  CHECK(out.at("scalar").dim() == 0);
  CHECK(out.at("scalar").item<float>() == 2.5f);

  CHECK_THROWS_AS(lli::save_tensors(dir / "c.safetensors", {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
                  lli::RuntimeError);
}

TEST_CASE("tensor_io load_tensors selects and strips a prefix") {
  TempDir dir;
  lli::save_tensors(dir / "m.safetensors",
                    {{"vision.a", torch::ones({2})}, {"vision.b", torch::zeros({1})}, {"text.a", torch::ones({3})}});
  auto m = lli::load_tensors(st::Checkpoint::open(dir / "m.safetensors"), "vision.");
  REQUIRE(m.size() == 2);
  CHECK(m.count("a"));
  CHECK(m.count("b"));
  CHECK(m.at("a").numel() == 2);
}

TEST_CASE("tensor_io to_torch copies misaligned data and rejects invalid BOOL bytes") {
  alignas(8) unsigned char buf[32] = {};
  float vals[3] = {1.f, -2.f, 3.5f};
  std::memcpy(buf + 1, vals, sizeof vals);  // misaligned for float
  st::TensorRef ref;
  ref.name = "w";
  ref.dtype = st::DType::F32;
  ref.shape = {3};
  ref.data = buf + 1;
  ref.nbytes = 12;
  torch::Tensor t = lli::to_torch(ref);
  CHECK(t.data_ptr() != static_cast<const void*>(buf + 1));
  CHECK(torch::equal(t, torch::tensor({1.f, -2.f, 3.5f})));

  std::memcpy(buf, vals, sizeof vals);  // aligned: a view
  ref.data = buf;
  CHECK(lli::to_torch(ref).data_ptr() == static_cast<void*>(buf));

  unsigned char bools[3] = {0, 1, 2};
  st::TensorRef b;
  b.name = "m";
  b.file = "x.safetensors";
  b.dtype = st::DType::BOOL;
  b.shape = {3};
  b.data = bools;
  b.nbytes = 3;
  CHECK(has(model_error([&] { lli::to_torch(b); }), "x.safetensors: tensor 'm': BOOL byte 2 at index 2 is not 0 or 1"));
  bools[2] = 1;
  CHECK(torch::equal(lli::to_torch(b), torch::tensor({false, true, true})));
}

TEST_CASE("tensor_io opens the llava-tiny-a fixture as fp16 views") {
  auto ckpt = st::Checkpoint::open(lli::test::fixtures_dir() / "llava-tiny-a");  // the repo's copy
  auto m = lli::load_tensors(ckpt);
  REQUIRE(m.size() == ckpt.all().size());
  int views = 0;
  for (const auto& [name, t] : m) {
    CHECK((t.scalar_type() == torch::kFloat16));
    views += t.data_ptr() == ckpt.get(name).data;
    CHECK(torch::isfinite(t).all().item<bool>());
  }
  CHECK(views == static_cast<int>(m.size()));  // every fp16 tensor is 2-aligned: all zero-copy
}

// ---- binder -------------------------------------------------------------------------------------------
TEST_CASE("binder binds every parameter and buffer by its dotted name without copying") {
  Tiny tiny;
  auto w = tiny_weights();
  lli::bind_weights(*tiny, w, {});
  CHECK(torch::equal(tiny->fc->weight, w.at("fc.weight")));
  CHECK(tiny->fc->weight.data_ptr() == w.at("fc.weight").data_ptr());  // set_data: same storage
  CHECK(torch::equal(tiny->bn->running_var, w.at("bn.running_var")));
  CHECK(tiny->bn->num_batches_tracked.item<int64_t>() == 7);
  CHECK(torch::equal(tiny->mask, w.at("mask")));
  // The module's own registry sees the same tensors as the members.
  auto params = tiny->named_parameters();
  CHECK(torch::equal(params["blocks.2.weight"], w.at("blocks.2.weight")));
  // And it computes with them.
  auto y = tiny->fc->forward(torch::ones({1, 3}));
  CHECK((y.sizes() == torch::IntArrayRef({1, 4})));
  CHECK(y[0][0].item<float>() == doctest::Approx(1 + 2 + 3 + 100));
}

TEST_CASE("binder reports missing, unexpected and shape-mismatched keys together in one message") {
  Tiny tiny;
  void* before = tiny->fc->bias.data_ptr();
  auto w = tiny_weights();
  w.erase("fc.bias");
  w.erase("bn.running_mean");
  w["extra.weight"] = torch::zeros({1});
  w["blocks.2.weight"] = torch::zeros({4, 2});
  lli::BindOptions o;
  o.source = "ckpt/model.safetensors";
  std::string msg = model_error([&] { lli::bind_weights(*tiny, w, o); });
  CHECK(msg.rfind("ckpt/model.safetensors: checkpoint does not match the model: ", 0) == 0);
  CHECK(has(msg, "2 missing keys: fc.bias, bn.running_mean"));
  CHECK(has(msg, "1 unexpected key: extra.weight"));
  CHECK(has(msg, "1 shape mismatch: blocks.2.weight: checkpoint [4,2] vs model [2,4]"));
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(tiny->fc->bias.data_ptr() == before);  // nothing bound on failure
  CHECK(tiny->fc->weight.data_ptr() != w.at("fc.weight").data_ptr());

  o.ignore_unexpected = true;
  msg = model_error([&] { lli::bind_weights(*tiny, w, o); });
  CHECK(!has(msg, "unexpected"));
  CHECK(has(msg, "missing keys"));
}

TEST_CASE("binder caps long key lists with a count") {
  struct ManyImpl : torch::nn::Module {
    ManyImpl() {
      for (int i = 0; i < 30; ++i) register_parameter("p" + std::to_string(i), lli::nn::placeholder({1}), false);
    }
  };
  ManyImpl many;
  lli::TensorMap w;
  for (int i = 0; i < 25; ++i) w["q" + std::to_string(i)] = torch::zeros({1});
  std::string msg = model_error([&] { lli::bind_weights(many, w, {}); });
  CHECK(msg.rfind("<tensors>: ", 0) == 0);
  CHECK(has(msg, "30 missing keys: "));
  CHECK(has(msg, "... and 10 more"));
  CHECK(has(msg, "25 unexpected keys: "));
  CHECK(has(msg, "... and 5 more"));
  CHECK(msg.size() < 1000);
}

TEST_CASE("binder applies the prefix and renames to checkpoint keys") {
  Tiny tiny;
  lli::TensorMap w;
  for (auto& [k, v] : tiny_weights()) {
    std::string key = k;
    if (key.rfind("blocks.", 0) == 0) key = "layers." + key.substr(7);  // checkpoint calls them layers
    if (key.rfind("fc.", 0) == 0) key = "proj." + key.substr(3);
    w["model." + key] = v;
  }
  w["other_model.x"] = torch::zeros({5});  // outside the prefix: neither bound nor unexpected
  lli::BindOptions o;
  o.prefix = "model.";
  o.renames = {{"layers.", "blocks."}, {"proj.", "fc."}, {"blocks.", "never."}};  // first match wins
  lli::bind_weights(*tiny, w, o);
  CHECK(torch::equal(tiny->fc->bias, w.at("model.proj.bias")));
  CHECK(torch::equal(tiny->named_parameters()["blocks.0.weight"], w.at("model.layers.0.weight")));

  // Two checkpoint keys renamed onto one name is an error.
  w["model.fc.bias"] = torch::zeros({4});
  std::string msg = model_error([&] { lli::bind_weights(*tiny, w, o); });
  CHECK(has(msg, "1 rename conflict: "));
  CHECK(has(msg, "both map to fc.bias"));
  CHECK(has(msg, "(checkpoint prefix 'model.')"));
}

TEST_CASE("binder converts floating tensors only, when asked") {
  Tiny tiny;
  auto w = tiny_weights();
  for (auto& [k, v] : w)
    if (v.is_floating_point()) v = v.to(torch::kFloat16);  // an fp16 checkpoint
  lli::BindOptions keep;
  lli::bind_weights(*tiny, w, keep);
  CHECK((tiny->fc->weight.scalar_type() == torch::kFloat16));  // no dtype asked: kept as stored

  Tiny tiny2;
  lli::BindOptions o;
  o.dtype = torch::kBFloat16;
  o.device = torch::Device(torch::kCPU);
  lli::bind_weights(*tiny2, w, o);
  CHECK((tiny2->fc->weight.scalar_type() == torch::kBFloat16));
  CHECK((tiny2->bn->running_var.scalar_type() == torch::kBFloat16));
  CHECK((tiny2->bn->num_batches_tracked.scalar_type() == torch::kInt64));  // integers never converted
  CHECK((tiny2->mask.scalar_type() == torch::kBool));
  CHECK(torch::equal(tiny2->fc->weight.to(torch::kFloat32), w.at("fc.weight").to(torch::kFloat32)));
  CHECK(tiny2->fc->weight.device().is_cpu());
}

TEST_CASE("binder allows optional keys to be missing") {
  Tiny tiny;
  auto w = tiny_weights();
  w.erase("bn.num_batches_tracked");
  CHECK(has(model_error([&] { lli::bind_weights(*tiny, w, {}); }), "1 missing key: bn.num_batches_tracked"));
  lli::BindOptions o;
  o.optional_keys = {"bn.num_batches_tracked"};
  lli::bind_weights(*tiny, w, o);
  CHECK(torch::equal(tiny->bn->weight, w.at("bn.weight")));
}

TEST_CASE("binder binds a module straight from a mapped checkpoint (zero-copy)") {
  TempDir dir;
  lli::save_tensors(dir / "model.safetensors", tiny_weights("model."));
  auto ckpt = st::Checkpoint::open(dir.path);
  lli::BindOptions o;
  o.prefix = "model.";
  o.source = ckpt.source();
  Tiny tiny;
  lli::bind_weights(*tiny, lli::load_tensors(ckpt), o);
  CHECK(tiny->fc->weight.data_ptr() == ckpt.get("model.fc.weight").data);
  CHECK(torch::equal(tiny->blocks->ptr<lli::nn::LinearImpl>(2)->bias, tiny_weights().at("blocks.2.bias")));

  // A wrong checkpoint names its file.
  Tiny other;
  o.prefix = "";
  std::string msg = model_error([&] { lli::bind_weights(*other, lli::load_tensors(ckpt), o); });
  CHECK(msg.rfind(ckpt.source() + ": checkpoint does not match the model", 0) == 0);
  CHECK(has(msg, "12 missing keys"));
  CHECK(has(msg, "12 unexpected keys"));
}

// ---- device / dtype / threads -------------------------------------------------------------------------
TEST_CASE("device parse_device accepts cpu, cuda, cuda:N and rejects the rest") {
  CHECK(!lli::parse_device("cpu").cuda);
  CHECK(lli::parse_device("cuda").cuda);
  CHECK(lli::parse_device("cuda").index == 0);
  CHECK(lli::parse_device("cuda:3").index == 3);
  CHECK(lli::parse_device("cuda:3").str() == "cuda:3");
  CHECK(lli::parse_device("cpu").str() == "cpu");
  for (const char* bad : {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda:1a", "cuda:99999", "cpu:0"}) {
    CAPTURE(bad);
    try {
      lli::parse_device(bad);
      FAIL("accepted");
    } catch (const lli::UsageError& e) {
      CHECK(e.code() == lli::ExitCode::usage);
      CHECK(has(e.what(), "expected cpu, cuda or cuda:N"));
    }
  }
}

TEST_CASE("device parse_dtype and dtype names") {
  CHECK(lli::parse_dtype("auto") == lli::DTypeChoice::automatic);
  CHECK(lli::parse_dtype("f32") == lli::DTypeChoice::f32);
  CHECK(lli::parse_dtype("bf16") == lli::DTypeChoice::bf16);
  CHECK(lli::parse_dtype("f16") == lli::DTypeChoice::f16);
  CHECK_THROWS_AS(lli::parse_dtype("fp8"), lli::UsageError);
  CHECK_THROWS_WITH(lli::parse_dtype("float"), "--dtype 'float': expected auto, f32, bf16 or f16");
  for (auto d : {lli::DTypeChoice::automatic, lli::DTypeChoice::f32, lli::DTypeChoice::bf16, lli::DTypeChoice::f16})
    CHECK(lli::parse_dtype(lli::dtype_choice_name(d)) == d);
}

TEST_CASE("device resolve_dtype picks bf16/f16/f32 and refuses f16 on cpu") {
  const lli::DeviceChoice cpu, cuda = lli::parse_device("cuda");
  using D = lli::DTypeChoice;
  CHECK(lli::resolve_dtype(D::automatic, cpu, /*cpu_bf16=*/true) == D::bf16);
  CHECK(lli::resolve_dtype(D::automatic, cpu, /*cpu_bf16=*/false) == D::f32);
  CHECK(lli::resolve_dtype(D::automatic, cuda, /*cpu_bf16=*/true) == D::f16);
  CHECK(lli::resolve_dtype(D::f32, cpu, true) == D::f32);
  CHECK(lli::resolve_dtype(D::bf16, cpu, false) == D::bf16);
  CHECK(lli::resolve_dtype(D::f16, cuda, false) == D::f16);
  std::string msg = model_error([&] { lli::resolve_dtype(D::f16, cpu, true); });
  CHECK(has(msg, "fp16 matmul is not available on CPU"));
  CHECK(has(msg, "--dtype bf16"));
  CHECK(has(msg, "--dtype f32"));
  // The machine's own answer agrees with its capability.
  CHECK(lli::resolve_dtype(D::automatic, cpu) == (lli::cpu_has_avx512_bf16() ? D::bf16 : D::f32));
}

TEST_CASE("device cpu_has_avx512_bf16 agrees with /proc/cpuinfo") {
  std::ifstream f("/proc/cpuinfo");
  if (!f) LLI_SKIP("no /proc/cpuinfo");
  std::string line;
  bool flag = false, seen = false;
  while (!seen && std::getline(f, line))
    if (line.rfind("flags", 0) == 0) {
      seen = true;
      flag = (line + " ").find(" avx512_bf16 ") != std::string::npos;
    }
  if (!seen) LLI_SKIP("no flags line in /proc/cpuinfo");
  CHECK(lli::cpu_has_avx512_bf16() == flag);
  MESSAGE("avx512_bf16: " << std::string(flag ? "yes" : "no"));
}

TEST_CASE("device check_device_available explains a missing CUDA") {
  CHECK_NOTHROW(lli::check_device_available(lli::DeviceChoice{}));
  if (torch::cuda::is_available()) {
    CHECK_NOTHROW(lli::check_device_available(lli::parse_device("cuda:0")));
    CHECK(has(model_error([] { lli::check_device_available(lli::parse_device("cuda:999")); }), "CUDA device"));
  } else {
    std::string msg = model_error([] { lli::check_device_available(lli::parse_device("cuda")); });
    CHECK(msg.rfind("--device cuda:0: ", 0) == 0);
    CHECK((has(msg, "this libtorch was built without CUDA; rebuild lli against a CUDA libtorch via "
                    "CMAKE_PREFIX_PATH") ||
           has(msg, "no CUDA device is available")));
  }
}

TEST_CASE("device configure_threads sets libtorch's intra-op threads") {
  const int before = at::get_num_threads();
  CHECK(lli::configure_threads(1) == 1);
  CHECK(at::get_num_threads() == 1);
  const int all = lli::configure_threads(0);
  CHECK(all == static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CHECK(at::get_num_threads() == all);
  CHECK(lli::configure_threads(-3) == all);
  lli::configure_threads(before);
}
