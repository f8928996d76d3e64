// LaMa (big-lama FFCResNetGenerator) parity with the lama-tiny-a golden fixture (advimman/lama
// predict.py, fp32 CPU): pre-processing (exact), every intermediate feature, the prediction and the
// uint8 result; config parsing (references, refused options, impossible channel splits); strict
// loading; the sub-pixel transposed convolution; bf16 drift (reported); the crop strategy (pixels
// outside the mask bit-identical); scripts/convert-lama.py on a Lightning-style checkpoint.
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "lli/error.h"
#include "lli/safetensors.h"
#include "lli/tensor_io.h"
#include "model_test_util.h"
#include "models/lama.h"
#include "nn/fft_nhwc.h"
#include "pipelines/inpaint_lama.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace m = lli::models;
namespace p = lli::pipelines;
using lli::test::error_of;
using lli::test::fixtures_dir;
using lli::test::has;
using lli::test::max_abs_diff;
using lli::test::Recorder;
using lli::test::TempDir;

fs::path lama_dir() { return fixtures_dir() / "lama-tiny-a"; }
std::map<std::string, torch::Tensor> golden() { return lli::test::load_golden(lama_dir() / "golden.safetensors"); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

cv::Mat fixture_image() {
  cv::Mat bgr = cv::imread((lama_dir() / "image.png").string(), cv::IMREAD_COLOR);
  REQUIRE(!bgr.empty());
  return bgr;
}
cv::Mat fixture_mask() {
  cv::Mat mask = cv::imread((lama_dir() / "mask.png").string(), cv::IMREAD_GRAYSCALE);
  REQUIRE(!mask.empty());
  return mask;
}

// result_u8 rule of case.json: exact, or |diff| <= 1 where result_float * 255 is within 1e-4 of
// an integer. Returns the number of pixels that break it; `max_diff` gets the largest |diff|.
std::int64_t u8_violations(const torch::Tensor& got_u8, const torch::Tensor& want_u8, const torch::Tensor& want_float,
                           int& max_diff) {
  auto d = (got_u8.to(torch::kInt32) - want_u8.to(torch::kInt32)).abs();
  max_diff = d.numel() ? d.max().item<int>() : 0;
  auto x = want_float.to(torch::kFloat64) * 255;
  auto near_int = (x - x.round()).abs() <= 1e-4;
  auto bad = (d > 1) | ((d == 1) & near_int.logical_not());
  return bad.sum().item<std::int64_t>();
}

torch::Tensor bgr_to_rgb_tensor(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
}

}  // namespace

TEST_CASE("lama config: the fixture's config.yaml") {
  auto c = m::load_lama_config(lama_dir());
  CHECK(c.input_nc == 4);
  CHECK(c.output_nc == 3);
  CHECK(c.ngf == 8);
  CHECK(c.n_downsampling == 3);
  CHECK(c.n_blocks == 2);
  CHECK(c.out_act == m::LamaOutAct::sigmoid);
  CHECK(c.resnet_conv.ratio_gin == 0.75);
  CHECK(c.resnet_conv.ratio_gout == 0.75);
  CHECK_FALSE(c.resnet_conv.enable_lfu);
  CHECK(c.init_conv.ratio_gout == 0.0);
  CHECK(c.concat_mask);
  CHECK(c.pad_out_to_modulo == 8);
  CHECK(c.padding_type == m::LamaPadding::reflect);

  // The module tree holds exactly the checkpoint's values (case.json n_params counts the whole
  // state_dict: parameters, running statistics and num_batches_tracked).
  m::LamaGenerator g(c);
  std::int64_t n = 0;
  for (const auto& t : g->parameters()) n += t.numel();
  for (const auto& t : g->buffers()) n += t.numel();
  CHECK(n == 137035);
}

