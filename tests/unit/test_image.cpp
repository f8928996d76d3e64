// Image and mask I/O: header probing, size limits before decoding, corrupt inputs, round trips.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "lli/error.h"
#include "lli/fs.h"
#include "lli/image.h"
#include "test_util.h"

using namespace lli;
using lli::test::TempDir;

namespace {

// A smooth colour test image (JPEG/WebP friendly), W x H.
cv::Mat test_image(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(uchar(40 + 150 * x / w), uchar(60 + 120 * y / h), uchar(100 + (x + y) % 7));
  return m;
}

std::string cv_encode(const cv::Mat& m, const std::string& ext, std::vector<int> params = {}) {
  std::vector<unsigned char> buf;
  REQUIRE(cv::imencode(ext, m, buf, params));
  return std::string(buf.begin(), buf.end());
}

void put_be32(std::string& b, size_t i, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) b[i + k] = char((v >> (24 - 8 * k)) & 0xFF);
}
void put_be16(std::string& b, size_t i, std::uint32_t v) {
  b[i] = char((v >> 8) & 0xFF);
  b[i + 1] = char(v & 0xFF);
}
void put_le32(std::string& b, size_t i, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) b[i + k] = char((v >> (8 * k)) & 0xFF);
}

// Offset of the first SOFn marker (FF C0..CF except C4/C8/CC) in a JPEG produced by OpenCV.
size_t find_sof(const std::string& b) {
  size_t pos = 2;
  while (pos + 4 < b.size()) {
    const unsigned m = static_cast<unsigned char>(b[pos + 1]);
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return pos;
    pos += 2 + ((static_cast<unsigned char>(b[pos + 2]) << 8) | static_cast<unsigned char>(b[pos + 3]));
  }
  FAIL("no SOF in JPEG");
  return 0;
}

template <typename E, typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("unexpected exception type: " << e.what());
  }
  FAIL("no exception thrown");
  return {};
}

struct EnvGuard {
  std::string name;
  EnvGuard(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~EnvGuard() { unsetenv(name.c_str()); }
};

double mean_abs_diff(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat d;
  cv::absdiff(a, b, d);
  const cv::Scalar s = cv::mean(d);
  return (s[0] + s[1] + s[2]) / 3.0;
}

}  // namespace

TEST_CASE("image: probe_image_header reads PNG, JPEG, WebP (lossy and lossless) and BMP sizes") {
  const cv::Mat img = test_image(37, 23);
  struct Case {
    std::string ext;
    std::vector<int> params;
    ImageFormat fmt;
  };
  const std::vector<Case> cases = {
      {".png", {}, ImageFormat::png},
      {".jpg", {}, ImageFormat::jpeg},
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 80}, ImageFormat::webp},   // VP8
      {".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, ImageFormat::webp},  // VP8L (lossless)
      {".bmp", {}, ImageFormat::bmp},
  };
  for (const auto& c : cases) {
    CAPTURE(c.ext);
    const std::string bytes = cv_encode(img, c.ext, c.params);
    CHECK(sniff_image_format(bytes) == c.fmt);
    const ImageInfo info = probe_image_header(bytes, "x" + c.ext);
    CHECK(info.format == c.fmt);
    CHECK(info.width == 37);
    CHECK(info.height == 23);
    const cv::Mat dec = decode_image_bytes(bytes, "x" + c.ext);
    CHECK(dec.type() == CV_8UC3);
    CHECK(dec.size() == img.size());
  }
  // WebP lossless really is VP8L and lossy VP8 (so both parsers ran).
  CHECK(cv_encode(img, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}).substr(12, 4) == "VP8L");
  CHECK(cv_encode(img, ".webp", {cv::IMWRITE_WEBP_QUALITY, 80}).substr(12, 4) == "VP8 ");
}

