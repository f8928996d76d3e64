// Ref: advimman/lama saicinpainting/training/modules/ffc.py (FFCResNetGenerator, FFCResnetBlock,
//      FFC_BN_ACT, FFC, SpectralTransform, FourierUnit, ConcatTupleLayer), modules/base.py
//      (get_activation), trainers/default.py (DefaultInpaintingTrainingModule.forward),
//      bin/predict.py + training/data/datasets.py (load_image, pad_img_to_modulo).
#include "models/lama.h"
#include "nn/grad_mode.h"

#include <yaml-cpp/yaml.h>

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "io/bounded_parse.h"
#include "nn/group_norm_bf16.h"
#include "nn/fft_nhwc.h"
#include "nn/transpose_copy.h"
#include "lli/error.h"
#include "lli/log.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"

namespace lli::models {

namespace {

// ---- config.yaml -------------------------------------------------------------------------------

// Reads the YAML tree with OmegaConf's absolute references (`${generator.x.y}`) resolved.
class YamlReader {
 public:
  YamlReader(const YAML::Node& root, std::string source) : root_(root), source_(std::move(source)) {}

  // The node at a dotted path from the root (Undefined when absent), references followed.
  YAML::Node at(const std::string& dotted, int depth = 0) const {
    YAML::Node cur = root_;
    std::stringstream ss(dotted);
    std::string part;
    while (std::getline(ss, part, '.')) {
      if (!cur.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
      YAML::Node next = static_cast<const YAML::Node&>(cur)[part];
      if (!next.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
      cur.reset(resolve(next, dotted, depth));
    }
    return cur;
  }

  // A scalar "${a.b.c}" is replaced by the node it names (recursively).
  YAML::Node resolve(const YAML::Node& n, const std::string& key, int depth = 0) const {
    if (!n.IsScalar()) return n;
    const std::string& s = n.Scalar();
    if (s.size() < 3 || s.compare(0, 2, "${") != 0 || s.back() != '}') return n;
    const std::string ref = s.substr(2, s.size() - 3);
    if (ref.find(':') != std::string::npos || ref.find("${") != std::string::npos)
      fail(key, "the reference " + s + " needs an OmegaConf resolver (only ${a.b.c} paths are supported)");
    if (depth > 16) fail(key, "references nest too deeply (a cycle?) at " + s);
    YAML::Node target = at(ref, depth + 1);
    if (!target.IsDefined() || target.IsNull()) fail(key, "the reference " + s + " names nothing in the file");
    return resolve(target, key, depth + 1);
  }

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw ModelError(source_ + ": " + key + ": " + msg);
  }
  const std::string& source() const { return source_; }

 private:
  YAML::Node root_;
  std::string source_;
};

// One mapping (e.g. `generator`) with typed reads; every key must be consumed or is refused.
class YamlSection {
 public:
  YamlSection(const YamlReader& r, YAML::Node node, std::string path)
      : r_(r), node_(std::move(node)), path_(std::move(path)) {
    if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) r_.fail(path_, "expected a mapping");
  }

