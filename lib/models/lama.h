// LaMa inpainting generator (big-lama): FFCResNetGenerator, a ResNet whose bottleneck blocks are
// Fast Fourier Convolutions (a local 3x3 branch and a global spectral branch that convolves in the
// 2-D Fourier domain). Checkpoint layout: the generator's state_dict with its original key names
// (model.1.ffc.convl2l.weight, model.5.conv1.ffc.convg2g.fu.bn.running_var, ...; BatchNorm running
// statistics and num_batches_tracked included) in generator.safetensors, and the training
// config.yaml (its `generator` section; `training_model.concat_mask` and
// `dataset.pad_out_to_modulo` when present). scripts/convert-lama.py makes both from the released
// best.ckpt.
//
// model.<i> indices (n_down = n_downsampling, n_blk = n_blocks):
//   0 ReflectionPad2d(3) | 1 FFC_BN_ACT 7x7 | 2 .. 1+n_down FFC_BN_ACT 3x3 stride 2 |
//   2+n_down .. 1+n_down+n_blk FFCResnetBlock | ConcatTupleLayer | per upsampling step
//   ConvTranspose2d, BatchNorm2d, ReLU | ReflectionPad2d(3) | Conv2d 7x7 | output activation.
//
// Inference: BatchNorm uses its running statistics and is folded into the preceding convolution
// at load (prepare()); the module's registered tensors stay the checkpoint's. Training (the demo
// model, lib/train/demo_lama): set_batch_norm_training(true) runs the reference's unfused order
// instead — convolution, BatchNorm with the batch's statistics (running statistics updated, as
// nn.BatchNorm2d in train()), activation — in fp32 through autograd.
// Compute dtype: the convolutions run in the chosen dtype (f32 or bf16; f16 on CUDA); the Fourier
// transforms always run in fp32 (libtorch 1.13 has no bf16 FFT). ConvTranspose2d in bf16 runs as
// four sub-pixel convolutions (libtorch 1.13's bf16 CPU transposed convolution is broken).
// Ref: advimman/lama saicinpainting/training/modules/ffc.py (FFCResNetGenerator, FFCResnetBlock,
//      FFC_BN_ACT, FFC, SpectralTransform, FourierUnit, ConcatTupleLayer), modules/base.py
//      (get_activation), trainers/default.py (forward), bin/predict.py + training/data/datasets.py
//      (pad_img_to_modulo).
#pragma once

#include <torch/torch.h>

#include <opencv2/core.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/tap.h"

namespace lli::models {

enum class LamaPadding { zeros, reflect, replicate, circular };  // Conv2d padding_mode
enum class LamaOutAct { none, sigmoid, tanh };                   // add_out_act false / "sigmoid" / true|"tanh"
enum class LamaFftNorm { backward, ortho, forward };              // torch.fft norm

// One of init_conv_kwargs / downsample_conv_kwargs / resnet_conv_kwargs.
struct LamaFFCConfig {
  double ratio_gin = 0, ratio_gout = 0;        // share of the global (spectral) channels
  bool enable_lfu = true;                      // FFC's default (big-lama sets false)
  LamaFftNorm fft_norm = LamaFftNorm::ortho;   // the FourierUnit `fu` (the `lfu` always uses ortho)
};

// Defaults = FFCResNetGenerator's and DefaultInpaintingTrainingModule's.
struct LamaConfig {
  std::int64_t input_nc = 0, output_nc = 0;
  std::int64_t ngf = 64, n_downsampling = 3, n_blocks = 9, max_features = 1024;
  LamaPadding padding_type = LamaPadding::reflect;  // the resnet blocks' convolutions
  LamaOutAct out_act = LamaOutAct::tanh;             // add_out_act (default True = tanh)
  LamaFFCConfig init_conv, downsample_conv, resnet_conv;
  bool concat_mask = true;             // training_model.concat_mask: the mask is a 4th input channel
  std::int64_t pad_out_to_modulo = 8;  // dataset.pad_out_to_modulo (<= 1: no padding)

