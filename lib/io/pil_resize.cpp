// Ref: Pillow src/libImaging/Resample.c (precompute_coeffs, normalize_coeffs_8bpc,
// ImagingResample{Horizontal,Vertical}_8bpc, ImagingResampleInner), Geometry.c
// (ImagingScaleAffine for NEAREST), _imaging.c (_resize); transformers image_transforms.center_crop.
#include "io/pil_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lli/error.h"

namespace lli {

PilResample pil_resample_from_code(int code, const std::string& where) {
  if (code < 0 || code > 5)
    throw ModelError(where + ": unknown PIL resample code " + std::to_string(code) +
                     " (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)");
  return static_cast<PilResample>(code);
}

const char* pil_resample_name(PilResample r) {
  switch (r) {
    case PilResample::nearest: return "nearest";
    case PilResample::lanczos: return "lanczos";
    case PilResample::bilinear: return "bilinear";
    case PilResample::bicubic: return "bicubic";
    case PilResample::box: return "box";
    case PilResample::hamming: return "hamming";
  }
  return "?";
}

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(PilResample r) {
  switch (r) {
    case PilResample::box: return {box_filter, 0.5};
    case PilResample::bilinear: return {bilinear_filter, 1.0};
    case PilResample::hamming: return {hamming_filter, 1.0};
    case PilResample::bicubic: return {bicubic_filter, 2.0};
    case PilResample::lanczos: return {lanczos_filter, 3.0};
    case PilResample::nearest: break;
  }
  return {bilinear_filter, 1.0};  // not reached
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size).
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;      // [out * 2]: xmin, count
  std::vector<std::int32_t> k;  // [out * ksize], fixed point
};