  bool present(const std::string& key) const {
    if (!node_.IsMap()) return false;
    YAML::Node v = static_cast<const YAML::Node&>(node_)[key];
    return v.IsDefined();
  }
  YAML::Node get(const std::string& key) {
    seen_.push_back(key);
    if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node v = static_cast<const YAML::Node&>(node_)[key];
    if (!v.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    return r_.resolve(v, where(key));
  }
  std::string where(const std::string& key) const { return path_ + "." + key; }

  std::int64_t get_int(const std::string& key, std::int64_t def, bool required = false) {
    if (required && !present(key)) r_.fail(where(key), "missing (FFCResNetGenerator needs it)");
    return get_as<std::int64_t>(key, def, "an integer");
  }
  double get_double(const std::string& key, double def) { return get_as<double>(key, def, "a number"); }
  bool get_bool(const std::string& key, bool def) { return get_as<bool>(key, def, "true or false"); }
  std::string get_string(const std::string& key, const std::string& def) {
    YAML::Node v = get(key);
    if (!v.IsDefined()) return def;
    if (!v.IsScalar()) r_.fail(where(key), "expected a string");
    return v.Scalar();
  }
  // Keys whose non-default value lli does not implement: absent, null or `ok` only.
  void refuse_unless(const std::string& key, bool ok_if_false_or_null, const std::string& what) {
    YAML::Node v = get(key);
    if (!v.IsDefined() || v.IsNull()) return;
    if (ok_if_false_or_null && v.IsScalar()) {
      bool b = true;
      if (YAML::convert<bool>::decode(v, b) && !b) return;
    }
    r_.fail(where(key), "'" + scalar_text(v) + "' is not supported by lli's LaMa (" + what + ")");
  }
  void ignore(const std::string& key) { seen_.push_back(key); }

  // Every key not read: refused (the reference would pass it on as a keyword argument).
  void refuse_unknown(const std::string& why) const {
    if (!node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string k = kv.first.as<std::string>();
      if (std::find(seen_.begin(), seen_.end(), k) == seen_.end())
        r_.fail(where(k), "unsupported option (" + why + ")");
    }
  }

 private:
  template <class T>
  T get_as(const std::string& key, T def, const char* expected) {
    YAML::Node v = get(key);
    if (!v.IsDefined()) return def;
    try {
      return v.as<T>();
    } catch (const YAML::Exception&) {
      r_.fail(where(key), std::string("expected ") + expected + ", got '" + scalar_text(v) + "'");
    }
  }
  static std::string scalar_text(const YAML::Node& v) { return v.IsScalar() ? v.Scalar() : std::string("<non-scalar>"); }
  const YamlReader& r_;
  YAML::Node node_;
  std::string path_;
  std::vector<std::string> seen_;
};

LamaFFCConfig parse_ffc_kwargs(const YamlReader& r, const std::string& path) {
  YamlSection s(r, r.at(path), path);
  LamaFFCConfig c;
  auto ratio = [&](const char* key) {
    const double v = s.get_double(key, 0.0);
    if (!(v >= 0.0 && v <= 1.0)) r.fail(s.where(key), "must be in [0, 1], got " + std::to_string(v));
    return v;
  };
  c.ratio_gin = ratio("ratio_gin");
  c.ratio_gout = ratio("ratio_gout");
  c.enable_lfu = s.get_bool("enable_lfu", true);
  const std::string norm = s.get_string("fft_norm", "ortho");
  if (norm == "ortho") c.fft_norm = LamaFftNorm::ortho;
  else if (norm == "backward") c.fft_norm = LamaFftNorm::backward;
  else if (norm == "forward") c.fft_norm = LamaFftNorm::forward;
  else r.fail(s.where("fft_norm"), "'" + norm + "' is not one of ortho, backward, forward");
  s.refuse_unless("gated", true, "gated FFC");
  s.refuse_unless("use_se", true, "squeeze-excitation in the Fourier unit");
  s.refuse_unless("ffc3d", true, "3-D Fourier convolution");
  s.refuse_unless("spectral_pos_encoding", true, "spectral positional encoding");
  s.refuse_unless("spatial_scale_factor", false, "Fourier unit rescaling");
  s.ignore("spatial_scale_mode");  // only used with spatial_scale_factor
  s.ignore("se_kwargs");           // only used with use_se
  s.refuse_unknown("an FFC keyword lli does not implement");
  return c;
}

// Channel split of one FFC layer and the branches it produces.
struct FFCSplit {
  std::int64_t in_cl, in_cg, out_cl, out_cg;
  bool has_l, has_g;  // outputs that exist (the reference's tensor(0) otherwise)
};

FFCSplit ffc_split(std::int64_t in, std::int64_t out, const LamaFFCConfig& c) {
  FFCSplit s{};
  s.in_cg = static_cast<std::int64_t>(static_cast<double>(in) * c.ratio_gin);
  s.in_cl = in - s.in_cg;
  s.out_cg = static_cast<std::int64_t>(static_cast<double>(out) * c.ratio_gout);
  s.out_cl = out - s.out_cg;
  s.has_l = c.ratio_gout != 1.0;
  s.has_g = c.ratio_gout != 0.0;
  return s;
}

// Walks the generator's layers as the reference builds them and refuses a channel split it
// cannot run (a branch fed to a layer that has no input for it, a BatchNorm of 0 channels, a
// bottleneck without both branches for ConcatTupleLayer).
void check_ffc_chain(const LamaConfig& c, const std::string& source) {
  struct Branches {
    std::int64_t cl, cg;
  } cur{c.input_nc, 0};
  auto layer = [&](std::int64_t in, std::int64_t out, const LamaFFCConfig& k, const std::string& key,
                   const std::string& what) {
    const auto s = ffc_split(in, out, k);
    if (s.in_cl != cur.cl || s.in_cg != cur.cg)
      throw ModelError(source + ": generator." + key + ".ratio_gin = " + std::to_string(k.ratio_gin) + " splits the " +
                       std::to_string(in) + " input channels of " + what + " into " + std::to_string(s.in_cl) +
                       " local + " + std::to_string(s.in_cg) + " global, but its input has " +
                       std::to_string(cur.cl) + " local + " + std::to_string(cur.cg) +
                       " global (the reference cannot run this configuration)");
    if (s.has_g && s.out_cg == 0)
      throw ModelError(source + ": generator." + key + ".ratio_gout = " + std::to_string(k.ratio_gout) +
                       " gives 0 global channels of " + std::to_string(out) + " in " + what +
                       " (the reference builds a 0-channel BatchNorm)");
    cur = {s.has_l ? s.out_cl : 0, s.has_g ? s.out_cg : 0};
  };
  layer(c.input_nc, c.ngf, c.init_conv, "init_conv_kwargs", "model.1");
  for (std::int64_t i = 0; i < c.n_downsampling; ++i) {
    LamaFFCConfig k = c.downsample_conv;
    if (i == c.n_downsampling - 1) k.ratio_gout = c.resnet_conv.ratio_gin;
    layer(c.width(std::int64_t{1} << i), c.width(std::int64_t{2} << i), k, "downsample_conv_kwargs",
          "model." + std::to_string(2 + i));
  }
  const auto dim = c.width(std::int64_t{1} << c.n_downsampling);
  for (std::int64_t b = 0; b < c.n_blocks; ++b) {
    const auto in = cur;
    const std::string what = "model." + std::to_string(2 + c.n_downsampling + b);
    layer(dim, dim, c.resnet_conv, "resnet_conv_kwargs", what + ".conv1");
    layer(dim, dim, c.resnet_conv, "resnet_conv_kwargs", what + ".conv2");
    if (cur.cl != in.cl || cur.cg != in.cg)
      throw ModelError(source + ": generator.resnet_conv_kwargs: ratio_gin " + std::to_string(c.resnet_conv.ratio_gin) +
                       " and ratio_gout " + std::to_string(c.resnet_conv.ratio_gout) + " differ: the residual of " +
                       what + " adds tensors of different widths");
  }
  if (cur.cl == 0 || cur.cg == 0)
    throw ModelError(source + ": generator: the bottleneck has " + std::to_string(cur.cl) + " local and " +
                     std::to_string(cur.cg) +
                     " global channels; the reference's ConcatTupleLayer needs both (check resnet_conv_kwargs "
                     "ratio_gin and ratio_gout, which must be strictly between 0 and 1)");
}

const char* fft_norm_name(LamaFftNorm n) {
  switch (n) {
    case LamaFftNorm::backward: return "backward";
    case LamaFftNorm::forward: return "forward";
    default: return "ortho";
  }
}

// ---- layers ------------------------------------------------------------------------------------

// BatchNorm (running statistics) as y = x * scale + shift, computed in fp64.
std::pair<torch::Tensor, torch::Tensor> bn_affine(const nn::BatchNorm2dImpl& bn) {
  auto w = bn.weight.to(torch::kCPU, torch::kFloat64), b = bn.bias.to(torch::kCPU, torch::kFloat64);
  auto mean = bn.running_mean.to(torch::kCPU, torch::kFloat64), var = bn.running_var.to(torch::kCPU, torch::kFloat64);
  auto scale = w / torch::sqrt(var + bn.eps);
  return {scale, b - mean * scale};
}

// nn.BatchNorm2d in train(): normalised with the batch's statistics, running statistics updated
// (momentum 0.1).
torch::Tensor bn_batch(const nn::BatchNorm2dImpl& bn, const torch::Tensor& x) {
  return torch::batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, /*training=*/true, /*momentum=*/0.1,
                           bn.eps, /*cudnn_enabled=*/false);
}

// conv weight [out, ...] scaled per output channel (dim 0; dim 1 for a transposed conv).
torch::Tensor scale_weight(const torch::Tensor& w, const torch::Tensor& scale, int64_t dim = 0) {
  std::vector<std::int64_t> shape(static_cast<std::size_t>(w.dim()), 1);
  shape[static_cast<std::size_t>(dim)] = -1;
  return w.to(torch::kCPU, torch::kFloat64) * scale.view(shape);
}

torch::Tensor finish(const torch::Tensor& t, torch::Dtype dtype, torch::Device device) {
  auto y = t.to(device, dtype);
  return y.dim() == 4 ? nn::prefer_channels_last(y) : y.contiguous();  // channels-last on the bf16 CPU path
}

nn::Conv2dOptions conv_opts(std::int64_t in, std::int64_t out, std::int64_t kernel, bool bias = false) {
  nn::Conv2dOptions o;
  o.in = in;
  o.out = out;
  o.kernel = kernel;
  o.bias = bias;
  return o;
}

// Channel concatenation and reflection padding in one pass, for channels-last CPU tensors (the bf16
// path): out[b, :, y, x] = cat(parts)[b, :, reflect(y - p), reflect(x - p)], channels-last. One
// write of the padded tensor where cat + pad (flip/narrow/cat per side) wrote it three times.
torch::Tensor reflect_pad_cat_nhwc(std::vector<torch::Tensor> parts, std::int64_t p) {
  const auto B = parts[0].size(0), H = parts[0].size(2), W = parts[0].size(3);
  TORCH_CHECK(p < H && p < W, "reflection padding ", p, " must be smaller than the input size ", H, "x", W);
  std::int64_t ctot = 0;
  for (auto& t : parts) {
    t = t.contiguous(at::MemoryFormat::ChannelsLast);
    ctot += t.size(1);
  }
  const auto Ho = H + 2 * p, Wo = W + 2 * p;
  auto out = torch::empty({B, ctot, Ho, Wo}, parts[0].options().memory_format(at::MemoryFormat::ChannelsLast));
  const auto es = static_cast<std::int64_t>(out.element_size());
  auto reflect = [](std::int64_t i, std::int64_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; };
  char* dst = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, B * Ho, 1, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t b = r / Ho, sy = reflect(r % Ho - p, H);
      char* drow = dst + r * Wo * ctot * es;
      std::int64_t off = 0;
      for (const auto& t : parts) {
        const std::int64_t c = t.size(1);
        const char* srow = static_cast<const char*>(t.data_ptr()) + (b * H + sy) * W * c * es;
        for (std::int64_t x = 0; x < Wo; ++x)
          std::memcpy(drow + (x * ctot + off) * es, srow + reflect(x - p, W) * c * es, static_cast<std::size_t>(c * es));
        off += c;
      }
    }
  });
  return out;
}