TEST_CASE("image: probe reads a hand-made WebP VP8X header and a top-down BMP") {
  std::string vp8x = std::string("RIFF") + std::string(4, '\0') + "WEBPVP8X" + std::string(4, '\0') +
                     std::string(4, '\0') + std::string(6, '\0');
  REQUIRE(vp8x.size() == 30);
  // canvas width-1 = 1199 (24-bit LE at 24), height-1 = 799 (at 27)
  vp8x[24] = char(1199 & 0xFF), vp8x[25] = char((1199 >> 8) & 0xFF), vp8x[26] = 0;
  vp8x[27] = char(799 & 0xFF), vp8x[28] = char((799 >> 8) & 0xFF), vp8x[29] = 0;
  const ImageInfo w = probe_image_header(vp8x, "x.webp");
  CHECK(w.format == ImageFormat::webp);
  CHECK(w.width == 1200);
  CHECK(w.height == 800);

  std::string bmp = cv_encode(test_image(10, 7), ".bmp");
  put_le32(bmp, 22, std::uint32_t(-7));  // negative height = top-down rows
  const ImageInfo b = probe_image_header(bmp, "top-down.bmp");
  CHECK(b.width == 10);
  CHECK(b.height == 7);
}

TEST_CASE("image: the format is sniffed from magic bytes, not from the extension") {
  TempDir tmp;
  const cv::Mat img = test_image(16, 12);
  const auto path = (tmp / "really_a_png.jpg").string();
  {
    std::ofstream f(path, std::ios::binary);
    const std::string b = cv_encode(img, ".png");
    f.write(b.data(), std::streamsize(b.size()));
  }
  const Image r = read_image(path);
  CHECK(r.source == path);
  CHECK(cv::norm(r.bgr, img, cv::NORM_INF) == 0);  // decoded losslessly as PNG
}

TEST_CASE("image: truncated, empty, zero-size and unknown inputs are InputErrors naming the file") {
  const cv::Mat img = test_image(20, 10);
  const std::string png = cv_encode(img, ".png"), jpg = cv_encode(img, ".jpg"), webp = cv_encode(img, ".webp"),
                    bmp = cv_encode(img, ".bmp");
  // Truncated headers.
  CHECK(error_of<InputError>([&] { probe_image_header(png.substr(0, 20), "t.png"); }).find("t.png: ") == 0);
  const size_t sof = find_sof(jpg);
  CHECK(error_of<InputError>([&] { probe_image_header(jpg.substr(0, sof), "t.jpg"); }).find("t.jpg: ") == 0);
  CHECK(error_of<InputError>([&] { probe_image_header(jpg.substr(0, sof + 5), "t.jpg"); }).find("SOF") !=
        std::string::npos);
  CHECK(error_of<InputError>([&] { probe_image_header(webp.substr(0, 24), "t.webp"); }).find("t.webp: ") == 0);
  CHECK(error_of<InputError>([&] { probe_image_header(bmp.substr(0, 20), "t.bmp"); }).find("t.bmp: ") == 0);
  // Empty file and bad magic.
  CHECK(error_of<InputError>([&] { probe_image_header("", "empty.png"); }).find("empty.png: file is empty") == 0);
  const std::string bad = error_of<InputError>([&] { probe_image_header("GIF89a........", "anim.gif"); });
  CHECK(bad.find("anim.gif: ") == 0);
  CHECK(bad.find("PNG, JPEG, WebP, BMP") != std::string::npos);
  std::string bad_png = png;
  bad_png[1] = 'Q';
  CHECK_THROWS_AS(probe_image_header(bad_png, "badmagic.png"), InputError);
  // Zero size in each header.
  std::string z = png;
  put_be32(z, 16, 0);
  CHECK(error_of<InputError>([&] { probe_image_header(z, "z.png"); }).find("zero size 0x10") != std::string::npos);
  z = jpg;
  put_be16(z, sof + 5, 0);
  CHECK(error_of<InputError>([&] { probe_image_header(z, "z.jpg"); }).find("zero size") != std::string::npos);
  z = bmp;
  put_le32(z, 22, 0);
  CHECK_THROWS_AS(probe_image_header(z, "z.bmp"), InputError);
  // Truncated pixel data after a valid header: decoding fails cleanly (no cv::Exception).
  const std::string msg = error_of<InputError>([&] { decode_image_bytes(png.substr(0, png.size() / 2), "half.png"); });
  CHECK(msg.find("half.png: ") == 0);
  const std::string garbage = png.substr(0, 33) + std::string(200, '\x55');
  CHECK_THROWS_AS(decode_image_bytes(garbage, "garbage.png"), InputError);
  CHECK_THROWS_AS(decode_image_bytes(jpg.substr(0, sof + 30), "cut.jpg"), InputError);
}

