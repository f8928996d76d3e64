// Channels-last 2-D real FFTs (nn/fft_nhwc.h) against libtorch's torch::fft::rfftn / irfftn.
#include <torch/torch.h>

#include "nn/fft_nhwc.h"
#include "test_util.h"

namespace {

// [B, C, H, W] channels-last spectrum in rfft2_nhwc's channel order -> complex [B, C, H, Wf]
torch::Tensor as_complex(const torch::Tensor& y) {
  const auto C = y.size(1) / 2;
  auto yf = y.to(torch::kFloat32);
  return torch::complex(yf.narrow(1, 0, C), yf.narrow(1, C, C));
}

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

TEST_CASE("fft_nhwc: rfft2 and irfft2 of channels-last data equal torch.fft's rfftn / irfftn") {
  if (!lli::nn::fft_nhwc_supported(16, 8, 32, torch::kFloat32)) {
    MESSAGE("SKIPPED: no AVX512-BF16 kernels on this CPU");
    return;
  }
  CHECK_FALSE(lli::nn::fft_nhwc_supported(12, 8, 32, torch::kFloat32));  // H not a power of two
  CHECK_FALSE(lli::nn::fft_nhwc_supported(16, 8, 24, torch::kFloat32));  // C not a multiple of 16
  torch::manual_seed(5);
  for (auto [H, W] : {std::pair<std::int64_t, std::int64_t>{16, 8}, {4, 32}, {64, 64}}) {
    CAPTURE(H);
    CAPTURE(W);
    const std::int64_t B = 2, C = 32;
    auto x = torch::randn({B, C, H, W}).contiguous(at::MemoryFormat::ChannelsLast);
    const double s = 1.0 / std::sqrt(static_cast<double>(H * W));
    auto want = torch::fft::rfftn(x.contiguous(), c10::nullopt, std::vector<std::int64_t>{-2, -1}, "ortho");
    auto got = lli::nn::rfft2_nhwc(x, s, torch::kFloat32);
    REQUIRE(got.sizes() == torch::IntArrayRef({B, 2 * C, H, W / 2 + 1}));
    CHECK(got.is_contiguous(at::MemoryFormat::ChannelsLast));
    CHECK(max_abs(as_complex(got) - want) < 1e-5);
    // inverse of a one-sided spectrum whose DC / Nyquist imaginary parts are not zero: ignored as
    // torch's c2r does
    auto spec = torch::randn({B, 2 * C, H, W / 2 + 1}).contiguous(at::MemoryFormat::ChannelsLast);
    auto inv_want = torch::fft::irfftn(as_complex(spec), std::vector<std::int64_t>{H, W},
                                       std::vector<std::int64_t>{-2, -1}, "ortho");
    auto inv = lli::nn::irfft2_nhwc(spec, W, s, torch::kFloat32);
    REQUIRE(inv.sizes() == torch::IntArrayRef({B, C, H, W}));
    CHECK(max_abs(inv - inv_want) < 1e-5);
    // round trip, and bf16 in / out (rounded once, as a bf16 tensor op)
    CHECK(max_abs(lli::nn::irfft2_nhwc(got, W, s, torch::kFloat32) - x) < 1e-5);
    auto xb = x.to(torch::kBFloat16);
    auto gb = lli::nn::rfft2_nhwc(xb, s, torch::kBFloat16);
    CHECK((gb.scalar_type() == torch::kBFloat16));
    auto wantb = torch::fft::rfftn(xb.to(torch::kFloat32).contiguous(), c10::nullopt, std::vector<std::int64_t>{-2, -1},
                                   "ortho");
    CHECK(max_abs(as_complex(gb) - wantb) <= 0.01 * max_abs(wantb));
  }
}