TEST_CASE("lama config: big-lama's OmegaConf references and defaults") {
  // big-lama's training config as released: downsample/resnet ratios given as ${...} references.
  const std::string yaml = R"(
generator:
  kind: ffc_resnet
  input_nc: 4
  output_nc: 3
  ngf: 64
  n_downsampling: 3
  n_blocks: 18
  add_out_act: sigmoid
  init_conv_kwargs:
    ratio_gin: 0
    ratio_gout: 0
    enable_lfu: false
  downsample_conv_kwargs:
    ratio_gin: ${generator.init_conv_kwargs.ratio_gout}
    ratio_gout: ${generator.downsample_conv_kwargs.ratio_gin}
    enable_lfu: false
  resnet_conv_kwargs:
    ratio_gin: 0.75
    ratio_gout: ${generator.resnet_conv_kwargs.ratio_gin}
    enable_lfu: false
losses:
  resnet_pl:
    weights_path: ${env:TORCH_HOME}
)";
  auto c = m::parse_lama_config(yaml, "big-lama.yaml");
  CHECK(c.downsample_conv.ratio_gin == 0.0);
  CHECK(c.downsample_conv.ratio_gout == 0.0);
  CHECK(c.resnet_conv.ratio_gout == 0.75);
  CHECK(c.n_blocks == 18);
  CHECK(c.pad_out_to_modulo == 8);  // no dataset section: predict.py's default
  CHECK(c.concat_mask);

  // Defaults of FFCResNetGenerator: add_out_act True = tanh, enable_lfu True, n_blocks 9.
  auto d = m::parse_lama_config(
      "generator: {input_nc: 4, output_nc: 3, ngf: 16, resnet_conv_kwargs: {ratio_gin: 0.5, ratio_gout: 0.5}}\n"
      "dataset: {pad_out_to_modulo: 16}\n",
      "d.yaml");
  CHECK(d.out_act == m::LamaOutAct::tanh);
  CHECK(d.resnet_conv.enable_lfu);
  CHECK(d.n_blocks == 9);
  CHECK(d.pad_out_to_modulo == 16);
  auto no_act = m::parse_lama_config(
      "generator: {input_nc: 4, output_nc: 3, add_out_act: false, resnet_conv_kwargs: {ratio_gin: 0.5, ratio_gout: 0.5}}",
      "n.yaml");
  CHECK(no_act.out_act == m::LamaOutAct::none);
}

