// Image and mask I/O: magic-byte sniffing, header probing with size limits before decoding,
// OpenCV decode/encode wrapped so that cv::Exception never escapes, atomic writes.
#include "lli/image.h"

#include <fmt/format.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/activity.h"
#include "core/quote.h"
#include "lli/error.h"
#include "lli/fs.h"
#include "lli/log.h"

namespace lli {

namespace {

constexpr std::uint64_t kDefaultMaxPixels = 100'000'000ull;
constexpr int kDefaultMaxSide = 30000;
constexpr int kRaisedMaxSide = 65535;
constexpr const char* kSupportedRead = "PNG, JPEG, WebP, BMP";
constexpr const char* kAllowedExt = ".png, .jpg, .jpeg, .webp";

const unsigned char* u8(std::string_view b) { return reinterpret_cast<const unsigned char*>(b.data()); }

std::uint32_t be16(std::string_view b, size_t i) { return (std::uint32_t(u8(b)[i]) << 8) | u8(b)[i + 1]; }
std::uint32_t be32(std::string_view b, size_t i) { return (be16(b, i) << 16) | be16(b, i + 2); }
std::uint32_t le16(std::string_view b, size_t i) { return std::uint32_t(u8(b)[i]) | (std::uint32_t(u8(b)[i + 1]) << 8); }
std::uint32_t le24(std::string_view b, size_t i) { return le16(b, i) | (std::uint32_t(u8(b)[i + 2]) << 16); }
std::uint32_t le32(std::string_view b, size_t i) { return le16(b, i) | (le16(b, i + 2) << 16); }

[[noreturn]] void corrupt(const std::string& name, ImageFormat f, const std::string& what) {
  throw InputError(fmt::format("{}: corrupt or truncated {} image: {}", name, image_format_name(f), what));
}

void need(std::string_view b, size_t n, const std::string& name, ImageFormat f, const char* where) {
  if (b.size() < n)
    corrupt(name, f, fmt::format("file ends after {} bytes, inside the {}", b.size(), where));
}

ImageInfo probe_png(std::string_view b, const std::string& name) {
  const auto f = ImageFormat::png;
  need(b, 24, name, f, "IHDR header");
  if (b.substr(12, 4) != "IHDR") corrupt(name, f, "first chunk is not IHDR");
  if (be32(b, 8) != 13) corrupt(name, f, fmt::format("IHDR length is {}, expected 13", be32(b, 8)));
  const std::uint32_t w = be32(b, 16), h = be32(b, 20);
  if (w > 0x7fffffffu || h > 0x7fffffffu) corrupt(name, f, fmt::format("invalid size {}x{}", w, h));
  return {f, int(w), int(h)};
}

bool is_jpeg_sof(unsigned m) {
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

ImageInfo probe_jpeg(std::string_view b, const std::string& name) {
  const auto f = ImageFormat::jpeg;
  size_t pos = 2;  // after SOI
  while (true) {
    // Markers: one or more 0xFF fill bytes, then the marker code.
    need(b, pos + 2, name, f, "marker segments (no SOF marker found)");
    if (u8(b)[pos] != 0xFF)
      corrupt(name, f, fmt::format("expected a marker at byte {}, found 0x{:02X}", pos, u8(b)[pos]));
    while (pos < b.size() && u8(b)[pos] == 0xFF) ++pos;
    need(b, pos + 1, name, f, "marker segments (no SOF marker found)");
    const unsigned m = u8(b)[pos++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // standalone markers
    if (m == 0xD9 || m == 0xDA) corrupt(name, f, "no SOF marker before the image data");
    need(b, pos + 2, name, f, "segment length");
    const std::uint32_t len = be16(b, pos);
    if (len < 2) corrupt(name, f, fmt::format("segment 0xFF{:02X} has invalid length {}", m, len));
    if (is_jpeg_sof(m)) {
      need(b, pos + 7, name, f, "SOF segment");
      const std::uint32_t h = be16(b, pos + 3), w = be16(b, pos + 5);
      return {f, int(w), int(h)};
    }
    pos += len;
  }
}

ImageInfo probe_webp(std::string_view b, const std::string& name) {
  const auto f = ImageFormat::webp;
  need(b, 30, name, f, "VP8 header");
  const std::string_view fourcc = b.substr(12, 4);
  if (fourcc == "VP8 ") {
    if (u8(b)[23] != 0x9D || u8(b)[24] != 0x01 || u8(b)[25] != 0x2A)
      corrupt(name, f, "bad VP8 start code");
    return {f, int(le16(b, 26) & 0x3FFF), int(le16(b, 28) & 0x3FFF)};
  }
  if (fourcc == "VP8L") {
    if (u8(b)[20] != 0x2F) corrupt(name, f, "bad VP8L signature");
    const std::uint32_t bits = le32(b, 21);
    return {f, int((bits & 0x3FFF) + 1), int(((bits >> 14) & 0x3FFF) + 1)};
  }
  if (fourcc == "VP8X") return {f, int(le24(b, 24) + 1), int(le24(b, 27) + 1)};
  corrupt(name, f, "unknown WebP chunk '" + std::string(fourcc) + "'");
}

ImageInfo probe_bmp(std::string_view b, const std::string& name) {
  const auto f = ImageFormat::bmp;
  need(b, 18, name, f, "BMP header");
  const std::uint32_t dib = le32(b, 14);
  if (dib == 12) {  // BITMAPCOREHEADER
    need(b, 26, name, f, "BITMAPCOREHEADER");
    return {f, int(le16(b, 18)), int(le16(b, 20))};
  }
  if (dib < 16 || dib > 4096) corrupt(name, f, fmt::format("unsupported DIB header size {}", dib));
  need(b, 26, name, f, "BITMAPINFOHEADER");
  const auto w = static_cast<std::int32_t>(le32(b, 18));
  const auto h = static_cast<std::int32_t>(le32(b, 22));
  if (w < 0) corrupt(name, f, fmt::format("negative width {}", w));
  if (h == INT32_MIN) corrupt(name, f, "invalid height");
  return {f, int(w), int(h < 0 ? -h : h)};  // negative height = top-down rows
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Converts any decoded Mat (1/3/4 channels, 8/16-bit/float) to CV_8UC3 BGR.
cv::Mat to_bgr8(const cv::Mat& in) {
  cv::Mat m = in;
  if (m.depth() != CV_8U) {
    cv::Mat t;
    double scale = m.depth() == CV_16U ? 1.0 / 257.0 : (m.depth() == CV_32F || m.depth() == CV_64F ? 255.0 : 1.0);
    m.convertTo(t, CV_8U, scale);
    m = t;
  }
  if (m.channels() == 3) return m;
  cv::Mat out;
  if (m.channels() == 1) cv::cvtColor(m, out, cv::COLOR_GRAY2BGR);
  else if (m.channels() == 4) cv::cvtColor(m, out, cv::COLOR_BGRA2BGR);
  else throw InputError(fmt::format("unsupported channel count {}", m.channels()));
  return out;
}

// ---- completeness: is all the data the header announces there? ----------------------------------

// Deflate cannot expand one byte into more than ~1032 (a 258-byte match in 2 bits); Huffman-coded
// JPEG needs at least one bit per 8x8 block (a progressive DC scan; baseline needs two): at most
// 512 pixels per byte. Beyond these ratios the header's size cannot come from the file.
constexpr std::uint64_t kDeflateMaxRatio = 1032;
constexpr const char* kTruncated = "truncated image data";
constexpr const char* kCorrupt = "corrupt image data";
constexpr std::uint64_t kJpegMaxPixelsPerByte = 1024;

ImageDataProblem jpeg_problem(std::string_view b, const ImageInfo& info) {
  const size_t n = b.size();
  size_t pos = 2;  // after SOI
  unsigned sof = 0;
  while (true) {
    if (pos >= n) return {kTruncated, fmt::format("JPEG ends after {} bytes without its end-of-image marker", n)};
    if (u8(b)[pos] != 0xFF) return {kCorrupt, fmt::format("JPEG has no marker at byte {} where one is due", pos)};
    while (pos < n && u8(b)[pos] == 0xFF) ++pos;
    if (pos >= n) return {kTruncated, fmt::format("JPEG ends after {} bytes inside a marker", n)};
    const unsigned m = u8(b)[pos++];
    if (m == 0xD9) break;                                               // EOI
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;                // standalone markers
    if (pos + 2 > n) return {kTruncated, fmt::format("JPEG ends after {} bytes inside a segment header", n)};
    const std::uint32_t len = be16(b, pos);
    if (len < 2) return {kCorrupt, fmt::format("JPEG segment 0xFF{:02X} has invalid length {}", m, len)};
    if (pos + len > n)
      return {kTruncated, fmt::format("JPEG ends after {} bytes, inside a 0xFF{:02X} segment of {} bytes", n, m, len)};
    if (is_jpeg_sof(m) && !sof) sof = m;
    pos += len;
    if (m != 0xDA) continue;
    // SOS: entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart.
    while (true) {
      const void* p = std::memchr(b.data() + pos, 0xFF, n - pos);
      if (!p) return {kTruncated, fmt::format("JPEG ends after {} bytes, inside the compressed data (no end-of-image marker)", n)};
      pos = static_cast<size_t>(static_cast<const char*>(p) - b.data());
      if (pos + 1 >= n) return {kTruncated, fmt::format("JPEG ends after {} bytes, inside the compressed data", n)};
      const unsigned next = u8(b)[pos + 1];
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) pos += 2;
      else if (next == 0xFF) pos += 1;
      else break;  // a marker: back to the segment walk
    }
  }
  // Arithmetic coding (SOF9-11, 13-15) has no such bound.
  const bool huffman = sof && sof < 0xC8;
  const std::uint64_t px = std::uint64_t(info.width) * std::uint64_t(info.height);
  if (huffman && px > kJpegMaxPixelsPerByte * n)
    return {kTruncated, fmt::format("the header's {}x{} = {:.1f} MP cannot come from {} bytes of JPEG data", info.width,
                       info.height, double(px) / 1e6, n)};
  return {};
}

ImageDataProblem png_problem(std::string_view b, const ImageInfo& info) {
  const size_t n = b.size();
  size_t pos = 8;
  std::uint64_t idat = 0;
  bool iend = false;
  while (pos + 8 <= n) {
    const std::uint32_t len = be32(b, pos);
    const std::string type = quote_excerpt(b.substr(pos + 4, 4));
    if (len > 0x7FFFFFFFu) return {kCorrupt, fmt::format("PNG chunk {} at byte {} has invalid length {}", type, pos, len)};
    if (pos + 12 + std::uint64_t(len) > n)
      return {kTruncated, fmt::format("PNG ends after {} bytes, inside its {} chunk of {} bytes", n, type, len)};
    if (b.substr(pos + 4, 4) == "IDAT") idat += len;
    if (b.substr(pos + 4, 4) == "IEND") {
      iend = true;
      break;
    }
    pos += 12 + size_t(len);
  }
  if (!iend) return {kTruncated, fmt::format("PNG ends after {} bytes without its IEND chunk", n)};
  static const int kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type 0, 2, 3, 4, 6
  const unsigned depth = u8(b)[24], ctype = u8(b)[25];
  if (ctype <= 6 && kChannels[ctype] && depth >= 1 && depth <= 16) {
    const std::uint64_t row = 1 + (std::uint64_t(info.width) * kChannels[ctype] * depth + 7) / 8;
    const std::uint64_t raw = row * std::uint64_t(info.height);
    if (idat * kDeflateMaxRatio < raw)
      return {kTruncated, fmt::format("the header's {}x{} image needs at least {} bytes of compressed data, the file has {}",
                         info.width, info.height, (raw + kDeflateMaxRatio - 1) / kDeflateMaxRatio, idat)};
  }
  return {};
}

ImageDataProblem webp_problem(std::string_view b) {
  const std::uint64_t riff = std::uint64_t(le32(b, 4)) + 8;
  if (riff > b.size())
    return {kTruncated, fmt::format("WebP ends after {} of the {} bytes its RIFF header announces", b.size(), riff)};
  return {};
}

bool g_allow_truncated = false;

// Truncated / corrupt data is an InputError unless --allow-truncated.
void refuse_unless_allowed(const std::string& name, const ImageDataProblem& p) {
  if (p && !g_allow_truncated)
    throw InputError(fmt::format("{}: {} ({}; --allow-truncated accepts it)", name, p.what, p.detail));
}

// The codec's own stderr lines as one line ("" when it printed nothing).
std::string codec_line(const std::string& captured) {
  std::string out;
  size_t start = 0;
  while (start < captured.size()) {
    size_t end = captured.find('\n', start);
    if (end == std::string::npos) end = captured.size();
    std::string line = captured.substr(start, end - start);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!line.empty() && out.find(line) == std::string::npos) out += (out.empty() ? "" : "; ") + line;
    start = end + 1;
  }
  return one_line(out, 300);
}

}  // namespace

void set_allow_truncated_images(bool allow) { g_allow_truncated = allow; }
bool allow_truncated_images() { return g_allow_truncated; }

ImageDataProblem image_data_problem(std::string_view bytes, const ImageInfo& info) {
  switch (info.format) {
    case ImageFormat::jpeg: return jpeg_problem(bytes, info);
    case ImageFormat::png: return png_problem(bytes, info);
    case ImageFormat::webp: return webp_problem(bytes);
    default: return {};
  }
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::png: return "PNG";
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::webp: return "WebP";
    case ImageFormat::bmp: return "BMP";
    default: return "unknown";
  }
}

ImageFormat sniff_image_format(std::string_view b) {
  static const char png_sig[] = "\x89PNG\r\n\x1a\n";
  if (b.size() >= 8 && std::memcmp(b.data(), png_sig, 8) == 0) return ImageFormat::png;
  if (b.size() >= 3 && u8(b)[0] == 0xFF && u8(b)[1] == 0xD8 && u8(b)[2] == 0xFF) return ImageFormat::jpeg;
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") return ImageFormat::webp;
  if (b.size() >= 2 && b.substr(0, 2) == "BM") return ImageFormat::bmp;
  return ImageFormat::unknown;
}

ImageInfo probe_image_header(std::string_view bytes, const std::string& name) {
  if (bytes.empty()) throw InputError(name + ": file is empty, expected an image (" + kSupportedRead + ")");
  ImageInfo info;
  switch (sniff_image_format(bytes)) {
    case ImageFormat::png: info = probe_png(bytes, name); break;
    case ImageFormat::jpeg: info = probe_jpeg(bytes, name); break;
    case ImageFormat::webp: info = probe_webp(bytes, name); break;
    case ImageFormat::bmp: info = probe_bmp(bytes, name); break;
    default:
      throw InputError(fmt::format("{}: not a supported image (unrecognised file signature; supported: {})",
                                   name, kSupportedRead));
  }
  if (info.width <= 0 || info.height <= 0)
    throw InputError(fmt::format("{}: {} image has zero size {}x{}", name, image_format_name(info.format),
                                 info.width, info.height));
  return info;
}

std::uint64_t max_image_pixels() {
  const char* e = std::getenv("LLI_MAX_IMAGE_PIXELS");
  if (!e || !*e) return kDefaultMaxPixels;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(e, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0 || e[0] == '-')
    throw UsageError(fmt::format("LLI_MAX_IMAGE_PIXELS = '{}' is not a positive integer number of pixels", e));
  return v;
}

int max_image_side() {
  const char* e = std::getenv("LLI_MAX_IMAGE_PIXELS");
  return (e && *e) ? kRaisedMaxSide : kDefaultMaxSide;
}

void check_image_size(const ImageInfo& info, const std::string& name) {
  const std::uint64_t px = std::uint64_t(info.width) * std::uint64_t(info.height);
  const std::uint64_t max_px = max_image_pixels();
  if (px > max_px)
    throw InputError(fmt::format(
        "{}: image is {}x{} = {:.1f} MP, above the limit of {} MP (set LLI_MAX_IMAGE_PIXELS to raise it)", name,
        info.width, info.height, double(px) / 1e6, fmt::format("{:g}", double(max_px) / 1e6)));
  const int max_side = max_image_side();
  if (info.width > max_side || info.height > max_side)
    throw InputError(fmt::format("{}: image is {}x{}, above the limit of {} px per side{}", name, info.width,
                                 info.height, max_side,
                                 max_side == kDefaultMaxSide ? " (set LLI_MAX_IMAGE_PIXELS to raise it)" : ""));
}

cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name) {
  const ImageInfo info = probe_image_header(bytes, name);
  check_image_size(info, name);
  // cv::imdecode picks its reader by its own signature checks, in a fixed order (OpenCV 4.6: BMP,
  // HDR, JPEG, WebP, ..., PNG, DICOM, ...). PNG, JPEG and BMP data goes to the reader lli sniffed
  // (it checks the same magic, and no reader before it accepts that magic), but WebP data
  // whose first 32 bytes libwebp's header parser refuses falls through to the later readers, and the
  // one that can claim "RIFF....WEBP" data is OpenCV's DICOM reader ("DICM" at byte 128): GDCM
  // aborts the process on a failed assertion for malformed data (fuzz finding, crash-50dd5057...).
  // Refused before the truncation check, with --allow-truncated too: no DICOM reader for data lli
  // took for WebP (a real WebP has these 4 bytes in its compressed data with a chance of 2^-32).
  if (info.format == ImageFormat::webp && bytes.size() >= 132 && bytes.substr(128, 4) == "DICM")
    corrupt(name, info.format,
            "bytes 128-131 read 'DICM', a DICOM signature, which OpenCV would hand to its DICOM reader");
  ImageDataProblem problem = image_data_problem(bytes, info);
  refuse_unless_allowed(name, problem);
  cv::Mat decoded;
  std::string cv_error;
  bool no_memory = false;
  // libjpeg / libpng print their warnings and errors on stderr themselves: captured, and said
  // once, in lli's error or in one log line naming the file.
  const std::string codec = codec_line(capture_stderr([&] {
    try {
      const cv::Mat buf(1, int(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
      decoded = cv::imdecode(buf, cv::IMREAD_COLOR);  // 8-bit BGR, EXIF orientation applied
    } catch (const cv::Exception& e) {
      cv_error = e.err.empty() ? std::string(e.what()) : e.err;
      no_memory = e.code == cv::Error::StsNoMem || is_allocation_failure(cv_error);
    }
  }));
  if (no_memory) {
    // Not a bad file: the pixels did not fit in memory (ulimit -v, a cgroup). Exit 5, "out of
    // memory while decoding ...".
    Activity decoding(fmt::format("decoding the {}x{} {} image {}", info.width, info.height,
                                  image_format_name(info.format), name));
    throw RuntimeError(name + ": " + one_line(cv_error, 200));
  }
  if (!cv_error.empty())
    throw InputError(fmt::format("{}: cannot decode {} image: {}{}", name, image_format_name(info.format),
                                 one_line(cv_error, 200), codec.empty() ? "" : " (" + codec + ")"));
  if (decoded.empty())  // with --allow-truncated too: nothing to use
    throw InputError(fmt::format("{}: cannot decode {} image {}x{} (corrupt or truncated data{})", name,
                                 image_format_name(info.format), info.width, info.height,
                                 codec.empty() ? "" : "; " + codec));
  // libjpeg decodes corrupt data with a warning only ("Corrupt JPEG data: ..."): refused too.
  const bool jpeg = info.format == ImageFormat::jpeg;
  if (!codec.empty()) {
    const std::string said = (jpeg ? "libjpeg: " : "") + codec;
    if (problem) {
      problem.detail += "; " + said;
    } else if (jpeg && (codec.find("Corrupt JPEG data") != std::string::npos ||
                        codec.find("Premature end of JPEG") != std::string::npos)) {
      problem = {kCorrupt, said};
      refuse_unless_allowed(name, problem);
    }
  }
  if (problem)
    log_info("warning: {}: {} ({}); decoded anyway (--allow-truncated)", name, problem.what, problem.detail);
  else if (!codec.empty())
    log_info("{}: {}", name, codec);
  return to_bgr8(decoded);
}

Image read_image(const std::string& path) {
  const std::string name = path == "-" ? "<stdin>" : path;
  const std::string bytes = read_file(path, kMaxImageFileBytes);
  return Image{decode_image_bytes(bytes, name), path};
}

std::string output_image_ext(const std::string& path) {
  if (path == "-") return ".png";
  const std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp") return ext;
  throw UsageError(fmt::format("{}: unsupported output image extension '{}' (allowed: {})", path, ext,
                               kAllowedExt));
}

std::string encode_image(const cv::Mat& img, const std::string& ext_in) {
  std::string ext = lower(ext_in);
  if (!ext.empty() && ext[0] != '.') ext = "." + ext;
  std::vector<int> params;
  cv::Mat m = img;
  if (ext == ".png") {
    params = {cv::IMWRITE_PNG_COMPRESSION, 3};
  } else if (ext == ".jpg" || ext == ".jpeg") {
    ext = ".jpg";
    params = {cv::IMWRITE_JPEG_QUALITY, 95};
    if (m.channels() == 4) cv::cvtColor(img, m, cv::COLOR_BGRA2BGR);
  } else if (ext == ".webp") {
    params = {cv::IMWRITE_WEBP_QUALITY, 95};
  } else {
    throw UsageError(fmt::format("unsupported image encoding '{}' (allowed: {})", ext_in, kAllowedExt));
  }
  if (m.empty()) throw RuntimeError("encode_image: empty image");
  if (m.depth() != CV_8U || (m.channels() != 1 && m.channels() != 3 && m.channels() != 4))
    throw RuntimeError(fmt::format("encode_image: expected an 8-bit 1/3/4-channel image, got type {}", m.type()));
  std::vector<unsigned char> buf;
  bool ok = false;
  try {
    ok = cv::imencode(ext, m, buf, params);
  } catch (const cv::Exception& e) {
    throw RuntimeError(fmt::format("cannot encode {} image: {}", ext, e.err.empty() ? std::string(e.what()) : e.err));
  }
  if (!ok || buf.empty()) throw RuntimeError(fmt::format("cannot encode {} image ({}x{})", ext, m.cols, m.rows));
  return std::string(reinterpret_cast<const char*>(buf.data()), buf.size());
}

void write_image(const std::string& path, const cv::Mat& bgr) {
  const std::string ext = output_image_ext(path);
  const std::string bytes = encode_image(bgr, ext);
  write_file_atomic(path, bytes);
}

cv::Mat binarize_mask(const cv::Mat& img) {
  if (img.empty()) return cv::Mat();
  const cv::Mat src = img.depth() == CV_8U ? img : to_bgr8(img);
  cv::Mat grey;
  if (src.channels() == 3) cv::cvtColor(src, grey, cv::COLOR_BGR2GRAY);
  else if (src.channels() == 4) cv::cvtColor(src, grey, cv::COLOR_BGRA2GRAY);
  else grey = src;
  cv::Mat out;
  cv::threshold(grey, out, 127, 255, cv::THRESH_BINARY);
  return out;
}

cv::Mat read_mask(const std::string& path) { return binarize_mask(read_image(path).bgr); }

void write_mask(const std::string& path, const cv::Mat& mask) {
  if (mask.empty() || mask.type() != CV_8UC1)
    throw RuntimeError(fmt::format("{}: write_mask expects a non-empty CV_8UC1 mask, got type {}", path, mask.type()));
  cv::Mat m;
  cv::threshold(mask, m, 0, 255, cv::THRESH_BINARY);  // non-zero -> 255
  write_image(path, m);
}

void require_same_size(const cv::Mat& mask, const cv::Mat& image, const std::string& mask_path) {
  if (mask.size() != image.size())
    throw InputError(fmt::format("{}: mask is {}x{} but the image is {}x{}", mask_path, mask.cols, mask.rows,
                                 image.cols, image.rows));
}

cv::Mat make_overlay(const cv::Mat& bgr, const cv::Mat& mask, const cv::Scalar& color, double alpha) {
  cv::Mat base = to_bgr8(bgr);
  require_same_size(mask, base, "overlay mask");
  cv::Mat bin = binarize_mask(mask);
  cv::Mat out = base.clone();
  cv::Mat tint(base.size(), CV_8UC3, color);
  cv::Mat blended;
  cv::addWeighted(base, 1.0 - alpha, tint, alpha, 0.0, blended);
  blended.copyTo(out, bin);
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(bin, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  const int thickness = std::max(1, std::min(base.cols, base.rows) / 300);
  cv::drawContours(out, contours, -1, color, thickness, cv::LINE_8);
  return out;
}

}  // namespace lli
