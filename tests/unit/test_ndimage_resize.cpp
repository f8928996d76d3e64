// The scipy.ndimage resize of Owlv2ImageProcessor (io/ndimage_resize.h): boundary rule, Gaussian
// weights, the identity and upscaling cases, and owlv2-tiny-a's pixel_values (the downscaling
// path with anti-aliasing) against the transformers golden.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "io/ndimage_resize.h"
#include "lli/error.h"
#include "lli/safetensors.h"
#include "test_util.h"

namespace {

std::vector<std::uint8_t> ramp(int h, int w, int c) {
  std::vector<std::uint8_t> v(static_cast<std::size_t>(h) * w * c);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>((i * 37 + 11) % 256);
  return v;
}

lli::NdSource source(const std::vector<std::uint8_t>& d, int h, int w, int c, int ph, int pw) {
  lli::NdSource s;
  s.data = d.data();
  s.h = h;
  s.w = w;
  s.channels = c;
  s.row_stride = static_cast<std::size_t>(w) * c;
  s.rescale = 1.0 / 255.0;
  s.padded_h = ph;
  s.padded_w = pw;
  s.pad_value = 0.5f;
  return s;
}

}  // namespace

TEST_CASE("ndimage resize: 'mirror' reflects about the edge pixel's centre") {
  CHECK(lli::mirror_index(-1, 5) == 1);
  CHECK(lli::mirror_index(-2, 5) == 2);
  CHECK(lli::mirror_index(5, 5) == 3);
  CHECK(lli::mirror_index(6, 5) == 2);
  CHECK(lli::mirror_index(-9, 5) == 1);  // period 8
  CHECK(lli::mirror_index(3, 1) == 0);
  for (int i = 0; i < 5; ++i) CHECK(lli::mirror_index(i, 5) == i);
}

TEST_CASE("ndimage resize: Gaussian weights as scipy (truncate 4, normalised)") {
  auto w = lli::gaussian_kernel1d(2.3541666666666665);  // owlv2-tiny-a's sigma
  CHECK(w.size() == 2 * 9 + 1);                         // r = int(4 sigma + 0.5) = 9
  double s = 0;
  for (double v : w) s += v;
  CHECK(s == doctest::Approx(1.0).epsilon(1e-15));
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w[i] == w[w.size() - 1 - i]);
  CHECK(w[9] / w[10] == doctest::Approx(std::exp(0.5 / (2.3541666666666665 * 2.3541666666666665))));
}

TEST_CASE("ndimage resize: the same size is the rescaled image, padding included") {
  auto d = ramp(3, 4, 3);
  auto out = lli::ndimage_resize(source(d, 3, 4, 3, 4, 4), 4, 4);
  REQUIRE(out.size() == 4 * 4 * 3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x)
      for (int c = 0; c < 3; ++c) {
        const float want = y < 3 ? static_cast<float>(d[(y * 4 + x) * 3 + c] * (1.0 / 255.0)) : 0.5f;
        CHECK(out[(y * 4 + x) * 3 + c] == want);
      }
  CHECK_THROWS_AS(lli::ndimage_resize(source(d, 3, 4, 3, 4, 4), 0, 4), lli::InputError);
}

TEST_CASE("ndimage resize: a 2x upscale interpolates half-pixel centres with mirrored neighbours") {
  std::vector<std::uint8_t> d = {0, 255};  // 1 x 2, one channel
  auto s = source(d, 1, 2, 1, 1, 2);
  auto out = lli::ndimage_resize(s, 1, 4);
  // input coordinates -0.25, 0.25, 0.75, 1.25 -> mirrored 0.25, 0.25, 0.75, 0.75
  CHECK(out[0] == doctest::Approx(0.25));
  CHECK(out[1] == doctest::Approx(0.25));
  CHECK(out[2] == doctest::Approx(0.75));
  CHECK(out[3] == doctest::Approx(0.75));
}

TEST_CASE("ndimage resize: owlv2-tiny-a pixel_values (pad 548x342 to 548, blur, downscale to 96)") {
  const auto dir = lli::test::fixtures_dir() / "owlv2-tiny-a";
  auto f = lli::st::File::open(dir / "golden.safetensors");
  std::vector<std::uint8_t> img;
  std::vector<float> want;
  for (const auto& t : f.tensors()) {
    if (t.name == "image_uint8") img.assign(static_cast<const std::uint8_t*>(t.data), static_cast<const std::uint8_t*>(t.data) + t.nbytes);
    if (t.name == "pixel_values") {
      want.resize(t.nbytes / 4);
      std::memcpy(want.data(), t.data, t.nbytes);
    }
  }
  REQUIRE(img.size() == 342u * 548 * 3);
  REQUIRE(want.size() == 3u * 96 * 96);
  auto out = lli::ndimage_resize(source(img, 342, 548, 3, 548, 548), 96, 96);
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  double worst = 0;
  for (int i = 0; i < 96 * 96; ++i)
    for (int c = 0; c < 3; ++c)
      worst = std::max(worst, static_cast<double>(std::abs((out[static_cast<std::size_t>(i) * 3 + c] - mean[c]) / stdv[c] -
                                                           want[static_cast<std::size_t>(c) * 96 * 96 + i])));
  MESSAGE("pixel_values max |diff| = " << worst);
  CHECK(worst <= 1e-6);
}