TEST_CASE("lama config: options that change the numbers are honoured or refused by name") {
  const std::string base = read_text(lama_dir() / "config.yaml");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    const auto pos = s.find(from);
    REQUIRE(pos != std::string::npos);
    s.replace(pos, from.size(), to);
    return s;
  };
  auto err = [](const std::string& yaml) {
    return error_of<lli::ModelError>([&] { m::parse_lama_config(yaml, "cfg.yaml"); });
  };
  const std::string resnet = "  resnet_conv_kwargs:\n";
  std::string e = err(with(resnet, resnet + "    gated: true\n"));
  MESSAGE(e);
  CHECK(has(e, "cfg.yaml: generator.resnet_conv_kwargs.gated"));
  e = err(with(resnet, resnet + "    spatial_scale_factor: 0.5\n"));
  CHECK(has(e, "generator.resnet_conv_kwargs.spatial_scale_factor"));
  e = err(with(resnet, resnet + "    use_se: true\n"));
  CHECK(has(e, "generator.resnet_conv_kwargs.use_se"));
  e = err(with(resnet, resnet + "    groups: 2\n"));
  CHECK(has(e, "generator.resnet_conv_kwargs.groups"));
  e = err(with("  n_blocks: 2\n", "  n_blocks: 2\n  out_ffc: true\n"));
  CHECK(has(e, "generator.out_ffc"));
  e = err(with("  n_blocks: 2\n", "  n_blocks: 2\n  spatial_transform_layers: [0]\n"));
  CHECK(has(e, "generator.spatial_transform_layers"));
  e = err(with("  n_blocks: 2\n", "  n_blocks: 2\n  some_new_option: 1\n"));
  CHECK(has(e, "generator.some_new_option"));
  e = err(with("kind: ffc_resnet", "kind: pix2pixhd_global"));
  CHECK(has(e, "generator.kind"));
  e = err(with("  add_out_act: sigmoid", "  add_out_act: relu"));
  CHECK(has(e, "generator.add_out_act"));
  e = err(with("  concat_mask: true", "  concat_mask: false"));
  CHECK(has(e, "generator.input_nc"));
  // Honoured: padding_type, fft_norm, enable_lfu, max_features.
  CHECK(m::parse_lama_config(with("  n_blocks: 2\n", "  n_blocks: 2\n  padding_type: zeros\n"), "x").padding_type ==
        m::LamaPadding::zeros);
  CHECK(m::parse_lama_config(with(resnet, resnet + "    fft_norm: backward\n"), "x").resnet_conv.fft_norm ==
        m::LamaFftNorm::backward);

  // Channel splits the reference cannot run.
  e = err(with("  init_conv_kwargs:\n    ratio_gin: 0\n", "  init_conv_kwargs:\n    ratio_gin: 0.5\n"));
  MESSAGE(e);
  CHECK(has(e, "generator.init_conv_kwargs.ratio_gin"));
  e = err(with("    ratio_gout: 0.75\n", "    ratio_gout: 0.5\n"));
  CHECK(has(e, "resnet_conv_kwargs"));
  e = err(with("    ratio_gin: 0.75\n    ratio_gout: 0.75\n", "    ratio_gin: 0\n    ratio_gout: 0\n"));
  MESSAGE(e);
  CHECK(has(e, "ConcatTupleLayer"));
  e = err(with("  downsample_conv_kwargs:\n    ratio_gin: 0\n    ratio_gout: 0\n",
               "  downsample_conv_kwargs:\n    ratio_gin: 0\n    ratio_gout: ${generator.nowhere}\n"));
  CHECK(has(e, "${generator.nowhere}"));
  CHECK(has(err("generator: [1, 2]"), "no 'generator' section"));
  CHECK(has(err("generator: {output_nc: 3}"), "generator.input_nc"));
}

TEST_CASE("lama loading is strict: missing and unexpected keys are named") {
  TempDir tmp;
  fs::copy_file(lama_dir() / "config.yaml", tmp / "config.yaml");
  auto ckpt = lli::st::Checkpoint::open(lama_dir() / "generator.safetensors");
  auto tensors = lli::load_tensors(ckpt);
  const std::string gone = "model.5.conv1.ffc.convg2g.fu.conv_layer.weight";
  REQUIRE(tensors.count(gone));
  tensors.erase(gone);
  tensors["model.5.conv1.ffc.convg2g.lfu.bn.weight"] = torch::ones({24});
  lli::save_tensors(tmp / "generator.safetensors", tensors);
  const auto e = error_of<lli::ModelError>([&] { m::load_lama(tmp.path); });
  MESSAGE(e);
  CHECK(has(e, gone));
  CHECK(has(e, "model.5.conv1.ffc.convg2g.lfu.bn.weight"));

  fs::remove(tmp / "generator.safetensors");
  CHECK(has(error_of<lli::ModelError>([&] { m::load_lama(tmp.path); }), "generator.safetensors"));
  CHECK(has(error_of<lli::ModelError>([&] { m::load_lama(tmp / "nowhere"); }), "config.yaml"));
  CHECK_FALSE(p::lama_model_present(tmp.path));
  CHECK(p::lama_model_present(lama_dir()));
}