  std::int64_t width(std::int64_t mult) const { return std::min(max_features, ngf * mult); }
};

// Parses config.yaml text (OmegaConf `${a.b.c}` references are resolved). Options that change
// the numbers are honoured or refused with a ModelError naming the key; so is an FFC channel
// split the reference cannot run (e.g. a global input to a layer without a global branch).
LamaConfig parse_lama_config(const std::string& yaml_text, const std::string& source);
LamaConfig load_lama_config(const std::filesystem::path& dir);  // <dir>/config.yaml

// A (local, global) activation pair; an undefined tensor is an absent branch (the reference's 0).
struct LamaPair {
  torch::Tensor l, g;  // [B, C_l, H, W], [B, C_g, H, W]
};

// BatchNorm folded into a convolution: y = conv(x, w) + b.
struct LamaFused {
  torch::Tensor w, b;
};

// SpectralTransform.conv1: Sequential(Conv2d 1x1, BatchNorm2d, ReLU) -> keys conv1.0, conv1.1.
struct LamaConvBnImpl : torch::nn::Module {
  LamaConvBnImpl(std::int64_t in, std::int64_t out);
  nn::Conv2d conv{nullptr};     // "0"
  nn::BatchNorm2d bn{nullptr};  // "1" ("2" is the ReLU)
};
TORCH_MODULE(LamaConvBn);

struct LamaFourierUnitImpl : torch::nn::Module {
  LamaFourierUnitImpl(std::int64_t in, std::int64_t out, LamaFftNorm norm);
  void prepare(torch::Dtype dtype);
  // x: [B, C, H, W] -> [B, C_out, H, W]: rfft2 -> 1x1 conv + BN + ReLU on (re, im) channels -> irfft2
  torch::Tensor forward(const torch::Tensor& x) const;
  // libtorch's FFTs on planar fp32 (any size and layout; the fp32 path, and bf16 where the
  // channels-last FFT does not apply: H or W not a power of two, channels not a multiple of 16).
  torch::Tensor forward_planar(const torch::Tensor& x) const;

  LamaFftNorm norm;
  bool bn_batch_stats = false;  // training: conv_layer, then bn on the batch's statistics
  nn::Conv2d conv_layer{nullptr};  // [2 C_out, 2 C_in, 1, 1], channels interleaved (c re, c im, ...)
  nn::BatchNorm2d bn{nullptr};
  LamaFused fused;
  // The same with channels in nn::rfft2_nhwc's order (all real parts, then all imaginary parts) on
  // input and output: the channels-last FFT path (bf16 CPU) feeds it and reads it without shuffles.
  LamaFused fused_split;
};
TORCH_MODULE(LamaFourierUnit);

struct LamaSpectralTransformImpl : torch::nn::Module {
  LamaSpectralTransformImpl(std::int64_t in, std::int64_t out, std::int64_t stride, const LamaFFCConfig& c);
  // scale: the following BatchNorm's per-channel scale, folded into conv2.
  void prepare(torch::Dtype dtype, const torch::Tensor& scale);
  // x: [B, C_in, H, W] -> [B, C_out, H/stride, W/stride], already multiplied by `scale` (no bias)
  torch::Tensor forward(const torch::Tensor& x) const;

  std::int64_t stride;
  bool enable_lfu;
  bool bn_batch_stats = false;  // training: unfused conv1 and conv2 (the FFC's bn_g follows)
  LamaConvBn conv1{nullptr};
  LamaFourierUnit fu{nullptr}, lfu{nullptr};
  nn::Conv2d conv2{nullptr};
  LamaFused fused_conv1;
  torch::Tensor fused_conv2;
};
TORCH_MODULE(LamaSpectralTransform);

struct LamaConvSpec {
  std::int64_t kernel = 3, stride = 1, padding = 0;
  LamaPadding padding_type = LamaPadding::reflect;
};

// FFC_BN_ACT (with its FFC as the `ffc` child): the local output is
// relu(bn_l(convl2l(x_l) + convg2l(x_g))), the global one relu(bn_g(convl2g(x_l) + convg2g(x_g))).
struct LamaFFCBnActImpl : torch::nn::Module {
  LamaFFCBnActImpl(std::int64_t in, std::int64_t out, const LamaConvSpec& spec, const LamaFFCConfig& c);
  void prepare(torch::Dtype dtype);
  LamaPair forward(const LamaPair& x) const;

  std::int64_t in_cl, in_cg, out_cl, out_cg;
  LamaConvSpec spec;
  bool bn_batch_stats = false;  // training: unfused convolutions, bn_l / bn_g on the batch's statistics
  std::shared_ptr<torch::nn::Module> ffc;
  nn::Conv2d convl2l{nullptr}, convl2g{nullptr}, convg2l{nullptr};  // ffc.*; null = nn.Identity
  LamaSpectralTransform convg2g{nullptr};
  nn::BatchNorm2d bn_l{nullptr}, bn_g{nullptr};  // null = nn.Identity
  LamaFused local;          // conv over cat(x_l, x_g) -> local output, BN folded
  LamaFused l2g;            // conv over x_l -> global output (b: bn_g's shift)
  torch::Tensor g_shift;    // bn_g's shift when there is no convl2g
};
TORCH_MODULE(LamaFFCBnAct);

struct LamaResnetBlockImpl : torch::nn::Module {
  LamaResnetBlockImpl(std::int64_t dim, LamaPadding padding_type, const LamaFFCConfig& c);
  LamaPair forward(const LamaPair& x) const;  // x + conv2(conv1(x)) per branch
  LamaFFCBnAct conv1{nullptr}, conv2{nullptr};
};
TORCH_MODULE(LamaResnetBlock);

struct LamaGeneratorImpl : torch::nn::Module {
  explicit LamaGeneratorImpl(const LamaConfig& cfg);

