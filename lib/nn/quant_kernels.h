// Quantized weight formats q8_0 and q4_k and their CPU matrix-vector kernels (no libtorch: raw
// pointers, row ranges; the caller owns the memory and splits rows over threads).
// Ref: llama.cpp ggml-quants.c (block_q8_0, quantize_row_q8_0, make_qkx2_quants, the q4_K
// nibble packing) and ggml-cpu's vec_dot_q8_0_q8_0 / vec_dot_q4_K_q8_K; Intel intrinsics guide
// (_mm512_dpbusd_epi32, _mm256_maddubs_epi16).
//
// ON-DISK CONTRACT. A weight matrix W is [N, K] row-major (N output rows, K inputs, as
// nn.Linear.weight), K % 32 == 0, N >= 1. Each row is cut into K/32 blocks ("groups") of 32
// consecutive inputs; block g of row n covers W[n, 32g .. 32g+31]. All arrays are row-major,
// contiguous, little-endian.
//
// q8_0 (8.5 bits per weight, llama.cpp's Q8_0 with the blocks of a row stored as two arrays):
//   qs  int8   [N, K]      q values
//   d   uint16 [N, K/32]   IEEE binary16 bits of the block scale
//   value:  W[n, 32g + i] = f16(d[n, g]) * qs[n, 32g + i]     (fp32 product)
//   quantization of a block w[0..31]: amax = max |w_i|; d = f16(amax / 127) rounded to nearest
//   even (amax / 127 above 65504 saturates to 65504); q_i = rne(w_i * (1 / d)) clamped to
//   [-127, 127], computed with the fp16-rounded d (so dequantization is consistent), 1 / d an
//   fp32 division; d = 0 and q = 0 when amax = 0 (or when amax / 127 rounds to a zero fp16).
//   rne(): round to nearest, ties to even (as llama.cpp's nearest_int), everywhere below.
//
// q4_k (4.5 bits per weight: 4-bit values, an 8-bit scale and an 8-bit minimum per block, and
// a per-row fp32 super-scale S and super-minimum M):
//   qs  uint8  [N, K/2]    two 4-bit values per byte. Block g of a row occupies bytes
//                          [16g, 16g + 16) of the row; byte j of the block holds q_j in its low
//                          nibble and q_{j+16} in its high nibble (llama.cpp's packing)
//   sc  uint8  [N, K/32]   block scale, in units of S_n
//   mn  uint8  [N, K/32]   block minimum, in units of M_n
//   row float  [N, 2]      (S_n, M_n), both >= 0 and finite
//   value:  W[n, 32g + i] = (sc[n, g] * S_n) * q_i - (mn[n, g] * M_n)  (fp32: each product in
//           parentheses is one fp32 multiplication, then one subtraction)
//   quantization of a row: per block, lo = min(min w, 0), hi = max w; the block scale d_g and
//   minimum m_g are chosen to minimise the block's squared error with q in 0..15 (start from
//   d_g = (hi - lo) / 15, m_g = -lo; then candidate scales around 15 / (hi - lo) are tried with a
//   least-squares refit of (d_g, m_g), m_g kept >= 0); then S_n = max_g d_g / 255,
//   M_n = max_g m_g / 255; the 8-bit sc is floor(d_g * (1 / S_n)) or one more, mn is floor(m_g * (1 / M_n))
//   or one more (within 0..255; 0 when S_n resp. M_n is 0): of the 4 pairs the one whose q has
//   the least squared error is stored, with q_i = clamp(rne((w_i + mn M_n) * (1 / (sc S_n))),
//   0, 15) (0 when sc S_n = 0) recomputed against the 8-bit scale and minimum.
//   Zero rows give S = M = 0 and all-zero arrays.
//
// Inputs must be finite (the caller checks the checkpoint); NaN or Inf weights give unspecified
// (but memory-safe) arrays.
//
// Kernels: the activations x [M, K] are quantized once per call to int8 per block of 32 with an
// fp32 scale (quantize_acts), as llama.cpp does for its q8_0 / q4_0 dot products; each block's
// integer dot product is exact in int32 and scaled in fp32:
//   q8_0: y[m, n] = sum_g (d_w[g] * d_x[g]) * isum_g
//   q4_k: y[m, n] = S_n * sum_g (sc_g * d_x[g]) * isum_g - M_n * sum_g (mn_g * d_x[g] * xsum_g)
// where isum_g = sum_i q_w[i] q_x[i] and xsum_g = sum_i q_x[i]. The SIMD kernels compute the same
// sums in a different fp32 order (relative difference ~1e-6).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace lli::nn::quant {

enum class QType { q8_0, q4_k };

