// Images and masks on disk: safe decoding (format sniffed from magic bytes, header parsed and
// size-checked BEFORE decoding), encoding by output extension, atomic writes, binary masks,
// overlay visualisation. Torch-free (lli_base).
//
// Conventions
// - Images in memory are 8-bit, 3-channel BGR cv::Mat (CV_8UC3). Grey and alpha inputs are
//   converted to BGR (alpha is dropped, not composited); 16-bit inputs are scaled to 8 bits.
// - EXIF orientation: images are loaded with their EXIF orientation APPLIED (OpenCV's
//   IMREAD_COLOR rotates JPEGs as a viewer would), so prompt coordinates refer to the image as
//   displayed, and every output is written upright without EXIF metadata.
// - Formats read: PNG, JPEG, WebP, BMP (sniffed from magic bytes; the extension is ignored).
//   Formats written: PNG, JPEG (quality 95), WebP (quality 95), chosen by the output
//   extension (case-insensitive .png/.jpg/.jpeg/.webp). Path "-" reads stdin / writes PNG to stdout.
// - Size limits, checked from the header before any pixel is decoded: at most 30000 px per
//   side and 100 megapixels. $LLI_MAX_IMAGE_PIXELS (a positive integer number of pixels)
//   replaces the pixel-count limit; while it is set the per-side limit is 65535 instead.
// - Masks are single-channel 8-bit (CV_8UC1) holding 0 or 255. They are written as 0/255 PNG
//   (JPEG/WebP extensions are accepted but lossy) and read from any image format: converted to
//   grey, then value > 127 -> 255, else 0.
// - Errors: UsageError for a bad output extension; InputError (naming the file) for unreadable,
//   unknown, truncated, oversized or undecodable inputs and mask size mismatches;
//   RuntimeError for encoder failures. cv::Exception never escapes.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace lli {

enum class ImageFormat { unknown, png, jpeg, webp, bmp };

// "PNG", "JPEG", "WebP", "BMP", "unknown".
const char* image_format_name(ImageFormat f);

// Format from the first bytes (magic numbers only).
ImageFormat sniff_image_format(std::string_view bytes);

// Width/height (and format) from the header bytes, without decoding pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::unknown;
  int width = 0;
  int height = 0;
};

// Parses the header: PNG IHDR, JPEG SOFn (walking the marker segments), WebP VP8/VP8L/VP8X,
// BMP BITMAPINFOHEADER (negative height = top-down). Throws InputError naming `name` for an
// unknown format (listing the supported ones), a truncated/corrupt header or a zero size.
// Does NOT apply the size limit (see check_image_size).
ImageInfo probe_image_header(std::string_view bytes, const std::string& name);

// Size limits (see above). max_image_pixels() reads $LLI_MAX_IMAGE_PIXELS each call
// (default 100'000'000; an invalid value is a UsageError naming the variable).
std::uint64_t max_image_pixels();
int max_image_side();
// Throws InputError, e.g. "big.png: image is 40000x40000 = 1600.0 MP, above the limit of
// 100 MP (set LLI_MAX_IMAGE_PIXELS to raise it)".
void check_image_size(const ImageInfo& info, const std::string& name);

// Cap on the bytes read for one image file (256 MiB).
constexpr std::uint64_t kMaxImageFileBytes = 256ull << 20;

// Is all the data the header announces there? Empty `what` when it is, else what is wrong and
// why: "truncated image data" for a JPEG without its end-of-image marker (or ending inside a
// segment), a PNG cut before IEND, a WebP shorter than its RIFF size, or a header whose pixel count
// cannot come from that many bytes (Huffman JPEG: over 1024 px per byte; PNG: rows needing more
// than deflate's 1032:1); "corrupt image data" for a broken JPEG marker / PNG chunk structure.
// BMP is not checked.
struct ImageDataProblem {
  std::string what;    // "" = none
  std::string detail;  // e.g. "JPEG ends after 36468 bytes, inside the compressed data (...)"
  explicit operator bool() const { return !what.empty(); }
};
ImageDataProblem image_data_problem(std::string_view bytes, const ImageInfo& info);

// Truncated or corrupt data is refused by default (PIL's LOAD_TRUNCATED_IMAGES = False is the
// precedent): InputError "<file>: truncated image data (...; --allow-truncated accepts it)", or
// "corrupt image data (libjpeg: Corrupt JPEG data: ...)". Allowed (--allow-truncated, every tool),
// the decoder's best effort is used (libjpeg fills what is missing with grey) after one warning
// line; PNG and WebP decoders still fail on a cut file.
void set_allow_truncated_images(bool allow);
bool allow_truncated_images();

// probe_image_header + check_image_size + the completeness check above + cv::imdecode (EXIF
// applied) -> CV_8UC3 BGR. `name` is used in error messages. What libjpeg / libpng print on their
// own is captured and said once: inside lli's error, or as one log line "<name>: libpng warning:
// ..." when the image is used.
cv::Mat decode_image_bytes(std::string_view bytes, const std::string& name);

struct Image {
  cv::Mat bgr;         // CV_8UC3
  std::string source;  // path it was read from ("-" for stdin)
};

// Reads and decodes an image file ("-" = stdin).
Image read_image(const std::string& path);

// Lower-case extension of an output path including the dot (".png"); "-" gives ".png".
// Throws UsageError naming the path and the allowed extensions if it is not one of
// .png .jpg .jpeg .webp.
std::string output_image_ext(const std::string& path);

// Encodes to bytes. `ext` is ".png", ".jpg", ".jpeg" or ".webp" (case-insensitive, dot
// optional); anything else is a UsageError. Accepts CV_8UC1/CV_8UC3/CV_8UC4.
std::string encode_image(const cv::Mat& img, const std::string& ext);

// Encodes by the extension of `path` and writes atomically ("-" = PNG on stdout).
void write_image(const std::string& path, const cv::Mat& bgr);

// Reads any supported image as a binary mask: grey, > 127 -> 255 else 0. CV_8UC1.
cv::Mat read_mask(const std::string& path);
// Binarises an in-memory image the same way (any channel count / depth 8 bit).
cv::Mat binarize_mask(const cv::Mat& img);
// Writes a mask as 0/255 (non-zero -> 255); PNG unless the extension says otherwise.
void write_mask(const std::string& path, const cv::Mat& mask);

// InputError "mask.png: mask is 320x240 but the image is 640x480" if sizes differ.
void require_same_size(const cv::Mat& mask, const cv::Mat& image, const std::string& mask_path);

// Visualisation: a copy of `bgr` with the pixels inside `mask` blended 50% with `color`
// (default red, BGR order) and the mask's outer contours drawn in the same colour
// (thickness ~ max(1, min(W,H)/300)). Same size as `bgr`, CV_8UC3.
cv::Mat make_overlay(const cv::Mat& bgr, const cv::Mat& mask,
                     const cv::Scalar& color = cv::Scalar(0, 0, 255), double alpha = 0.5);

}  // namespace lli