  // Folds the BatchNorms into the convolutions and casts the folded weights to `dtype` (after
  // binding). forward() needs it.
  void prepare(torch::Dtype dtype);

  // Training mode of every BatchNorm (see above); fp32 only. forward() still needs prepare() once
  // (for the dtype); switch back and prepare() again before inference.
  void set_batch_norm_training(bool on);

  // input: [B, input_nc, H, W] with H, W multiples of 2^n_downsampling -> [B, output_nc, H, W]
  // fp32 (after the output activation). Taps: "init_l" (model[1] local output), "down_l"/"down_g"
  // (index i: model[2 + i]), "block_l"/"block_g" (index b: resnet block b), "concat".
  torch::Tensor forward(const torch::Tensor& input, const nn::Tap& tap = {}) const;

  torch::Dtype dtype() const { return dtype_; }
  torch::Device device() const { return final_conv->weight.device(); }

  LamaConfig cfg;
  std::shared_ptr<torch::nn::Module> model;  // "model": children registered by index
  LamaFFCBnAct init{nullptr};
  std::vector<LamaFFCBnAct> down;
  std::vector<LamaResnetBlock> blocks;
  std::vector<nn::ConvTranspose2d> up_conv;
  std::vector<nn::BatchNorm2d> up_bn;
  nn::Conv2d final_conv{nullptr};

 private:
  std::vector<torch::Tensor> up_bias_;      // per upsampling step: the bias with BatchNorm folded in
  std::vector<torch::Tensor> up_subpixel_;  // the four sub-pixel kernels per step
  LamaFused final_;
  torch::Dtype dtype_ = torch::kFloat32;
  bool prepared_ = false;
  bool bn_batch_stats_ = false;
};
TORCH_MODULE(LamaGenerator);

struct LamaLoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // convolution dtype (f32, bf16; f16 on CUDA)
  torch::Device device = torch::kCPU;
};

// <dir>/config.yaml + <dir>/generator.safetensors, strictly bound and prepared.
LamaGenerator load_lama(const std::filesystem::path& dir, const LamaLoadOptions& opts = {});

// ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1) as four sub-pixel
// convolutions: x [B, C_in, H, W], w [C_in, C_out, 3, 3] -> [B, C_out, 2H, 2W]. `kernels` from
// lama_subpixel_kernels(w) (computed once per weight).
std::vector<torch::Tensor> lama_subpixel_kernels(const torch::Tensor& w);
torch::Tensor lama_conv_transpose_subpixel(const torch::Tensor& x, const std::vector<torch::Tensor>& kernels,
                                           const torch::Tensor& bias);

// predict.py's pre-processing: image / 255 (RGB, CHW) and mask / 255 > 0, both padded at the
// bottom/right to a multiple of cfg.pad_out_to_modulo with numpy's `symmetric` mode, and the
// generator input cat(image * (1 - mask), mask).
struct LamaInputs {
  torch::Tensor image;        // [1, 3, Hp, Wp] fp32 in [0, 1]
  torch::Tensor mask;         // [1, 1, Hp, Wp] fp32 0/1
  torch::Tensor model_input;  // [1, input_nc, Hp, Wp] fp32
  int height = 0, width = 0;  // the unpadded size
};
// bgr: CV_8UC3; mask: CV_8UC1 of the same size (non-zero = hole). InputError otherwise.
LamaInputs lama_preprocess(const cv::Mat& bgr, const cv::Mat& mask, const LamaConfig& cfg);

// mask * predicted + (1 - mask) * image, cropped to the unpadded size: [H, W, 3] fp32 RGB.
torch::Tensor lama_composite(const LamaInputs& in, const torch::Tensor& predicted);
// np.clip(x * 255, 0, 255).astype(uint8) (truncation) of [H, W, 3] RGB -> CV_8UC3 BGR.
cv::Mat lama_to_bgr_u8(const torch::Tensor& hwc_rgb);

}  // namespace lli::models