const char* qtype_name(QType t);                    // "q8_0", "q4_k"
bool parse_qtype(const std::string& s, QType* out);  // false (and *out untouched) when unknown
double bits_per_weight(QType t);                     // 8.5, 4.5

constexpr int kBlock = 32;  // inputs per block, for both formats

// Bytes of each array for an [N, K] matrix (K % 32 == 0).
struct QSizes {
  std::int64_t qs, d, sc, mn, row;  // q8_0 uses qs, d; q4_k uses qs, sc, mn, row (floats: row * 4 bytes)
};
QSizes qsizes(QType t, std::int64_t N, std::int64_t K);

// Quantize rows [n0, n1) of a matrix w [N, K] (fp32, or bf16 bits for the _bf16 variants, so a
// 7B model needs no fp32 copy). The output pointers are the whole arrays of the matrix (row n is
// written at its offset). ModelError when K % 32 != 0. Thread-safe for disjoint row ranges.
void quantize_q8_0(const float* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::int8_t* qs,
                   std::uint16_t* d);
void quantize_q8_0_bf16(const std::uint16_t* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::int8_t* qs,
                        std::uint16_t* d);
void quantize_q4_k(const float* w, std::int64_t K, std::int64_t n0, std::int64_t n1, std::uint8_t* qs,
                   std::uint8_t* sc, std::uint8_t* mn, float* row);
void quantize_q4_k_bf16(const std::uint16_t* w, std::int64_t K, std::int64_t n0, std::int64_t n1,
                        std::uint8_t* qs, std::uint8_t* sc, std::uint8_t* mn, float* row);

// A quantized matrix viewed in place (pointers into arrays owned by the caller). q8_0: qs is
// int8 [N, K], d set, sc/mn/row unused (null). q4_k: qs is uint8 [N, K/2], sc, mn, row set, d unused.
struct QMatrix {
  QType type;
  std::int64_t N, K;
  const void* qs;
  const std::uint16_t* d;
  const std::uint8_t* sc;
  const std::uint8_t* mn;
  const float* row;
};

// Rows [n0, n1) of W as fp32 [n1 - n0, K], or as bf16 bits (round to nearest even).
void dequantize_rows(const QMatrix& w, std::int64_t n0, std::int64_t n1, float* out);
void dequantize_rows_bf16(const QMatrix& w, std::int64_t n0, std::int64_t n1, std::uint16_t* out);

// Activations quantized per block of 32: for row m and block g, d[m * K/32 + g] = amax / 127
// (fp32; 0 for a zero block), q[m * K + 32g + i] = rne(x * (1 / d)) in [-127, 127], and
// sum[m * K/32 + g] = sum_i q[m * K + 32g + i]. x is [M, K] with row stride ldx (elements).
struct QActs {
  std::int64_t M = 0, K = 0;
  std::vector<std::int8_t> q;    // [M, K]
  std::vector<float> d;          // [M, K/32]
  std::vector<std::int32_t> sum; // [M, K/32]
  // The same q reordered for the q4_k SIMD kernels (which then need no shuffles): for each group
  // of 4 blocks (128 values) the first 16 values of each of its blocks, then their last 16 (the
  // order of q4_k's low and high nibbles); a last partial group is zero-padded.
  std::vector<std::int8_t> qh;   // [M, kh()]
  std::int64_t kh() const { return (K + 127) / 128 * 128; }
};
void quantize_acts(const float* x, std::int64_t M, std::int64_t K, std::int64_t ldx, QActs* out);
void quantize_acts_bf16(const std::uint16_t* x, std::int64_t M, std::int64_t K, std::int64_t ldx, QActs* out);

// Which implementation matmul_rows runs. `automatic` = best_kernel().
enum class Kernel { automatic, reference, avx2, avx512_vnni };
// The fastest kernel this CPU supports (runtime cpuid), or the one $LLI_QUANT_KERNEL names
// (reference | avx2 | avx512_vnni); RuntimeError when that names an unknown or unsupported kernel.
Kernel best_kernel();
bool kernel_supported(Kernel k);  // reference and automatic: always
const char* kernel_name(Kernel k);  // "automatic", "reference", "avx2", "avx512_vnni"

// y[m * ldy + n] = sum_k x[m, k] W[n, k] for n in [n0, n1) and every m < x.M (fp32; y is indexed
// with absolute n, so threads splitting [0, N) write disjoint columns of the same y). Meant for
// few rows (decoding, M = 1..16); any M works. RuntimeError when x.K != w.K, the row range is
// outside [0, N] or the kernel is not supported on this CPU.
void matmul_rows(const QMatrix& w, const QActs& x, std::int64_t n0, std::int64_t n1, float* y, std::int64_t ldy,
                 Kernel k = Kernel::automatic);

}  // namespace lli::nn::quant
