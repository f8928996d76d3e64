// Ref: transformers CLIPAttention / LlamaAttention eager paths (v4.45); see attention.h.
#include "nn/attention.h"

#include <algorithm>
#include <limits>
#include <string>

#include "lli/error.h"
#include "nn/attention_bf16.h"

namespace lli::nn {

torch::Tensor causal_mask(std::int64_t lq, std::int64_t lk, std::int64_t offset, torch::Dtype dtype,
                          torch::Device device) {
  auto opts = torch::TensorOptions().device(device);
  auto i = torch::arange(lq, opts.dtype(torch::kInt64)).unsqueeze(1);  // [Lq, 1]
  auto j = torch::arange(lk, opts.dtype(torch::kInt64)).unsqueeze(0);  // [1, Lk]
  auto hidden = j > (i + offset);                                      // [Lq, Lk]
  double lowest = dtype == torch::kFloat64 ? std::numeric_limits<double>::lowest()
                  : dtype == torch::kBFloat16 ? -3.3895313892515355e38
                  : dtype == torch::kFloat16  ? -65504.0
                                              : static_cast<double>(std::numeric_limits<float>::lowest());
  return torch::zeros({lq, lk}, opts.dtype(dtype)).masked_fill(hidden, lowest);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask, const AttentionOptions& opt) {
  // Few bf16 query rows on CPU (decoding): one fused pass over the KV cache (nn/attention_bf16.h).
  if (attention_bf16_applicable(q, k, v, mask, opt)) return attention_bf16(q, k, v, opt);
  // q: [B, H, Lq, D], k/v: [B, Hkv, Lk, D]
  const auto B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3);
  const auto Hkv = k.size(1), Lk = k.size(2);
  if (Hkv <= 0 || H % Hkv != 0)
    throw RuntimeError("attention: " + std::to_string(H) + " query heads are not a multiple of " +
                       std::to_string(Hkv) + " key/value heads");
  const auto n_rep = H / Hkv;
  const bool rel = opt.rel_h.defined() || opt.rel_w.defined();
  if (rel && (!opt.rel_h.defined() || !opt.rel_w.defined() || n_rep != 1 ||
              opt.rel_h.size(-1) * opt.rel_w.size(-1) != Lk))
    throw RuntimeError("attention: decomposed relative-position bias needs rel_h and rel_w with kh * kw = " +
                       std::to_string(Lk) + " keys and no grouped-query heads");

  if (rel) {
    // Fold the bias into the product: [q * scale | rel_h | rel_w] . [k | onehot(kh(j)) | onehot(kw(j))]
    // = q k^T * scale + rel_h[kh(j)] + rel_w[kw(j)] for key j = kh(j) * kw + kw(j). One GEMM of
    // depth D + kh + kw instead of the GEMM and two broadcast adds over the [Lq, Lk] scores.
    if (opt.scale_mode != AttentionScale::multiply_query)
      throw RuntimeError("attention: the relative-position bias needs the multiply_query scale mode");
    const auto kh = opt.rel_h.size(-1), kw = opt.rel_w.size(-1);
    const auto dt = q.scalar_type();
    auto j = torch::arange(Lk, torch::TensorOptions().dtype(torch::kInt64).device(q.device()));
    auto cols = torch::stack({j.div(kw, "floor"), j.remainder(kw) + kh}, 1);  // [Lk, 2]
    auto onehot = torch::zeros({Lk, kh + kw}, q.options()).scatter_(1, cols, 1.0);  // [Lk, kh + kw]
    auto qq = torch::cat({opt.scale == 1.0 ? q : q * opt.scale, opt.rel_h.to(dt).expand({B, H, Lq, kh}),
                          opt.rel_w.to(dt).expand({B, H, Lq, kw})},
                         -1);                                                    // [B, H, Lq, D + kh + kw]
    auto kk = torch::cat({k, onehot.expand({B, Hkv, Lk, kh + kw})}, -1);         // [B, H, Lk, D + kh + kw]
    AttentionOptions o = opt;
    o.scale = 1.0;
    o.rel_h = o.rel_w = torch::Tensor();
    return attention(qq, kk, v, mask, o);
  }