// Reflection padding of the last two dims by p (< size): libtorch 1.13's reflection_pad2d has no
// bf16 CPU kernel, so other dtypes pad by concatenating mirrored slices (the same values).
torch::Tensor reflect_pad(const torch::Tensor& x, std::int64_t p) {
  if (p == 0) return x;
  if (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64) return torch::reflection_pad2d(x, {p, p, p, p});
  if (x.dim() == 4 && x.device().is_cpu() && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
    return reflect_pad_cat_nhwc({x}, p);
  auto y = x;
  for (std::int64_t dim : {3, 2}) {
    const auto n = y.size(dim);
    TORCH_CHECK(p < n, "reflection padding ", p, " must be smaller than the input size ", n);
    y = torch::cat({y.narrow(dim, 1, p).flip(dim), y, y.narrow(dim, n - 1 - p, p).flip(dim)}, dim);
  }
  return y;
}

torch::Tensor pad2d(const torch::Tensor& x, std::int64_t p, LamaPadding mode) {
  if (p == 0 || mode == LamaPadding::zeros) return x;
  if (mode == LamaPadding::reflect) return reflect_pad(x, p);
  // replicate / circular: rare; computed in fp32 when the dtype has no kernel.
  auto xf = x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf ? x.to(torch::kFloat32) : x;
  auto y = mode == LamaPadding::replicate
               ? torch::replication_pad2d(xf, {p, p, p, p})
               : torch::nn::functional::pad(xf, torch::nn::functional::PadFuncOptions({p, p, p, p}).mode(torch::kCircular));
  return y.to(x.scalar_type());
}

torch::Tensor add_opt(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

}  // namespace

// ---- config ------------------------------------------------------------------------------------

LamaConfig parse_lama_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root = load_yaml_bounded(yaml_text, source, ExitCode::model);
  if (!root.IsMap()) throw ModelError(source + ": expected a YAML mapping with a 'generator' section");
  YamlReader r(root, source);
  if (!r.at("generator").IsMap())
    throw ModelError(source + ": no 'generator' section (expected the LaMa training config.yaml)");

  YamlSection g(r, r.at("generator"), "generator");
  LamaConfig c;
  const std::string kind = g.get_string("kind", "ffc_resnet");
  if (kind != "ffc_resnet")
    r.fail("generator.kind", "'" + kind + "' is not supported (lli implements the ffc_resnet generator of big-lama)");
  auto positive = [&](const char* key, std::int64_t def, bool required) {
    const auto v = g.get_int(key, def, required);
    if (v <= 0) r.fail(g.where(key), "must be positive, got " + std::to_string(v));
    return v;
  };
  c.input_nc = positive("input_nc", 0, /*required=*/true);
  c.output_nc = positive("output_nc", 0, /*required=*/true);
  c.ngf = positive("ngf", c.ngf, false);
  c.max_features = positive("max_features", c.max_features, false);
  c.n_downsampling = g.get_int("n_downsampling", c.n_downsampling);
  c.n_blocks = g.get_int("n_blocks", c.n_blocks);
  if (c.n_downsampling < 0 || c.n_downsampling > 10)
    r.fail(g.where("n_downsampling"), "must be in [0, 10], got " + std::to_string(c.n_downsampling));
  if (c.n_blocks < 0) r.fail(g.where("n_blocks"), "must be >= 0, got " + std::to_string(c.n_blocks));

  const std::string pad = g.get_string("padding_type", "reflect");
  if (pad == "reflect") c.padding_type = LamaPadding::reflect;
  else if (pad == "zeros") c.padding_type = LamaPadding::zeros;
  else if (pad == "replicate") c.padding_type = LamaPadding::replicate;
  else if (pad == "circular") c.padding_type = LamaPadding::circular;
  else r.fail(g.where("padding_type"), "'" + pad + "' is not one of reflect, zeros, replicate, circular");

  YAML::Node act = g.get("add_out_act");
  if (act.IsDefined()) {
    bool b = false;
    if (!act.IsScalar()) r.fail(g.where("add_out_act"), "expected true, false, 'sigmoid' or 'tanh'");
    if (act.Scalar() == "sigmoid") c.out_act = LamaOutAct::sigmoid;
    else if (act.Scalar() == "tanh") c.out_act = LamaOutAct::tanh;
    else if (YAML::convert<bool>::decode(act, b)) c.out_act = b ? LamaOutAct::tanh : LamaOutAct::none;
    else r.fail(g.where("add_out_act"), "'" + act.Scalar() + "' is not one of true, false, sigmoid, tanh");
  }

  c.init_conv = parse_ffc_kwargs(r, "generator.init_conv_kwargs");
  c.downsample_conv = parse_ffc_kwargs(r, "generator.downsample_conv_kwargs");
  c.resnet_conv = parse_ffc_kwargs(r, "generator.resnet_conv_kwargs");
  for (const char* k : {"init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs"}) g.ignore(k);

  g.refuse_unless("spatial_transform_layers", false, "learnable spatial transforms");
  g.ignore("spatial_transform_kwargs");  // only used with spatial_transform_layers
  g.refuse_unless("out_ffc", true, "an output FFC block");
  g.ignore("out_ffc_kwargs");  // only used with out_ffc
  for (const char* k : {"norm_layer", "activation_layer", "up_norm_layer", "up_activation"})
    g.refuse_unless(k, false, "lli uses the reference's defaults: BatchNorm2d and ReLU");
  g.refuse_unknown("not an FFCResNetGenerator option lli implements");

  // training_model: how the generator input is made (DefaultInpaintingTrainingModule).
  YamlSection tm(r, r.at("training_model"), "training_model");
  const std::string tm_kind = tm.get_string("kind", "default");
  if (tm_kind != "default") r.fail("training_model.kind", "'" + tm_kind + "' is not supported (expected default)");
  c.concat_mask = tm.get_bool("concat_mask", true);
  tm.refuse_unless("add_noise_kwargs", false, "noise channels in the generator input");
  // dataset.pad_out_to_modulo (the prediction config's; 8 when absent, as predict.py's default config).
  YamlSection ds(r, r.at("dataset"), "dataset");
  if (ds.present("pad_out_to_modulo") && ds.get("pad_out_to_modulo").IsNull()) c.pad_out_to_modulo = 1;  // None
  else c.pad_out_to_modulo = ds.get_int("pad_out_to_modulo", 8);

  const std::int64_t expect_in = 3 + (c.concat_mask ? 1 : 0);
  if (c.input_nc != expect_in)
    r.fail("generator.input_nc", std::to_string(c.input_nc) + " but the inpainting input has " +
                                     std::to_string(expect_in) + " channels (RGB" +
                                     (c.concat_mask ? " + mask, training_model.concat_mask" : "") + ")");
  if (c.output_nc != 3) r.fail("generator.output_nc", "must be 3 (RGB), got " + std::to_string(c.output_nc));
  check_ffc_chain(c, source);
  return c;
}