TEST_CASE("lama parity with lama-tiny-a: inputs, features, prediction, uint8 result") {
  auto g = golden();
  auto cfg = m::load_lama_config(lama_dir());
  auto in = m::lama_preprocess(fixture_image(), fixture_mask(), cfg);
  // The pre-processing is exact.
  CHECK(max_abs_diff(in.image, g["image_padded"]) == 0);
  CHECK(max_abs_diff(in.mask, g["mask_padded"]) == 0);
  CHECK(max_abs_diff(in.model_input, g["model_input"]) == 0);
  CHECK(in.height == 60);
  CHECK(in.width == 76);

  auto model = m::load_lama(lama_dir());
  Recorder rec;
  auto pred = model->forward(in.model_input, rec.tap());
  const auto last = static_cast<std::size_t>(cfg.n_blocks - 1);
  const std::vector<std::pair<std::string, torch::Tensor>> feats = {
      {"feat_init_l", rec.seen["init_l"].at(0)},
      {"feat_down_l", rec.seen["down_l"].back()},
      {"feat_down_g", rec.seen["down_g"].back()},
      {"feat_block0_l", rec.seen["block_l"].at(0)},
      {"feat_block0_g", rec.seen["block_g"].at(0)},
      {"feat_blocklast_l", rec.seen["block_l"].at(last)},
      {"feat_blocklast_g", rec.seen["block_g"].at(last)},
      {"feat_concat", rec.seen["concat"].at(0)},
  };
  for (const auto& [name, t] : feats) {
    const auto& want = g.at(name);
    const double d = max_abs_diff(t, want);
    const double scale = want.abs().max().item<double>();
    MESSAGE(name << ": max |diff| " << d << " (max |value| " << scale << ")");
    CHECK(d <= 1e-4 + 1e-4 * scale);
  }
  const double dp = max_abs_diff(pred, g["predicted_image"]);
  MESSAGE("predicted_image: max |diff| " << dp);
  CHECK(dp <= 1e-5);

  auto result = m::lama_composite(in, pred);
  const double dr = max_abs_diff(result, g["result_float"]);
  MESSAGE("result_float: max |diff| " << dr);
  CHECK(dr <= 1e-5);
  cv::Mat bgr = m::lama_to_bgr_u8(result);
  int max_diff = 0;
  CHECK(u8_violations(bgr_to_rgb_tensor(bgr), g["result_u8"], g["result_float"], max_diff) == 0);
  MESSAGE("result_u8: max |diff| " << max_diff);

  // The pipeline gives the same image (= output.png, within the rule), the unmasked pixels untouched.
  p::LamaOptions o;
  o.dtype = lli::DTypeChoice::f32;
  p::LamaInpainter lama(lama_dir(), o);
  cv::Mat out = lama.inpaint(fixture_image(), fixture_mask());
  CHECK(u8_violations(bgr_to_rgb_tensor(out), g["result_u8"], g["result_float"], max_diff) == 0);
  cv::Mat png = cv::imread((lama_dir() / "output.png").string(), cv::IMREAD_COLOR);
  CHECK(cv::norm(out, png, cv::NORM_INF) <= 1);
  cv::Mat keep = fixture_mask() == 0, diff;
  cv::absdiff(out, fixture_image(), diff);
  diff.setTo(0, ~keep);
  CHECK(cv::countNonZero(diff.reshape(1)) == 0);
  CHECK(lama.timings().model_runs == 1);
  CHECK_FALSE(lama.timings().cropped);
  MESSAGE(lama.describe());
}

