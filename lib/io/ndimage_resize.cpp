// Ref: scipy 1.10 ndimage (_gaussian_kernel1d, gaussian_filter, zoom; ni_filters.c
// NI_Correlate1D, ni_interpolation.c NI_ZoomShift / map_coordinate), transformers 4.45
// models/owlv2/image_processing_owlv2.py `resize`. See ndimage_resize.h.
#include "io/ndimage_resize.h"

#include <opencv2/core.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "lli/error.h"

namespace lli {

namespace {

// numpy's pairwise sum of a short float64 array (n <= 128: 8 interleaved accumulators).
double numpy_sum(const std::vector<double>& v) {
  const std::size_t n = v.size();
  if (n < 8) {
    double s = 0;  // numpy starts from -0.0; identical for these positive values
    for (double x : v) s += x;
    return s;
  }
  double r[8];
  for (int k = 0; k < 8; ++k) r[k] = v[static_cast<std::size_t>(k)];
  std::size_t i = 8;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) r[k] += v[i + static_cast<std::size_t>(k)];
  double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) s += v[i];
  return s;
}

// scipy's map_coordinate for NI_EXTEND_MIRROR (a coordinate, not an index).
double mirror_coordinate(double in, double len) {
  if (in < 0) {
    if (len <= 1) return 0;
    const double sz2 = 2.0 * len - 2.0;
    in = sz2 * static_cast<double>(static_cast<std::int64_t>(-in / sz2)) + in;
    return in <= 1 - len ? in + sz2 : -in;
  }
  if (in > len - 1) {
    if (len <= 1) return 0;
    const double sz2 = 2.0 * len - 2.0;
    in -= sz2 * static_cast<double>(static_cast<std::int64_t>(in / sz2));
    if (in >= len) in = sz2 - in;
  }
  return in;
}

// Linear interpolation taps of one output index along an axis of length n with factor f.
struct Tap2 {
  std::int64_t i0, i1;  // input indices (mirrored)
  double w0, w1;
};

std::vector<Tap2> linear_taps(int out, int n, double f) {
  std::vector<Tap2> taps(static_cast<std::size_t>(out));
  for (int o = 0; o < out; ++o) {
    double cc = static_cast<double>(o);
    cc += 0.5;
    cc *= f;
    cc -= 0.5;
    cc = mirror_coordinate(cc, static_cast<double>(n));
    const auto start = static_cast<std::int64_t>(std::floor(cc));
    const double t = cc - static_cast<double>(start);
    taps[static_cast<std::size_t>(o)] = {mirror_index(start, n), mirror_index(start + 1, n), 1.0 - t, t};
  }
  return taps;
}

double anti_alias_sigma(int in, int out) {
  const double f = static_cast<double>(in) / static_cast<double>(out);
  return std::max(0.0, (f - 1.0) / 2.0);
}

}  // namespace