TEST_CASE("image: WebP data with a DICOM signature never reaches OpenCV's DICOM reader (fuzz finding)") {
  // As tests/data/fuzz/image/crash-50dd5057...: RIFF/WEBP whose VP8 chunk is larger than the RIFF
  // size (libwebp's header check fails, so OpenCV's WebP reader does not claim it) and "DICM" at
  // byte 128: cv::imdecode handed it to GDCM, which aborted the process (assertion is.good()). Here
  // the RIFF size matches the file, so it was not refused as truncated either.
  std::string b = std::string("RIFF") + std::string(4, '\0') + "WEBPVP8 " + std::string(4, '\0');
  put_le32(b, 4, 132 - 8);
  put_le32(b, 16, 0x1d4);
  b += std::string("\xd0\x07\x00\x9d\x01\x2a\x28\x00\x19\x00", 10);  // 40x25 key frame
  b.resize(128, '\x42');
  b += "DICM";
  for (const bool allow : {false, true}) {
    const bool was = allow_truncated_images();
    set_allow_truncated_images(allow);
    const std::string msg = error_of<InputError>([&] { decode_image_bytes(b, "d.webp"); });
    set_allow_truncated_images(was);
    CHECK(msg.find("d.webp: corrupt or truncated WebP image: bytes 128-131 read 'DICM'") == 0);
  }
  // A real WebP is not affected.
  const cv::Mat img = test_image(64, 48);
  CHECK(decode_image_bytes(cv_encode(img, ".webp"), "ok.webp").size() == img.size());
}

TEST_CASE("image: forged huge dimensions are rejected from the header before decoding") {
  const cv::Mat img = test_image(20, 10);
  std::string png = cv_encode(img, ".png");
  put_be32(png, 16, 40000);
  put_be32(png, 20, 40000);
  CHECK(error_of<InputError>([&] { decode_image_bytes(png, "big.png"); }) ==
        "big.png: image is 40000x40000 = 1600.0 MP, above the limit of 100 MP (set LLI_MAX_IMAGE_PIXELS to raise it)");

  std::string jpg = cv_encode(img, ".jpg");
  const size_t sof = find_sof(jpg);
  put_be16(jpg, sof + 5, 20000);  // height
  put_be16(jpg, sof + 7, 20000);  // width
  CHECK(error_of<InputError>([&] { decode_image_bytes(jpg, "big.jpg"); }).find("big.jpg: image is 20000x20000 = 400.0 MP") == 0);

  std::string bmp = cv_encode(img, ".bmp");
  put_le32(bmp, 18, 40000);
  put_le32(bmp, 22, std::uint32_t(-40000));
  CHECK(error_of<InputError>([&] { decode_image_bytes(bmp, "big.bmp"); }).find("big.bmp: image is 40000x40000") == 0);

  // Per-side limit: 35000 x 10 is only 0.35 MP but too wide.
  std::string wide = cv_encode(img, ".png");
  put_be32(wide, 16, 35000);
  CHECK(error_of<InputError>([&] { decode_image_bytes(wide, "wide.png"); }).find("above the limit of 30000 px per side") !=
        std::string::npos);
}

TEST_CASE("image: LLI_MAX_IMAGE_PIXELS overrides the pixel limit") {
  const cv::Mat img = test_image(37, 23);  // 851 px
  const std::string png = cv_encode(img, ".png");
  {
    EnvGuard env("LLI_MAX_IMAGE_PIXELS", "800");
    CHECK(max_image_pixels() == 800);
    CHECK(error_of<InputError>([&] { decode_image_bytes(png, "s.png"); }).find("above the limit of 0.0008 MP") !=
          std::string::npos);
  }
  {
    EnvGuard env("LLI_MAX_IMAGE_PIXELS", "851");
    CHECK(decode_image_bytes(png, "s.png").size() == img.size());
  }
  {
    EnvGuard env("LLI_MAX_IMAGE_PIXELS", "lots");
    CHECK_THROWS_AS(max_image_pixels(), UsageError);
  }
  {
    // Raised limit: the forged header passes the size check; the data cannot hold 40000x40000
    // pixels (refused before decoding), an InputError naming the file.
    EnvGuard env("LLI_MAX_IMAGE_PIXELS", "2000000000");
    std::string big = png;
    put_be32(big, 16, 40000);
    put_be32(big, 20, 40000);
    CHECK(error_of<InputError>([&] { decode_image_bytes(big, "big.png"); }).find("big.png: truncated image data") == 0);
  }
  CHECK(max_image_pixels() == 100000000);
  CHECK(max_image_side() == 30000);
}