LamaConfig load_lama_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.yaml";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(path.string() + ": cannot read the LaMa config (expected <model dir>/config.yaml)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_lama_config(ss.str(), path.string());
}

// ---- modules -----------------------------------------------------------------------------------

LamaConvBnImpl::LamaConvBnImpl(std::int64_t in, std::int64_t out) {
  conv = register_module("0", nn::Conv2d(conv_opts(in, out, 1)));
  bn = register_module("1", nn::BatchNorm2d(out));
}

LamaFourierUnitImpl::LamaFourierUnitImpl(std::int64_t in, std::int64_t out, LamaFftNorm n) : norm(n) {
  conv_layer = register_module("conv_layer", nn::Conv2d(conv_opts(2 * in, 2 * out, 1)));
  bn = register_module("bn", nn::BatchNorm2d(2 * out));
}

void LamaFourierUnitImpl::prepare(torch::Dtype dtype) {
  auto [s, t] = bn_affine(*bn);
  const auto dev = conv_layer->weight.device();
  const auto w = scale_weight(conv_layer->weight, s);  // [2 C', 2 C, 1, 1], channel 2c + ri
  fused = {finish(w, dtype, dev), finish(t, dtype, dev)};
  const auto co = w.size(0) / 2, ci = w.size(1) / 2;
  // channel 2c + ri -> ri * C + c on both sides
  auto ws = w.reshape({co, 2, ci, 2}).permute({1, 0, 3, 2}).reshape({2 * co, 2 * ci, 1, 1});
  fused_split = {finish(ws.contiguous(), dtype, dev), finish(t.reshape({co, 2}).t().reshape({2 * co}), dtype, dev)};
}

namespace {
// (forward, inverse) scale factors of torch.fft's norm modes over n = H * W points.
std::pair<double, double> fft_scales(LamaFftNorm norm, std::int64_t n) {
  const double N = static_cast<double>(n);
  switch (norm) {
    case LamaFftNorm::backward: return {1.0, 1.0 / N};
    case LamaFftNorm::forward: return {1.0 / N, 1.0};
    default: return {1.0 / std::sqrt(N), 1.0 / std::sqrt(N)};
  }
}
}  // namespace

torch::Tensor LamaFourierUnitImpl::forward(const torch::Tensor& x) const {
  // bf16 CPU path: channels-last FFTs vectorized across channels, no layout changes at all.
  if (x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == fused.w.scalar_type() &&
      x.suggest_memory_format() == at::MemoryFormat::ChannelsLast &&
      nn::fft_nhwc_supported(x.size(2), x.size(3), x.size(1), x.scalar_type()) &&
      nn::fft_nhwc_supported(x.size(2), x.size(3), fused.w.size(0) / 2, x.scalar_type())) {
    const auto [fs, is] = fft_scales(norm, x.size(2) * x.size(3));
    auto spec = nn::rfft2_nhwc(x, fs, fused_split.w.scalar_type());                // [B, 2C, H, Wf]
    auto y = torch::conv2d(spec, fused_split.w, fused_split.b).relu_();          // [B, 2C', H, Wf]
    return nn::irfft2_nhwc(y, x.size(3), is, x.scalar_type());                   // [B, C', H, W]
  }
  return forward_planar(x);
}

