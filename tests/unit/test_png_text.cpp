// PNG iTXt/tEXt metadata: insertion before IEND, reading back (UTF-8), CRC-32, broken files.
#include <doctest/doctest.h>

#include <opencv2/imgcodecs.hpp>

#include <string>
#include <vector>

#include "io/png_text.h"
#include "lli/error.h"

namespace {

std::string small_png() {
  cv::Mat img(5, 7, CV_8UC3, cv::Scalar(10, 20, 30));
  std::vector<unsigned char> buf;
  REQUIRE(cv::imencode(".png", img, buf));
  return std::string(buf.begin(), buf.end());
}

}  // namespace

TEST_CASE("png_text: CRC-32 check value") {
  CHECK(lli::crc32("123456789") == 0xCBF43926u);
  CHECK(lli::crc32("") == 0u);
  CHECK(lli::crc32("6789", lli::crc32("12345")) == 0xCBF43926u);
}

TEST_CASE("png_text: added chunks read back in order and the pixels are unchanged") {
  const std::string png = small_png();
  lli::PngText text = {{"prompt", "a caf\xc3\xa9 at night, \"quoted\"\nsecond line"},
                       {"seed", "42"},
                       {"empty", ""}};
  const std::string out = lli::add_png_text(png, text, "x.png");
  CHECK(out.size() > png.size());
  CHECK(lli::read_png_text(out, "x.png") == text);
  CHECK(lli::read_png_text(png, "x.png").empty());
  std::vector<unsigned char> buf(out.begin(), out.end());
  cv::Mat back = cv::imdecode(buf, cv::IMREAD_COLOR);
  REQUIRE(back.rows == 5);
  CHECK(back.at<cv::Vec3b>(2, 3) == cv::Vec3b(10, 20, 30));
  // A second round appends after the first chunks.
  const std::string twice = lli::add_png_text(out, {{"more", "x"}}, "x.png");
  CHECK(lli::read_png_text(twice, "x.png").size() == 4);
  CHECK(lli::read_png_text(twice, "x.png").back().first == "more");
}

TEST_CASE("png_text: broken input and bad keys") {
  const std::string png = lli::add_png_text(small_png(), {{"k", "v"}});
  CHECK_THROWS_AS(lli::read_png_text("GIF89a...", "a.gif"), lli::InputError);
  std::string bad = png;
  bad[bad.size() - 20] ^= 0x5a;  // inside the last chunks: CRC mismatch
  CHECK_THROWS_AS(lli::read_png_text(bad, "bad.png"), lli::InputError);
  CHECK_THROWS_AS(lli::read_png_text(png.substr(0, png.size() - 12), "cut.png"), lli::InputError);
  try {
    lli::read_png_text(png.substr(0, png.size() - 12), "cut.png");
  } catch (const lli::InputError& e) {
    CHECK(std::string(e.what()).find("cut.png") != std::string::npos);
  }
  CHECK_THROWS_AS(lli::add_png_text(small_png(), {{"", "v"}}), lli::UsageError);
  CHECK_THROWS_AS(lli::add_png_text(small_png(), {{" lead", "v"}}), lli::UsageError);
  CHECK_THROWS_AS(lli::add_png_text(small_png(), {{std::string(80, 'k'), "v"}}), lli::UsageError);
}