TEST_CASE("image: grey, alpha and 16-bit inputs decode to 8-bit BGR") {
  cv::Mat grey(9, 11, CV_8UC1, cv::Scalar(77));
  cv::Mat g = decode_image_bytes(cv_encode(grey, ".png"), "g.png");
  CHECK(g.type() == CV_8UC3);
  CHECK(g.at<cv::Vec3b>(4, 5) == cv::Vec3b(77, 77, 77));

  cv::Mat bgra(9, 11, CV_8UC4, cv::Scalar(10, 20, 30, 0));
  cv::Mat a = decode_image_bytes(cv_encode(bgra, ".png"), "a.png");
  CHECK(a.type() == CV_8UC3);
  CHECK(a.at<cv::Vec3b>(0, 0) == cv::Vec3b(10, 20, 30));

  cv::Mat deep(9, 11, CV_16UC3, cv::Scalar(65535, 0, 257 * 100));
  cv::Mat d = decode_image_bytes(cv_encode(deep, ".png"), "d.png");
  CHECK(d.type() == CV_8UC3);
  CHECK(d.at<cv::Vec3b>(3, 3) == cv::Vec3b(255, 0, 100));
}

TEST_CASE("image: JPEG EXIF orientation is applied on load") {
  const cv::Mat img = test_image(40, 20);
  const std::string jpg = cv_encode(img, ".jpg");
  // APP1 "Exif" with a big-endian TIFF IFD holding one entry: Orientation (0x0112) = 6 (rotate 90 CW).
  std::string tiff = std::string("MM\x00\x2A", 4) + std::string("\x00\x00\x00\x08", 4) + std::string("\x00\x01", 2) +
                     std::string("\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00", 12) + std::string(4, '\0');
  std::string payload = std::string("Exif\0\0", 6) + tiff;
  std::string app1 = "\xFF\xE1";
  app1 += char(((payload.size() + 2) >> 8) & 0xFF);
  app1 += char((payload.size() + 2) & 0xFF);
  app1 += payload;
  const std::string rotated = jpg.substr(0, 2) + app1 + jpg.substr(2);
  CHECK(probe_image_header(rotated, "r.jpg").width == 40);  // header: stored size
  const cv::Mat d = decode_image_bytes(rotated, "r.jpg");
  CHECK(d.cols == 20);  // displayed size
  CHECK(d.rows == 40);
  cv::Mat expect;
  cv::rotate(img, expect, cv::ROTATE_90_CLOCKWISE);
  CHECK(mean_abs_diff(d, expect) < 4.0);
}

TEST_CASE("image: write_image/read_image round trip for every output extension") {
  TempDir tmp;
  const cv::Mat img = test_image(64, 48);
  for (const std::string name : {"a.png", "b.PNG", "c.jpg", "d.JPEG", "e.webp"}) {
    CAPTURE(name);
    const auto path = (tmp / name).string();
    write_image(path, img);
    const std::string bytes = read_file(path);
    const ImageFormat expect_fmt = name[2] == 'p' || name[2] == 'P' ? ImageFormat::png
                                   : name[0] == 'e'                 ? ImageFormat::webp
                                                                    : ImageFormat::jpeg;
    CHECK(sniff_image_format(bytes) == expect_fmt);
    const Image r = read_image(path);
    REQUIRE(r.bgr.size() == img.size());
    if (expect_fmt == ImageFormat::png) CHECK(cv::norm(r.bgr, img, cv::NORM_INF) == 0);
    else CHECK(mean_abs_diff(r.bgr, img) < 3.0);
  }
  CHECK(encode_image(img, "png") == encode_image(img, ".PNG"));
  CHECK(output_image_ext("-") == ".png");
  CHECK(output_image_ext("x/Y.JpG") == ".jpg");
}