torch::Tensor LamaFourierUnitImpl::forward_planar(const torch::Tensor& x) const {
  const auto B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const std::vector<std::int64_t> dims{-2, -1};
  const char* fnorm = fft_norm_name(norm);
  // The bf16 CPU path keeps activations channels-last ([B, H, W, C] in memory); the FFTs run in fp32
  // and write planar spectra. Where a layout change is needed it goes with the dtype change in one
  // tiled pass (nn::transpose_copy).
  const bool nhwc = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous() && x.device().is_cpu();
  const auto f32 = x.options().dtype(torch::kFloat32);
  // x: [B, C, H, W] -> fp32 planes [B*C, H, W]
  torch::Tensor xf;
  if (nhwc) {
    xf = torch::empty({B * C, H, W}, f32);
    auto dst = xf.view({B, C, H * W, 1});
    nn::transpose_copy(x.permute({0, 2, 3, 1}).reshape({B, H * W, C, 1}), dst);
  } else {
    xf = x.to(torch::kFloat32).contiguous().view({B * C, H, W});
  }
  // -> spectrum [B*C, H, Wf] complex (Wf = W/2 + 1); pocketfft on strided (channels-last) input
  // measured 2x slower than the transposing copy + contiguous transform
  const auto Wf = W / 2 + 1;
  auto f = torch::fft::rfftn(xf, c10::nullopt, dims, fnorm);
  // -> [B, 2C, H, Wf] convolution input: channel 2c = Re, 2c + 1 = Im
  const auto cdt = fused.w.scalar_type();
  torch::Tensor conv_in;
  if (nhwc) {
    auto nhwc_in = torch::empty({B, H, Wf, 2 * C}, x.options().dtype(cdt));
    auto dst = nhwc_in.view({B, H * Wf, C, 2});
    nn::transpose_copy(torch::view_as_real(f).view({B, C, H * Wf, 2}), dst);
    conv_in = nhwc_in.permute({0, 3, 1, 2});  // channels-last view
  } else {
    conv_in = torch::empty({B, 2 * C, H, Wf}, x.options().dtype(cdt));
    conv_in.view({B, C, 2, H, Wf}).copy_(torch::view_as_real(f).view({B, C, H, Wf, 2}).permute({0, 1, 4, 2, 3}));
  }
  auto y = bn_batch_stats ? bn_batch(*bn, torch::conv2d(conv_in, conv_layer->weight)).relu()
                          : torch::conv2d(conv_in, fused.w, fused.b).relu_();  // [B, 2C', H, Wf]
  const auto Co = y.size(1) / 2;
  // -> complex planes [B*C', H, Wf] -> irfft2 -> [B*C', H, W]
  auto yc = torch::empty({B * Co, H, Wf, 2}, f32);
  if (nhwc && y.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    auto dst = yc.view({B, Co, H * Wf, 2});
    nn::transpose_copy(y.permute({0, 2, 3, 1}).reshape({B, H * Wf, Co, 2}), dst);
  } else {
    yc.view({B, Co, H, Wf, 2}).permute({0, 1, 4, 2, 3}).copy_(y.view({B, Co, 2, H, Wf}));
  }
  auto out = torch::fft::irfftn(torch::view_as_complex(yc), std::vector<std::int64_t>{H, W}, dims, fnorm);
  // back to the input's dtype and layout: [B, C', H, W]
  if (!nhwc) return out.view({B, Co, H, W}).to(x.scalar_type());
  auto res = torch::empty({B, H, W, Co}, x.options());
  auto dst = res.view({B, H * W, Co, 1});
  nn::transpose_copy(out.view({B, Co, H * W, 1}), dst);
  return res.permute({0, 3, 1, 2});  // channels-last view
}

LamaSpectralTransformImpl::LamaSpectralTransformImpl(std::int64_t in, std::int64_t out, std::int64_t s,
                                                     const LamaFFCConfig& c)
    : stride(s), enable_lfu(c.enable_lfu) {
  conv1 = register_module("conv1", LamaConvBn(in, out / 2));
  fu = register_module("fu", LamaFourierUnit(out / 2, out / 2, c.fft_norm));
  if (enable_lfu) lfu = register_module("lfu", LamaFourierUnit(out / 2, out / 2, LamaFftNorm::ortho));
  conv2 = register_module("conv2", nn::Conv2d(conv_opts(out / 2, out, 1)));
}

void LamaSpectralTransformImpl::prepare(torch::Dtype dtype, const torch::Tensor& scale) {
  auto [s, t] = bn_affine(*conv1->bn);
  const auto dev = conv2->weight.device();
  fused_conv1 = {finish(scale_weight(conv1->conv->weight, s), dtype, dev), finish(t, dtype, dev)};
  fused_conv2 = finish(scale_weight(conv2->weight, scale), dtype, dev);
  fu->prepare(dtype);
  if (lfu) lfu->prepare(dtype);
}

torch::Tensor LamaSpectralTransformImpl::forward(const torch::Tensor& x_in) const {
  auto x = stride == 2 ? torch::avg_pool2d(x_in, {2, 2}, {2, 2}) : x_in;
  x = bn_batch_stats ? bn_batch(*conv1->bn, torch::conv2d(x, conv1->conv->weight)).relu()
                     : torch::conv2d(x, fused_conv1.w, fused_conv1.b).relu_();  // [B, C/2, H, W]
  auto z = x + fu->forward(x);
  if (enable_lfu) {
    // Local Fourier unit: the first quarter of the channels cut into 2x2 tiles stacked as
    // channels, transformed, and tiled back (as the reference: tiles of h // 2 on both axes).
    const auto c = x.size(1), split = x.size(2) / 2;
    auto xs = torch::cat(torch::split(x.narrow(1, 0, c / 4), split, -2), 1);
    xs = torch::cat(torch::split(xs, split, -1), 1).contiguous();
    z = z + lfu->forward(xs).repeat({1, 1, 2, 2});
  }
  return torch::conv2d(z, bn_batch_stats ? conv2->weight : fused_conv2);
}