Coeffs precompute_coeffs(int in_size, int out_size, const Filter& f) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  double scale = static_cast<double>(in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = f.support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.assign(static_cast<std::size_t>(out_size) * 2, 0);
  c.k.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
  std::vector<double> kk(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    int x = 0;
    for (; x < xmax; ++x) {
      double w = f.fn((x + xmin - center + 0.5) * ss);
      kk[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    for (x = 0; x < xmax; ++x)
      if (ww != 0.0) kk[static_cast<std::size_t>(x)] /= ww;
    for (; x < c.ksize; ++x) kk[static_cast<std::size_t>(x)] = 0;
    for (x = 0; x < c.ksize; ++x) {
      double p = kk[static_cast<std::size_t>(x)];
      c.k[static_cast<std::size_t>(xx) * c.ksize + x] =
          p < 0 ? static_cast<std::int32_t>(-0.5 + p * (1 << kPrecisionBits))
                : static_cast<std::int32_t>(0.5 + p * (1 << kPrecisionBits));
    }
    c.bounds[static_cast<std::size_t>(xx) * 2] = xmin;
    c.bounds[static_cast<std::size_t>(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline std::uint8_t clip8(std::int32_t in) {
  std::int32_t v = in >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup index
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over rows [row0, row0 + out.rows) of `in`.
void resample_horizontal(const cv::Mat& in, cv::Mat& out, int row0, const Coeffs& c) {
  const int ch = in.channels();
  for (int yy = 0; yy < out.rows; ++yy) {
    const std::uint8_t* src = in.ptr<std::uint8_t>(yy + row0);
    std::uint8_t* dst = out.ptr<std::uint8_t>(yy);
    for (int xx = 0; xx < out.cols; ++xx) {
      const int xmin = c.bounds[static_cast<std::size_t>(xx) * 2];
      const int xmax = c.bounds[static_cast<std::size_t>(xx) * 2 + 1];
      const std::int32_t* k = &c.k[static_cast<std::size_t>(xx) * c.ksize];
      for (int b = 0; b < ch; ++b) {
        std::int32_t ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; ++x) ss += static_cast<std::int32_t>(src[(x + xmin) * ch + b]) * k[x];
        dst[xx * ch + b] = clip8(ss);
      }
    }
  }
}

void resample_vertical(const cv::Mat& in, cv::Mat& out, const Coeffs& c, int row_shift) {
  const int ch = in.channels();
  for (int yy = 0; yy < out.rows; ++yy) {
    const int ymin = c.bounds[static_cast<std::size_t>(yy) * 2] - row_shift;
    const int ymax = c.bounds[static_cast<std::size_t>(yy) * 2 + 1];
    const std::int32_t* k = &c.k[static_cast<std::size_t>(yy) * c.ksize];
    std::uint8_t* dst = out.ptr<std::uint8_t>(yy);
    for (int xx = 0; xx < out.cols; ++xx) {
      for (int b = 0; b < ch; ++b) {
        std::int32_t ss = 1 << (kPrecisionBits - 1);
        for (int y = 0; y < ymax; ++y)
          ss += static_cast<std::int32_t>(in.ptr<std::uint8_t>(y + ymin)[xx * ch + b]) * k[y];
        dst[xx * ch + b] = clip8(ss);
      }
    }
  }
}

cv::Mat resize_nearest(const cv::Mat& src, int width, int height) {
  // _resize: a[0] = (box[2] - box[0]) / xsize, a[4] = (box[3] - box[1]) / ysize (float box).
  const double a0 = static_cast<double>(static_cast<float>(src.cols) - 0.0f) / width;
  const double a4 = static_cast<double>(static_cast<float>(src.rows) - 0.0f) / height;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  std::vector<int> xin(static_cast<std::size_t>(width), -1);
  double xo = 0.0 + a0 * 0.5;
  for (int x = 0; x < width; ++x) {
    int xi = coord(xo);
    if (xi >= 0 && xi < src.cols) xin[static_cast<std::size_t>(x)] = xi;
    xo += a0;
  }
  cv::Mat out = cv::Mat::zeros(height, width, src.type());
  const std::size_t px = src.elemSize();
  double yo = 0.0 + a4 * 0.5;
  for (int y = 0; y < height; ++y) {
    int yi = coord(yo);
    if (yi >= 0 && yi < src.rows) {
      const std::uint8_t* in = src.ptr<std::uint8_t>(yi);
      std::uint8_t* o = out.ptr<std::uint8_t>(y);
      for (int x = 0; x < width; ++x) {
        int xi = xin[static_cast<std::size_t>(x)];
        if (xi >= 0) std::copy(in + xi * px, in + (xi + 1) * px, o + x * px);
      }
    }
    yo += a4;
  }
  return out;
}

}  // namespace

cv::Mat pil_resize(const cv::Mat& src, int width, int height, PilResample filter) {
  if (src.empty() || src.depth() != CV_8U || src.channels() < 1 || src.channels() > 4)
    throw InputError("pil_resize: expected a non-empty 8-bit image with 1 to 4 channels");
  if (width < 1 || height < 1)
    throw InputError("pil_resize: target size " + std::to_string(width) + "x" + std::to_string(height) +
                     " must be at least 1x1");
  cv::Mat in = src.isContinuous() ? src : src.clone();
  if (width == in.cols && height == in.rows) return in.clone();
  if (filter == PilResample::nearest) return resize_nearest(in, width, height);

  const Filter f = filter_for(filter);
  const bool need_h = width != in.cols;
  const bool need_v = height != in.rows;
  Coeffs cv_ = precompute_coeffs(in.rows, height, f);
  const int ybox_first = cv_.bounds[0];
  const int ybox_last = cv_.bounds[static_cast<std::size_t>(height) * 2 - 2] +
                        cv_.bounds[static_cast<std::size_t>(height) * 2 - 1];
  cv::Mat cur = in;
  int row_shift = 0;
  if (need_h) {
    Coeffs ch = precompute_coeffs(in.cols, width, f);
    cv::Mat tmp(ybox_last - ybox_first, width, in.type());
    resample_horizontal(in, tmp, ybox_first, ch);
    cur = tmp;
    row_shift = ybox_first;
  }
  if (need_v) {
    cv::Mat out(height, cur.cols, in.type());
    resample_vertical(cur, out, cv_, row_shift);
    return out;
  }
  return cur.clone();
}

cv::Mat center_crop(const cv::Mat& src, int height, int width) {
  if (height < 1 || width < 1)
    throw InputError("center_crop: crop size " + std::to_string(width) + "x" + std::to_string(height) +
                     " must be at least 1x1");
  const int H = src.rows, W = src.cols;
  auto floordiv2 = [](int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); };
  int top = floordiv2(H - height), left = floordiv2(W - width);
  if (top >= 0 && left >= 0 && top + height <= H && left + width <= W)
    return src(cv::Rect(left, top, width, height)).clone();
  // Zero-pad centred to at least the crop size, then crop.
  const int nh = std::max(height, H), nw = std::max(width, W);
  const int top_pad = (nh - H + 1) / 2, left_pad = (nw - W + 1) / 2;  // ceil((new - old) / 2)
  cv::Mat padded = cv::Mat::zeros(nh, nw, src.type());
  src.copyTo(padded(cv::Rect(left_pad, top_pad, W, H)));
  top += top_pad;
  left += left_pad;
  const int y0 = std::max(0, top), y1 = std::min(nh, top + height);
  const int x0 = std::max(0, left), x1 = std::min(nw, left + width);
  return padded(cv::Rect(x0, y0, x1 - x0, y1 - y0)).clone();
}

}  // namespace lli