TEST_CASE("image: bad output extensions are UsageErrors naming the path and the allowed ones") {
  TempDir tmp;
  const cv::Mat img = test_image(8, 8);
  const auto gif = (tmp / "out.gif").string();
  const std::string msg = error_of<UsageError>([&] { write_image(gif, img); });
  CHECK(msg.find(gif) == 0);
  CHECK(msg.find(".png, .jpg, .jpeg, .webp") != std::string::npos);
  CHECK_FALSE(fs::exists(gif));
  CHECK_THROWS_AS(write_image((tmp / "noext").string(), img), UsageError);
  CHECK_THROWS_AS(write_image((tmp / "x.bmp").string(), img), UsageError);
  CHECK_THROWS_AS(encode_image(img, ".tiff"), UsageError);
}

TEST_CASE("image: read_image reports missing files as InputError") {
  TempDir tmp;
  CHECK_THROWS_AS(read_image((tmp / "missing.png").string()), InputError);
  CHECK_THROWS_AS(read_mask((tmp / "missing.png").string()), InputError);
}

TEST_CASE("image: masks are written 0/255 and read with a threshold of 127") {
  TempDir tmp;
  // write_mask: any non-zero -> 255.
  cv::Mat m(4, 5, CV_8UC1, cv::Scalar(0));
  m.at<uchar>(0, 0) = 1;
  m.at<uchar>(1, 1) = 127;
  m.at<uchar>(2, 2) = 255;
  const auto mp = (tmp / "m.png").string();
  write_mask(mp, m);
  const cv::Mat raw = decode_image_bytes(read_file(mp), mp);
  CHECK(raw.at<cv::Vec3b>(0, 0) == cv::Vec3b(255, 255, 255));
  const cv::Mat back = read_mask(mp);
  CHECK(back.type() == CV_8UC1);
  CHECK(back.at<uchar>(0, 0) == 255);
  CHECK(back.at<uchar>(1, 1) == 255);
  CHECK(back.at<uchar>(2, 2) == 255);
  CHECK(cv::countNonZero(back) == 3);

  // read_mask: grey values 127 -> 0, 128 -> 255, from any format / channel count.
  cv::Mat g(2, 3, CV_8UC1);
  g.at<uchar>(0, 0) = 0, g.at<uchar>(0, 1) = 127, g.at<uchar>(0, 2) = 128;
  g.at<uchar>(1, 0) = 200, g.at<uchar>(1, 1) = 255, g.at<uchar>(1, 2) = 50;
  const auto gp = (tmp / "g.png").string();
  write_image(gp, g);
  const cv::Mat gm = read_mask(gp);
  const std::vector<uchar> expect = {0, 0, 255, 255, 255, 0};
  for (int i = 0; i < 6; ++i) CHECK(gm.at<uchar>(i / 3, i % 3) == expect[size_t(i)]);
  cv::Mat colour(2, 2, CV_8UC3, cv::Scalar(255, 255, 255));
  colour.at<cv::Vec3b>(0, 0) = cv::Vec3b(0, 0, 0);
  const auto cp = (tmp / "c.png").string();
  write_image(cp, colour);
  CHECK(cv::countNonZero(read_mask(cp)) == 3);
}

TEST_CASE("image: require_same_size names the mask file and both sizes") {
  const cv::Mat image(48, 64, CV_8UC3), mask(24, 32, CV_8UC1);
  CHECK(error_of<InputError>([&] { require_same_size(mask, image, "m.png"); }) ==
        "m.png: mask is 32x24 but the image is 64x48");
  CHECK_NOTHROW(require_same_size(cv::Mat(48, 64, CV_8UC1), image, "m.png"));
}

TEST_CASE("image: make_overlay tints the mask and keeps the image size") {
  const cv::Mat img(60, 80, CV_8UC3, cv::Scalar(200, 200, 200));
  cv::Mat mask(60, 80, CV_8UC1, cv::Scalar(0));
  cv::rectangle(mask, cv::Rect(20, 15, 30, 25), cv::Scalar(255), cv::FILLED);
  const cv::Mat ov = make_overlay(img, mask);
  CHECK(ov.size() == img.size());
  CHECK(ov.type() == CV_8UC3);
  CHECK(ov.at<cv::Vec3b>(27, 35) == cv::Vec3b(100, 100, 228));  // 50% red inside
  CHECK(ov.at<cv::Vec3b>(2, 2) == img.at<cv::Vec3b>(2, 2));      // untouched outside
  CHECK(ov.at<cv::Vec3b>(15, 35)[2] == 255);                    // contour
  CHECK_THROWS_AS(make_overlay(img, cv::Mat(10, 10, CV_8UC1)), InputError);
}