std::int64_t mirror_index(std::int64_t i, std::int64_t n) {
  if (n <= 1) return 0;
  const std::int64_t period = 2 * n - 2;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

std::vector<double> gaussian_kernel1d(double sigma) {
  const int r = static_cast<int>(4.0 * sigma + 0.5);
  const double c = -0.5 / (sigma * sigma);
  std::vector<double> w(static_cast<std::size_t>(2 * r + 1));
  for (int x = -r; x <= r; ++x) {
    const double xd = static_cast<double>(x);
    w[static_cast<std::size_t>(x + r)] = std::exp(xd * (xd * c));  // numpy Polynomial: Horner
  }
  const double s = numpy_sum(w);
  for (double& v : w) v /= s;
  return w;
}

std::vector<float> ndimage_resize(const NdSource& src, int out_h, int out_w) {
  if (src.h < 1 || src.w < 1 || src.channels < 1 || !src.data || src.padded_h < src.h || src.padded_w < src.w)
    throw InputError("ndimage_resize: empty input or padding smaller than the image");
  if (out_h < 1 || out_w < 1)
    throw InputError("ndimage_resize: output size " + std::to_string(out_w) + "x" + std::to_string(out_h));
  const int H = src.padded_h, W = src.padded_w, C = src.channels;
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<float>(static_cast<double>(v) * src.rescale);
  auto at = [&](int y, int x, int c) -> float {
    if (y >= src.h || x >= src.w) return src.pad_value;
    return lut[src.data[static_cast<std::size_t>(y) * src.row_stride + static_cast<std::size_t>(x) * C + c]];
  };
  const double fy = static_cast<double>(H) / out_h, fx = static_cast<double>(W) / out_w;
  const double sy = anti_alias_sigma(H, out_h), sx = anti_alias_sigma(W, out_w);
  const std::vector<double> ky = sy > 1e-15 ? gaussian_kernel1d(sy) : std::vector<double>{1.0};
  const std::vector<double> kx = sx > 1e-15 ? gaussian_kernel1d(sx) : std::vector<double>{1.0};
  const int ry = static_cast<int>(ky.size() / 2), rx = static_cast<int>(kx.size() / 2);

  const auto ty = linear_taps(out_h, H, fy), tx = linear_taps(out_w, W, fx);
  // Rows / columns the interpolation reads, and the columns the horizontal pass reads.
  std::vector<int> row_slot(static_cast<std::size_t>(H), -1), col_slot(static_cast<std::size_t>(W), -1);
  std::vector<int> rows, cols;
  for (const auto& t : ty)
    for (auto i : {t.i0, t.i1})
      if (row_slot[static_cast<std::size_t>(i)] < 0) {
        row_slot[static_cast<std::size_t>(i)] = static_cast<int>(rows.size());
        rows.push_back(static_cast<int>(i));
      }
  for (const auto& t : tx)
    for (auto i : {t.i0, t.i1})
      if (col_slot[static_cast<std::size_t>(i)] < 0) {
        col_slot[static_cast<std::size_t>(i)] = static_cast<int>(cols.size());
        cols.push_back(static_cast<int>(i));
      }
  std::vector<char> vcol_needed(static_cast<std::size_t>(W), 0);
  for (int x : cols)
    for (int j = -rx; j <= rx; ++j) vcol_needed[static_cast<std::size_t>(mirror_index(x + j, W))] = 1;

  // filtered[slot(y)][slot(x)][c]: both Gaussian passes at the needed rows and columns.
  const std::size_t nr = rows.size(), nc = cols.size();
  std::vector<float> filtered(nr * nc * static_cast<std::size_t>(C));
  cv::parallel_for_(cv::Range(0, static_cast<int>(nr)), [&](const cv::Range& range) {
    std::vector<float> vrow(static_cast<std::size_t>(W) * static_cast<std::size_t>(C));  // axis-0 pass, one row
    for (int s = range.start; s < range.end; ++s) {
      const int y = rows[static_cast<std::size_t>(s)];
      for (int x = 0; x < W; ++x) {
        if (!vcol_needed[static_cast<std::size_t>(x)]) continue;
        for (int c = 0; c < C; ++c) {
          // NI_Correlate1D, symmetric kernel: x[i] w[r] + sum_j (x[i - j] + x[i + j]) w[r - j].
          double acc = static_cast<double>(at(y, x, c)) * ky[static_cast<std::size_t>(ry)];
          for (int j = -ry; j < 0; ++j)
            acc += (static_cast<double>(at(static_cast<int>(mirror_index(y + j, H)), x, c)) +
                    static_cast<double>(at(static_cast<int>(mirror_index(y - j, H)), x, c))) *
                   ky[static_cast<std::size_t>(ry + j)];
          vrow[static_cast<std::size_t>(x) * C + c] = static_cast<float>(acc);
        }
      }
      float* out = filtered.data() + static_cast<std::size_t>(s) * nc * C;
      for (std::size_t k = 0; k < nc; ++k) {
        const int x = cols[k];
        for (int c = 0; c < C; ++c) {
          double acc = static_cast<double>(vrow[static_cast<std::size_t>(x) * C + c]) * kx[static_cast<std::size_t>(rx)];
          for (int j = -rx; j < 0; ++j)
            acc += (static_cast<double>(vrow[static_cast<std::size_t>(mirror_index(x + j, W)) * C + c]) +
                    static_cast<double>(vrow[static_cast<std::size_t>(mirror_index(x - j, W)) * C + c])) *
                   kx[static_cast<std::size_t>(rx + j)];
          out[k * C + c] = static_cast<float>(acc);
        }
      }
    }
  });

  // zoom(order=1): weights multiplied per axis onto the value, the four taps summed in float64.
  std::vector<float> out(static_cast<std::size_t>(out_h) * out_w * C);
  for (int oy = 0; oy < out_h; ++oy) {
    const auto& a = ty[static_cast<std::size_t>(oy)];
    const float* r0 = filtered.data() + static_cast<std::size_t>(row_slot[static_cast<std::size_t>(a.i0)]) * nc * C;
    const float* r1 = filtered.data() + static_cast<std::size_t>(row_slot[static_cast<std::size_t>(a.i1)]) * nc * C;
    for (int ox = 0; ox < out_w; ++ox) {
      const auto& b = tx[static_cast<std::size_t>(ox)];
      const std::size_t c0 = static_cast<std::size_t>(col_slot[static_cast<std::size_t>(b.i0)]) * C;
      const std::size_t c1 = static_cast<std::size_t>(col_slot[static_cast<std::size_t>(b.i1)]) * C;
      float* o = out.data() + (static_cast<std::size_t>(oy) * out_w + ox) * C;
      for (int c = 0; c < C; ++c) {
        double t = 0;
        t += static_cast<double>(r0[c0 + c]) * a.w0 * b.w0;
        t += static_cast<double>(r0[c1 + c]) * a.w0 * b.w1;
        t += static_cast<double>(r1[c0 + c]) * a.w1 * b.w0;
        t += static_cast<double>(r1[c1 + c]) * a.w1 * b.w1;
        o[c] = static_cast<float>(t);
      }
    }
  }
  return out;
}

}  // namespace lli