LamaFFCBnActImpl::LamaFFCBnActImpl(std::int64_t in, std::int64_t out, const LamaConvSpec& sp, const LamaFFCConfig& c)
    : spec(sp) {
  const auto s = ffc_split(in, out, c);
  in_cl = s.in_cl;
  in_cg = s.in_cg;
  out_cl = s.out_cl;
  out_cg = s.out_cg;
  ffc = register_module("ffc", std::make_shared<torch::nn::Module>());
  auto conv = [&](const char* name, std::int64_t ci, std::int64_t co) {
    auto o = conv_opts(ci, co, spec.kernel);
    o.stride = spec.stride;
    return ffc->register_module(name, nn::Conv2d(o));
  };
  if (in_cl > 0 && out_cl > 0) convl2l = conv("convl2l", in_cl, out_cl);
  if (in_cl > 0 && out_cg > 0) convl2g = conv("convl2g", in_cl, out_cg);
  if (in_cg > 0 && out_cl > 0) convg2l = conv("convg2l", in_cg, out_cl);
  if (in_cg > 0 && out_cg > 0)
    convg2g = ffc->register_module("convg2g", LamaSpectralTransform(in_cg, out_cg, spec.stride, c));
  if (s.has_l) bn_l = register_module("bn_l", nn::BatchNorm2d(out_cl));
  if (s.has_g) bn_g = register_module("bn_g", nn::BatchNorm2d(out_cg));
}

void LamaFFCBnActImpl::prepare(torch::Dtype dtype) {
  if (bn_l) {
    auto [s, t] = bn_affine(*bn_l);
    std::vector<torch::Tensor> parts;  // input order: cat(x_l, x_g)
    if (convl2l) parts.push_back(convl2l->weight);
    if (convg2l) parts.push_back(convg2l->weight);
    const auto dev = parts.at(0).device();
    local = {finish(scale_weight(torch::cat(parts, 1), s), dtype, dev), finish(t, dtype, dev)};
  }
  if (bn_g) {
    auto [s, t] = bn_affine(*bn_g);
    const auto dev = bn_g->weight.device();
    if (convl2g) l2g = {finish(scale_weight(convl2g->weight, s), dtype, dev), finish(t, dtype, dev)};
    else g_shift = finish(t.view({1, -1, 1, 1}), dtype, dev);
    if (convg2g) convg2g->prepare(dtype, s);
  }
}

LamaPair LamaFFCBnActImpl::forward(const LamaPair& x) const {
  const bool zero_pad = spec.padding_type == LamaPadding::zeros;
  const auto conv_pad = zero_pad ? spec.padding : 0;
  LamaPair out;
  torch::Tensor l_padded;  // padded x_l, reused by convl2l's input and convl2g
  if (bn_l) {
    // input of the local convolution: cat(x_l, x_g) or the one that exists, padded
    std::vector<torch::Tensor> parts;
    if (convl2l) parts.push_back(x.l);
    if (convg2l) parts.push_back(x.g);
    torch::Tensor xin;
    const auto& x0 = parts.at(0);
    if (parts.size() > 1 && spec.padding_type == LamaPadding::reflect && spec.padding > 0 && x0.device().is_cpu() &&
        x0.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
      xin = reflect_pad_cat_nhwc(parts, spec.padding);  // one pass instead of cat + pad
    else
      xin = pad2d(parts.size() > 1 ? torch::cat(parts, 1) : x0, spec.padding, spec.padding_type);
    if (convl2l) l_padded = convg2l ? xin.narrow(1, 0, in_cl) : xin;
    if (bn_batch_stats) {
      std::vector<torch::Tensor> ws;  // the same input order: cat(x_l, x_g)
      if (convl2l) ws.push_back(convl2l->weight);
      if (convg2l) ws.push_back(convg2l->weight);
      out.l = bn_batch(*bn_l, torch::conv2d(xin, torch::cat(ws, 1), {}, spec.stride, conv_pad)).relu();
    } else {
      out.l = torch::conv2d(xin, local.w, local.b, spec.stride, conv_pad).relu_();
    }
  }
  if (bn_g) {
    torch::Tensor acc;
    if (convl2g) {
      if (!l_padded.defined()) l_padded = pad2d(x.l, spec.padding, spec.padding_type);
      acc = bn_batch_stats ? torch::conv2d(l_padded, convl2g->weight, {}, spec.stride, conv_pad)
                           : torch::conv2d(l_padded, l2g.w, l2g.b, spec.stride, conv_pad);
    }
    if (convg2g) {
      auto s = convg2g->forward(x.g);
      if (bn_batch_stats) acc = acc.defined() ? acc + s : s;
      else acc = acc.defined() ? acc.add_(s) : s.add_(g_shift);
    }
    out.g = bn_batch_stats ? bn_batch(*bn_g, acc).relu() : torch::relu_(acc);
  }
  return out;
}

LamaResnetBlockImpl::LamaResnetBlockImpl(std::int64_t dim, LamaPadding padding_type, const LamaFFCConfig& c) {
  LamaConvSpec spec{/*kernel=*/3, /*stride=*/1, /*padding=*/1, padding_type};
  conv1 = register_module("conv1", LamaFFCBnAct(dim, dim, spec, c));
  conv2 = register_module("conv2", LamaFFCBnAct(dim, dim, spec, c));
}

LamaPair LamaResnetBlockImpl::forward(const LamaPair& x) const {
  auto y = conv2->forward(conv1->forward(x));
  return {add_opt(x.l, y.l), add_opt(x.g, y.g)};
}

LamaGeneratorImpl::LamaGeneratorImpl(const LamaConfig& c) : cfg(c) {
  model = register_module("model", std::make_shared<torch::nn::Module>());
  std::int64_t idx = 1;  // model.0 is ReflectionPad2d(3)
  init = model->register_module(std::to_string(idx++),
                                LamaFFCBnAct(c.input_nc, c.ngf, LamaConvSpec{7, 1, 0, LamaPadding::reflect}, c.init_conv));
  for (std::int64_t i = 0; i < c.n_downsampling; ++i) {
    LamaFFCConfig k = c.downsample_conv;
    if (i == c.n_downsampling - 1) k.ratio_gout = c.resnet_conv.ratio_gin;
    down.push_back(model->register_module(
        std::to_string(idx++), LamaFFCBnAct(c.width(std::int64_t{1} << i), c.width(std::int64_t{2} << i),
                                            LamaConvSpec{3, 2, 1, LamaPadding::reflect}, k)));
  }
  const auto dim = c.width(std::int64_t{1} << c.n_downsampling);
  for (std::int64_t b = 0; b < c.n_blocks; ++b)
    blocks.push_back(model->register_module(std::to_string(idx++), LamaResnetBlock(dim, c.padding_type, c.resnet_conv)));
  ++idx;  // ConcatTupleLayer
  for (std::int64_t i = 0; i < c.n_downsampling; ++i) {
    const auto mult = std::int64_t{1} << (c.n_downsampling - i);
    const auto out = std::min(c.max_features, static_cast<std::int64_t>(static_cast<double>(c.ngf * mult) / 2));
    auto o = conv_opts(c.width(mult), out, 3, /*bias=*/true);
    up_conv.push_back(model->register_module(std::to_string(idx++), nn::ConvTranspose2d(o)));
    up_bn.push_back(model->register_module(std::to_string(idx++), nn::BatchNorm2d(out)));
    ++idx;  // ReLU
  }
  ++idx;  // ReflectionPad2d(3)
  final_conv = model->register_module(std::to_string(idx), nn::Conv2d(conv_opts(c.ngf, c.output_nc, 7, /*bias=*/true)));
}

void LamaGeneratorImpl::prepare(torch::Dtype dtype) {
  nn::ForwardGuard no_grad;
  dtype_ = dtype;
  init->prepare(dtype);
  for (auto& d : down) d->prepare(dtype);
  for (auto& b : blocks) {
    b->conv1->prepare(dtype);
    b->conv2->prepare(dtype);
  }
  const auto dev = final_conv->weight.device();
  up_bias_.clear();
  up_subpixel_.clear();
  for (std::size_t i = 0; i < up_conv.size(); ++i) {
    auto [s, t] = bn_affine(*up_bn[i]);
    auto w = scale_weight(up_conv[i]->weight, s, /*dim=*/1);
    auto b = up_conv[i]->bias.to(torch::kCPU, torch::kFloat64) * s + t;
    up_bias_.push_back(finish(b, dtype, dev));
    for (auto& k : lama_subpixel_kernels(w)) up_subpixel_.push_back(finish(k, dtype, dev));
  }
  final_ = {finish(final_conv->weight, dtype, dev), finish(final_conv->bias, dtype, dev)};
  prepared_ = true;
}

void LamaGeneratorImpl::set_batch_norm_training(bool on) {
  bn_batch_stats_ = on;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* f = dynamic_cast<LamaFFCBnActImpl*>(m.get())) f->bn_batch_stats = on;
    if (auto* t = dynamic_cast<LamaSpectralTransformImpl*>(m.get())) t->bn_batch_stats = on;
    if (auto* u = dynamic_cast<LamaFourierUnitImpl*>(m.get())) u->bn_batch_stats = on;
  }
}