  if (opt.q_chunk > 0 && Lq > opt.q_chunk) {
    auto out = torch::empty({B, H, Lq, v.size(3)}, q.options());
    for (std::int64_t s = 0; s < Lq; s += opt.q_chunk) {
      const auto n = std::min(opt.q_chunk, Lq - s);
      AttentionOptions o = opt;
      o.q_chunk = 0;
      o.causal_offset = opt.causal_offset + s;
      torch::Tensor m = mask;
      if (m.defined() && m.dim() >= 2 && m.size(-2) == Lq) m = m.narrow(-2, s, n);
      out.narrow(2, s, n).copy_(attention(q.narrow(2, s, n), k, v, m, o));
    }
    return out;
  }

  torch::Tensor qs = q;
  if (opt.scale_mode == AttentionScale::multiply_query && opt.scale != 1.0) qs = q * opt.scale;

  if (Lk <= 16 && Lq >= 64 && n_rep == 1 && !mask.defined() && !opt.causal) {
    // Few keys, many queries (SAM's image-to-token attention): a softmax over a short last axis
    // pays per-row overhead on CPU. Scores transposed [.., Lk, Lq], normalised along dim -2 (the
    // kernel then vectorises over the long contiguous query axis); same math.
    auto st = torch::matmul(k, qs.transpose(-2, -1));  // [B, H, Lk, Lq]
    if (opt.scale_mode == AttentionScale::divide_scores) st = st / opt.scale;
    torch::Tensor pt;
    if (opt.softmax_fp32 && st.scalar_type() != torch::kFloat32 && st.scalar_type() != torch::kFloat64)
      pt = torch::softmax(st, -2, torch::kFloat32).to(q.scalar_type());
    else
      pt = torch::softmax(st, -2);
    return torch::matmul(pt.transpose(-2, -1), v);  // [B, H, Lq, Dv]
  }

  // Additive mask [.., Lq, Lk] in the scores' dtype (causal part and/or the caller's mask).
  torch::Tensor add;
  if (opt.causal) add = causal_mask(Lq, Lk, opt.causal_offset, q.scalar_type(), q.device());
  if (mask.defined()) add = add.defined() ? add + mask.to(q.scalar_type()) : mask.to(q.scalar_type());

  torch::Tensor scores, vv = v;
  bool grouped = false;
  if (n_rep > 1 && (!mask.defined() || mask.dim() <= 2)) {
    // GQA without copying k/v: fold the n_rep query heads of each kv head into the row dimension.
    // qg: [B, Hkv, n_rep * Lq, D]
    auto qg = qs.reshape({B, Hkv, n_rep * Lq, D});
    scores = torch::matmul(qg, k.transpose(-2, -1));  // [B, Hkv, n_rep*Lq, Lk]
    if (add.defined()) add = add.repeat({n_rep, 1});  // [n_rep*Lq, Lk]
    grouped = true;
  } else {
    torch::Tensor kk = k;
    if (n_rep > 1) {
      kk = k.unsqueeze(2).expand({B, Hkv, n_rep, Lk, D}).reshape({B, H, Lk, D});
      vv = v.unsqueeze(2).expand({B, Hkv, n_rep, Lk, D}).reshape({B, H, Lk, D});
    }
    scores = torch::matmul(qs, kk.transpose(-2, -1));  // [B, H, Lq, Lk]
  }
  if (opt.scale_mode == AttentionScale::divide_scores) scores = scores / opt.scale;
  if (add.defined()) scores = scores + add;

  torch::Tensor probs;
  if (opt.softmax_fp32 && scores.scalar_type() == torch::kBFloat16 && scores.device().is_cpu())
    // libtorch's CPU bf16 softmax accumulates in fp32: bit-identical to the fp32 softmax rounded
    // to bf16 (checked on 60M random scores), without the fp32 copies (~4x faster).
    probs = torch::softmax(scores, -1);
  else if (opt.softmax_fp32)
    probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  else
    probs = torch::softmax(scores, -1);

  auto out = torch::matmul(probs, vv);  // [B, Hkv, n_rep*Lq, D] or [B, H, Lq, D]
  if (grouped) out = out.reshape({B, H, Lq, D});
  return out;
}

}  // namespace lli::nn