TEST_CASE("lama Fourier unit: the channels-last FFT path equals libtorch's planar FFTs") {
  // Sizes where the channels-last path applies (H, W powers of two, channels multiples of 16); the
  // fixture's tiny unit does not reach it.
  if (!lli::nn::fft_nhwc_supported(16, 32, 32, torch::kBFloat16)) {
    MESSAGE("SKIPPED: no AVX512-BF16 kernels on this CPU");
    return;
  }
  torch::manual_seed(11);
  for (auto norm : {m::LamaFftNorm::ortho, m::LamaFftNorm::backward, m::LamaFftNorm::forward}) {
    m::LamaFourierUnit fu(32, 48, norm);
    {
      torch::NoGradGuard ng;
      fu->conv_layer->weight.normal_(0, 0.1);
      fu->bn->weight.uniform_(0.5, 1.5);
      fu->bn->bias.normal_(0, 0.2);
      fu->bn->running_mean.normal_(0, 0.2);
      fu->bn->running_var.uniform_(0.5, 2.0);
    }
    fu->prepare(torch::kBFloat16);
    auto x = torch::randn({2, 32, 16, 32}).to(torch::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
    auto fast = fu->forward(x);
    auto planar = fu->forward_planar(x);
    REQUIRE(fast.sizes() == planar.sizes());
    CHECK(fast.is_contiguous(at::MemoryFormat::ChannelsLast));
    const double scale = planar.to(torch::kFloat32).abs().max().item<double>();
    const double d = max_abs_diff(fast.to(torch::kFloat32), planar.to(torch::kFloat32));
    MESSAGE("norm " << static_cast<int>(norm) << ": max |fast - planar| " << d << " (max |value| " << scale << ")");
    CHECK(d <= 0.02 * scale);  // both bf16 at the convolution: a few bf16 steps apart at most
  }
}

TEST_CASE("lama: ConvTranspose2d as four sub-pixel convolutions") {
  torch::manual_seed(3);
  auto x = torch::randn({2, 6, 5, 7});
  auto w = torch::randn({6, 4, 3, 3});
  auto b = torch::randn({4});
  auto want = torch::conv_transpose2d(x, w, b, 2, 1, 1);
  auto got = m::lama_conv_transpose_subpixel(x, m::lama_subpixel_kernels(w), b);
  const double d = max_abs_diff(got, want);
  MESSAGE("sub-pixel vs conv_transpose2d: max |diff| " << d);
  CHECK(d <= 1e-5);
  // bf16 kernels (the reason it exists: libtorch 1.13's bf16 CPU conv_transpose2d is broken).
  std::vector<torch::Tensor> kb;
  for (const auto& k : m::lama_subpixel_kernels(w)) kb.push_back(k.to(torch::kBFloat16));
  auto got_bf16 = m::lama_conv_transpose_subpixel(x.to(torch::kBFloat16), kb, b.to(torch::kBFloat16));
  CHECK(max_abs_diff(got_bf16.to(torch::kFloat32), want) <= 0.05 * want.abs().max().item<double>());
}

TEST_CASE("lama bf16 convolutions stay close to fp32 (reported)") {
  auto g = golden();
  auto cfg = m::load_lama_config(lama_dir());
  auto in = m::lama_preprocess(fixture_image(), fixture_mask(), cfg);
  m::LamaLoadOptions lo;
  lo.dtype = torch::kBFloat16;
  auto model = m::load_lama(lama_dir(), lo);
  auto pred = model->forward(in.model_input);
  CHECK((pred.scalar_type() == torch::kFloat32));
  const double d = max_abs_diff(pred, g["predicted_image"]);
  MESSAGE("bf16 predicted_image: max |diff| " << d << " (fp32 golden, values in [0, 1])");
  CHECK(d < 0.05);
}

TEST_CASE("lama crop strategy: plans and bit-identical pixels outside the mask") {
  // Geometry: a box near the corner is grown by the margin and shifted inside the image.
  auto plan = p::plan_lama_crop({1000, 800}, {10, 20, 30, 40}, 1024, 100);
  CHECK(plan.region == cv::Rect(0, 0, 230, 240));
  CHECK(plan.model_size == cv::Size(230, 240));
  plan = p::plan_lama_crop({3000, 2000}, {1000, 500, 1500, 900}, 1024, 128);
  CHECK(plan.region == cv::Rect(872, 372, 1756, 1156));
  CHECK(plan.model_size == cv::Size(1024, 674));
  CHECK((plan.region & cv::Rect(1000, 500, 1500, 900)) == cv::Rect(1000, 500, 1500, 900));
  cv::Mat two(400, 600, CV_8UC1, cv::Scalar(0));
  two(cv::Rect(10, 10, 20, 20)).setTo(255);
  two(cv::Rect(500, 300, 30, 30)).setTo(7);
  CHECK(p::plan_lama_crops(two, 1024, 50).size() == 2);
  CHECK(p::plan_lama_crops(two, 1024, 300).size() == 1);  // overlapping regions merge
  CHECK(p::plan_lama_crops(cv::Mat::zeros(10, 10, CV_8UC1), 1024, 50).empty());

  // A real photo when the shared images are there, a synthetic one otherwise.
  cv::Mat photo;
  const auto shared = lli::test::shared_dir();
  if (!shared.empty() && fs::exists(shared / "images" / "messi5.jpg"))
    photo = cv::imread((shared / "images" / "messi5.jpg").string(), cv::IMREAD_COLOR);
  if (photo.empty()) {
    MESSAGE("../shared/images/messi5.jpg not found: using a synthetic image");
    photo = cv::Mat(342, 548, CV_8UC3);
    cv::randu(photo, cv::Scalar::all(0), cv::Scalar::all(255));
  }
  cv::Mat mask(photo.size(), CV_8UC1, cv::Scalar(0));
  cv::circle(mask, {photo.cols / 3, photo.rows / 2}, 25, cv::Scalar(255), cv::FILLED);
  cv::rectangle(mask, {photo.cols - 90, photo.rows - 60, 40, 30}, cv::Scalar(1), cv::FILLED);  // any non-zero is hole

  p::LamaOptions o;
  o.dtype = lli::DTypeChoice::f32;
  o.max_side = 256;  // below the photo's size: the crop strategy
  o.crop_margin = 40;
  p::LamaInpainter lama(lama_dir(), o);
  cv::Mat out = lama.inpaint(photo, mask);
  REQUIRE(out.size() == photo.size());
  CHECK(lama.timings().cropped);
  CHECK(lama.timings().model_runs == 2);
  cv::Mat diff;
  cv::absdiff(out, photo, diff);
  cv::Mat any;
  cv::transform(diff, any, cv::Matx13f(1, 1, 1));
  const int outside = cv::countNonZero((any > 0) & (mask == 0));
  const int inside = cv::countNonZero((any > 0) & (mask != 0));
  MESSAGE("crop strategy: " << inside << " pixels changed inside the mask, " << outside << " outside");
  CHECK(outside == 0);
  CHECK(inside > 0);

  // A crop larger than max_side is downscaled for the model and pasted back.
  o.max_side = 64;
  p::LamaInpainter small(lama_dir(), o);
  out = small.inpaint(photo, mask);
  cv::absdiff(out, photo, diff);
  cv::transform(diff, any, cv::Matx13f(1, 1, 1));
  CHECK(cv::countNonZero((any > 0) & (mask == 0)) == 0);
  CHECK(small.timings().model_size.width <= 64);
  CHECK(small.timings().model_size.height <= 64);
}

TEST_CASE("scripts/convert-lama.py turns a Lightning best.ckpt into generator.safetensors + config.yaml") {
  // Debian's python3-torch; CI installs only scripts/install-deps.sh's packages and skips.
  std::string python;
  for (const char* cand : {"python3", "/usr/bin/python3"}) {
    const std::string cmd = std::string(cand) + " -c 'import torch, numpy' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) {
      python = cand;
      break;
    }
  }
  if (python.empty()) LLI_SKIP("no python3 with torch and numpy: convert-lama.py not tested");
  const fs::path script = lli::test::samples_dir().parent_path() / "scripts" / "convert-lama.py";
  REQUIRE(fs::exists(script));

  TempDir tmp;
  // A PyTorch-Lightning-style checkpoint from the fixture's tensors: `generator.` prefixes, a
  // discriminator and loss weights to drop, and pickled objects of classes the converter lacks.
  write_text(tmp / "make_ckpt.py", R"(
import json, struct, sys, torch
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
dtypes = {'F32': torch.float32, 'I64': torch.int64}
state = {}
for name, info in header.items():
    if name == '__metadata__':
        continue
    a, b = info['data_offsets']
    buf = bytearray(raw[8 + n + a:8 + n + b])
    t = torch.frombuffer(buf, dtype=dtypes[info['dtype']]).reshape(info['shape']).clone()
    state['generator.' + name] = t
state['discriminator.model0.0.weight'] = torch.randn(8, 3, 4, 4)
state['loss_resnet_pl.impl.conv1.weight'] = torch.randn(4, 3, 1, 1)
state['val_evaluator.scores.ssim.weight'] = torch.ones(1)
class TrainingHParams:
    def __init__(self):
        self.lr = 1e-3
ckpt = {'epoch': 39, 'global_step': 1000, 'pytorch-lightning_version': '1.2.9', 'state_dict': state,
        'hyper_parameters': TrainingHParams(), 'optimizer_states': [{'state': {}}], 'lr_schedulers': []}
torch.save(ckpt, dst)
)");
  // The released big-lama/config.yaml layout: a whole training config with references.
  std::string cfg = read_text(lama_dir() / "config.yaml");
  cfg = "run_title: ''\nlosses:\n  resnet_pl:\n    weights_path: ${env:TORCH_HOME}\n" + cfg;
  const std::string from = "  downsample_conv_kwargs:\n    ratio_gin: 0\n    ratio_gout: 0\n";
  const auto pos = cfg.find(from);
  REQUIRE(pos != std::string::npos);
  cfg.replace(pos, from.size(),
              "  downsample_conv_kwargs:\n    ratio_gin: ${generator.init_conv_kwargs.ratio_gout}\n"
              "    ratio_gout: ${generator.downsample_conv_kwargs.ratio_gin}\n");
  cfg += "location:\n  data_root_dir: /data\n";
  fs::create_directories(tmp / "big-lama" / "models");
  write_text(tmp / "big-lama" / "config.yaml", cfg);

  const std::string q = "'";
  std::string cmd = python + " " + q + (tmp / "make_ckpt.py").string() + q + " " + q +
                    (lama_dir() / "generator.safetensors").string() + q + " " + q +
                    (tmp / "big-lama" / "models" / "best.ckpt").string() + q;
  REQUIRE(std::system(cmd.c_str()) == 0);
  cmd = python + " " + q + script.string() + q + " " + q + (tmp / "big-lama").string() + q + " " + q +
        (tmp / "out").string() + q + " > " + q + (tmp / "log.txt").string() + q + " 2>&1";
  const int rc = std::system(cmd.c_str());
  MESSAGE(read_text(tmp / "log.txt"));
  REQUIRE(rc == 0);

  // Same tensors, bit for bit (and nothing else); the config parses to the fixture's.
  auto want = lli::load_tensors(lli::st::Checkpoint::open(lama_dir() / "generator.safetensors"));
  auto got = lli::load_tensors(lli::st::Checkpoint::open(tmp / "out" / "generator.safetensors"));
  CHECK(got.size() == want.size());
  for (const auto& [name, t] : want) {
    REQUIRE(got.count(name));
    CHECK((got[name].scalar_type() == t.scalar_type()));
    CHECK(torch::equal(got[name], t));
  }
  auto c = m::load_lama_config(tmp / "out");
  auto f = m::load_lama_config(lama_dir());
  CHECK(c.ngf == f.ngf);
  CHECK(c.n_blocks == f.n_blocks);
  CHECK(c.downsample_conv.ratio_gout == f.downsample_conv.ratio_gout);
  CHECK(c.resnet_conv.ratio_gin == f.resnet_conv.ratio_gin);
  CHECK(c.out_act == f.out_act);
  auto model = m::load_lama(tmp / "out");  // loads strictly
  CHECK(model->cfg.n_blocks == 2);
  CHECK(has(read_text(tmp / "log.txt"), "discriminator"));
}