torch::Tensor LamaGeneratorImpl::forward(const torch::Tensor& input, const nn::Tap& tap) const {
  if (!prepared_) throw RuntimeError("LaMa generator: prepare() was not called after loading");
  nn::ForwardGuard no_grad;
  // input: [B, input_nc, H, W]
  auto x = reflect_pad(nn::prefer_channels_last(input.to(device(), dtype_)), 3);
  LamaPair p = init->forward({x, {}});
  nn::tap_if(tap, "init_l", -1, p.l);
  for (std::size_t i = 0; i < down.size(); ++i) {
    p = down[i]->forward(p);
    if (p.l.defined()) nn::tap_if(tap, "down_l", static_cast<std::int64_t>(i), p.l);
    if (p.g.defined()) nn::tap_if(tap, "down_g", static_cast<std::int64_t>(i), p.g);
  }
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    p = blocks[b]->forward(p);
    nn::tap_if(tap, "block_l", static_cast<std::int64_t>(b), p.l);
    nn::tap_if(tap, "block_g", static_cast<std::int64_t>(b), p.g);
  }
  x = torch::cat({p.l, p.g}, 1);  // ConcatTupleLayer: [B, l + g, H/2^n, W/2^n]
  nn::tap_if(tap, "concat", -1, x);
  for (std::size_t i = 0; bn_batch_stats_ && i < up_conv.size(); ++i)  // training: the reference's order
    x = bn_batch(*up_bn[i], torch::conv_transpose2d(x, up_conv[i]->weight, up_conv[i]->bias, 2, 1, 1)).relu();
  for (std::size_t i = 0; !bn_batch_stats_ && i < up_bias_.size(); ++i) {
    // ConvTranspose2d as four sub-pixel convolutions: bf16 conv_transpose2d is broken in libtorch
    // 1.13, and in fp32 this is faster too (bench_lama f32 512^2: 365 ms -> ~190 ms).
    std::vector<torch::Tensor> k(up_subpixel_.begin() + static_cast<std::ptrdiff_t>(4 * i),
                                 up_subpixel_.begin() + static_cast<std::ptrdiff_t>(4 * i + 4));
    x = lama_conv_transpose_subpixel(x, k, up_bias_[i]);
    x = torch::relu_(x);  // [B, C/2, 2H, 2W]
  }
  x = torch::conv2d(reflect_pad(x, 3), final_.w, final_.b).to(torch::kFloat32);
  switch (cfg.out_act) {
    case LamaOutAct::sigmoid: return torch::sigmoid(x);
    case LamaOutAct::tanh: return torch::tanh(x);
    default: return x;
  }
}

std::vector<torch::Tensor> lama_subpixel_kernels(const torch::Tensor& w) {
  // Output row 2m uses kernel row 1 at input row m; row 2m+1 uses kernel row 2 at m and 0 at m+1
  // (o = 2 i - 1 + k). Same for columns. Conv layout: [C_out, C_in, kh, kw].
  auto wt = w.transpose(0, 1);  // [C_out, C_in, 3, 3]
  const auto even = torch::tensor({1}, torch::kLong), odd = torch::tensor({2, 0}, torch::kLong);
  std::vector<torch::Tensor> k;
  for (const auto& rows : {even, odd})
    for (const auto& cols : {even, odd}) k.push_back(wt.index_select(2, rows).index_select(3, cols).contiguous());
  return k;  // phases (0,0), (0,1), (1,0), (1,1)
}

torch::Tensor lama_conv_transpose_subpixel(const torch::Tensor& x, const std::vector<torch::Tensor>& k,
                                           const torch::Tensor& bias) {
  const auto B = x.size(0), H = x.size(2), W = x.size(3);
  auto xp = torch::constant_pad_nd(x, {0, 1, 0, 1}, 0);  // [B, C, H+1, W+1]
  // Each phase (a, b) fills output pixels (2h + a, 2w + b): written straight into a [B, H, 2, W, 2, C]
  // view of the channels-last output (no stack + pixel shuffle pass).
  const auto C = k[0].size(0);
  const bool nhwc = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  auto out = torch::empty({B, C, 2 * H, 2 * W}, x.options().memory_format(nhwc ? at::MemoryFormat::ChannelsLast
                                                                                : at::MemoryFormat::Contiguous));
  // [B, H, 2, W, 2, C] view of channels-last memory, or [B, C, H, 2, W, 2] of planar memory
  auto grid = nhwc ? out.permute({0, 2, 3, 1}).view({B, H, 2, W, 2, C}) : out.view({B, C, H, 2, W, 2});
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) {
      auto ph = torch::conv2d(xp.narrow(2, 0, H + a).narrow(3, 0, W + b), k[static_cast<std::size_t>(2 * a + b)], bias);
      if (nhwc) grid.select(4, b).select(2, a).copy_(ph.permute({0, 2, 3, 1}));  // [B, H, W, C]
      else grid.select(5, b).select(3, a).copy_(ph);                           // [B, C, H, W]
    }
  return out;  // [B, C, 2H, 2W]
}

LamaGenerator load_lama(const std::filesystem::path& dir, const LamaLoadOptions& opts) {
  LamaConfig cfg = load_lama_config(dir);
  if (opts.dtype != torch::kFloat32 && opts.dtype != torch::kBFloat16 && opts.dtype != torch::kHalf)
    throw ModelError("LaMa: unsupported compute dtype " + std::string(c10::toString(opts.dtype)) +
                     " (f32, bf16, or f16 on CUDA)");
  if (opts.dtype == torch::kHalf && opts.device.is_cpu())
    throw ModelError("LaMa: fp16 compute is not supported on CPU (use f32 or bf16)");
  const auto file = dir / "generator.safetensors";
  if (!std::filesystem::exists(file))
    throw ModelError(file.string() + ": not found (a LaMa model directory holds generator.safetensors + config.yaml; "
                     "see scripts/convert-lama.py)");
  auto ckpt = st::Checkpoint::open(file);
  TensorMap tensors = load_tensors(ckpt);
  LamaGenerator model(cfg);
  BindOptions bo;
  bo.dtype = torch::kFloat32;
  bo.device = opts.device;
  bo.source = ckpt.source();
  bind_weights(*model, tensors, bo);
  model->prepare(opts.dtype);
  log_debug("loaded LaMa from {}: ngf {} down {} blocks {} ratios {}/{}/{} lfu {}, convolutions {}", dir.string(),
            cfg.ngf, cfg.n_downsampling, cfg.n_blocks, cfg.init_conv.ratio_gout, cfg.downsample_conv.ratio_gout,
            cfg.resnet_conv.ratio_gout, cfg.resnet_conv.enable_lfu, c10::toString(opts.dtype));
  return model;
}

// ---- pre / post-processing ---------------------------------------------------------------------

LamaInputs lama_preprocess(const cv::Mat& bgr, const cv::Mat& mask, const LamaConfig& cfg) {
  if (bgr.empty() || bgr.type() != CV_8UC3) throw InputError("LaMa: the image must be a non-empty 8-bit 3-channel image");
  if (mask.type() != CV_8UC1) throw InputError("LaMa: the mask must be an 8-bit single-channel image");
  if (mask.size() != bgr.size())
    throw InputError("LaMa: mask is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) +
                     " but the image is " + std::to_string(bgr.cols) + "x" + std::to_string(bgr.rows));
  LamaInputs r;
  r.height = bgr.rows;
  r.width = bgr.cols;
  const int mod = cfg.pad_out_to_modulo > 1 ? static_cast<int>(cfg.pad_out_to_modulo) : 1;
  const int Hp = (r.height + mod - 1) / mod * mod, Wp = (r.width + mod - 1) / mod * mod;
  // numpy's 'symmetric' pad (edge repeated) = OpenCV's BORDER_REFLECT, also for pads > size.
  cv::Mat rgb, img_p, mask_p;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  cv::copyMakeBorder(rgb, img_p, 0, Hp - r.height, 0, Wp - r.width, cv::BORDER_REFLECT);
  cv::copyMakeBorder(mask, mask_p, 0, Hp - r.height, 0, Wp - r.width, cv::BORDER_REFLECT);
  auto img_u8 = torch::from_blob(img_p.data, {Hp, Wp, 3}, torch::kUInt8);
  auto mask_u8 = torch::from_blob(mask_p.data, {1, 1, Hp, Wp}, torch::kUInt8);
  // [1, 3, Hp, Wp] = u8 / 255 in fp32; mask (m / 255 > 0) == (m > 0)
  r.image = img_u8.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32).div(255.0).contiguous();
  r.mask = mask_u8.gt(0).to(torch::kFloat32);
  auto masked = r.image * (1 - r.mask);
  r.model_input = cfg.concat_mask ? torch::cat({masked, r.mask}, 1) : masked;
  return r;
}

torch::Tensor lama_composite(const LamaInputs& in, const torch::Tensor& predicted) {
  auto pred = predicted.to(torch::kCPU, torch::kFloat32);
  auto inpainted = in.mask * pred + (1 - in.mask) * in.image;  // [1, 3, Hp, Wp]
  return inpainted[0].narrow(1, 0, in.height).narrow(2, 0, in.width).permute({1, 2, 0}).contiguous();
}

cv::Mat lama_to_bgr_u8(const torch::Tensor& hwc_rgb) {
  auto u8 = (hwc_rgb.to(torch::kCPU, torch::kFloat32) * 255).clamp(0, 255).to(torch::kUInt8).contiguous();
  cv::Mat rgb(static_cast<int>(u8.size(0)), static_cast<int>(u8.size(1)), CV_8UC3);
  std::memcpy(rgb.data, u8.data_ptr(), static_cast<std::size_t>(u8.numel()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

}  // namespace lli::models
