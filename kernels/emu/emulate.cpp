// CPU emulation of the grid-stride kernels, called directly as one thread looping over the grid
// (cuda_threads.h's dims default to one block of one thread), each against a naive reference written
// here, plus the C Philox against Random123's known answers and the Layout struct's byte layout (which
// the Rust side, kernels::Layout, mirrors). Run by kernels/check.sh; exits non-zero on any mismatch.
#include "cuda_threads.h"
#include "checks.h"
#include <cstddef>
#include <cstdio>
#include <vector>

#include "../cu/cast.cu"
#include "../cu/dequant.cu"
#include "../cu/dropout.cu"
#include "../cu/elementwise.cu"
#include "../cu/embedding.cu"
#include "../cu/optim.cu"
#include "../cu/reduce.cu"
#include "../cu/rope.cu"
#include "../cu/select.cu"

static void layout_struct() {
  static_assert(sizeof(Layout) == 152, "Layout is 152 bytes");
  bool ok = offsetof(Layout, shape) == 0 && offsetof(Layout, stride_a) == 48 && offsetof(Layout, stride_b) == 96 &&
            offsetof(Layout, ndim) == 144;
  expect(ok, "Layout field offsets", 0, 0, 0);
}

static void philox_known_answers() {
  struct Kat {
    u32 c[4], k[2], want[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (auto& t : kats) {
    philox4x32_10(t.c, t.k[0], t.k[1]);
    for (int w = 0; w < 4; ++w) expect(t.c[w] == t.want[w], "philox known answer", w, t.c[w], t.want[w]);
  }
}

static void dropout() {
  size_t n = 1001;
  auto x = values(n, 1, -1, 1);
  std::vector<float> y(n);
  float p = 0.4f;
  u64 seed = 0x0123456789abcdefull, offset = 5;
  dropout_f32(x.data(), y.data(), n, p, seed, offset);
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    u64 ctr = i / 4 + offset;
    u32 c[4] = {(u32)ctr, (u32)(ctr >> 32), 0, 0};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    bool keep = c[i % 4] >= (u32)(p * 4294967296.0);
    kept += keep;
    float want = keep ? x[i] * (1.0f / (1.0f - p)) : 0.0f;
    expect(y[i] == want, "dropout", i, y[i], want);
  }
  expect(kept > 540 && kept < 660, "dropout keep rate", 0, kept, 0.6 * n);
}

static void elementwise() {
  // out[2][3][4] = a (a [4][3][2] tensor permuted to [2, 3, 4]) op b (a [3][1] column broadcast).
  size_t shape[3] = {2, 3, 4};
  auto a = values(24, 2, 0.5f, 2.0f);
  auto b = values(3, 3, 0.5f, 2.0f);
  Layout l = {};
  l.ndim = 3;
  i64 sa[3] = {1, 2, 6}, sb[3] = {0, 1, 0};
  for (int d = 0; d < 3; ++d) {
    l.shape[d] = shape[d];
    l.stride_a[d] = sa[d];
    l.stride_b[d] = sb[d];
  }
  std::vector<float> out(24);
  binary_f32(a.data(), b.data(), out.data(), l, 24, B_DIV);
  std::vector<double> want(24);
  for (size_t i = 0; i < 2; ++i)
    for (size_t j = 0; j < 3; ++j)
      for (size_t k = 0; k < 4; ++k) want[(i * 3 + j) * 4 + k] = (double)a[i + 2 * j + 6 * k] / b[j];
  close("binary div, permuted / broadcast", out, want, 1e-6);
  unary_f32(a.data(), out.data(), l, 24, U_GELU_ERF, 0.0f);
  for (size_t i = 0; i < 2; ++i)
    for (size_t j = 0; j < 3; ++j)
      for (size_t k = 0; k < 4; ++k) {
        double x = a[i + 2 * j + 6 * k];
        want[(i * 3 + j) * 4 + k] = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
      }
  close("unary gelu, permuted", out, want, 1e-6);
  // The GELU-tanh backward against a central difference of the forward.
  auto xs = values(24, 4, -3, 3);
  std::vector<float> ones(24, 1.0f), d(24);
  Layout c = {};
  c.ndim = 1;
  c.shape[0] = 24;
  c.stride_a[0] = c.stride_b[0] = 1;
  binary_f32(xs.data(), ones.data(), d.data(), c, 24, B_GELU_TANH_BWD);
  for (size_t i = 0; i < 24; ++i) {
    auto f = [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); };
    want[i] = (f(xs[i] + 1e-5) - f(xs[i] - 1e-5)) / 2e-5;
  }
  close("gelu tanh backward", d, want, 1e-4);
}

static void reduce_and_embedding() {
  u32 outer = 3, len = 5, inner = 4;
  auto x = values(outer * len * inner, 5, -1, 1);
  std::vector<float> y(outer * inner);
  reduce_mid_f32(x.data(), y.data(), outer, len, inner, R_MAX);
  std::vector<double> want(outer * inner, -1e30);
  for (u32 o = 0; o < outer; ++o)
    for (u32 j = 0; j < len; ++j)
      for (u32 i = 0; i < inner; ++i) want[o * inner + i] = std::fmax(want[o * inner + i], x[(o * len + j) * inner + i]);
  close("reduce max, middle dim", y, want, 0);
  u32 vocab = 6, dim = 3, ids[4] = {5, 0, 5, 2};
  auto table = values(vocab * dim, 6, -1, 1);
  std::vector<float> out(4 * dim), dtable(vocab * dim, 0.0f);
  embedding_f32(ids, table.data(), out.data(), 4, dim, vocab);
  embedding_bwd_f32(ids, out.data(), dtable.data(), 4, dim, vocab);
  std::vector<double> w(4 * dim), dw(vocab * dim, 0.0);
  for (u32 n = 0; n < 4; ++n)
    for (u32 d = 0; d < dim; ++d) {
      w[n * dim + d] = table[ids[n] * dim + d];
      dw[ids[n] * dim + d] += table[ids[n] * dim + d];
    }
  close("embedding", out, w, 0);
  close("embedding backward", dtable, dw, 1e-7);
}

static void rope_and_optim() {
  u32 batch = 2, heads = 1, seq = 3, hd = 4, half = 2;
  auto x = values(batch * heads * seq * hd, 7, -1, 1);
  auto cs = values(seq * hd, 8, -1, 1), sn = values(seq * hd, 9, -1, 1);
  std::vector<float> y(x.size()), back(x.size());
  rope_f32(x.data(), cs.data(), sn.data(), y.data(), batch, heads, seq, hd, 0, 0);
  std::vector<double> want(x.size());
  for (u32 r = 0; r < batch * heads * seq; ++r) {
    u32 t = r % seq;
    for (u32 j = 0; j < hd; ++j) {
      double rot = j < half ? -x[r * hd + j + half] : x[r * hd + j - half];
      want[r * hd + j] = x[r * hd + j] * cs[t * hd + j] + rot * sn[t * hd + j];
    }
  }
  close("rope", y, want, 1e-6);
  // The transposed map is the adjoint: <R x, x> == <x, R^T x>.
  rope_f32(x.data(), cs.data(), sn.data(), back.data(), batch, heads, seq, hd, 0, 1);
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    lhs += (double)y[i] * x[i];
    rhs += (double)x[i] * back[i];
  }
  expect(std::fabs(lhs - rhs) < 1e-5, "rope adjoint", 0, lhs, rhs);

  size_t n = 7;
  auto p = values(n, 10, -1, 1), g = values(n, 11, -1, 1);
  std::vector<float> m(n, 0.0f), v(n, 0.0f), p1 = p;
  adamw_f32(p1.data(), g.data(), m.data(), v.data(), n, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f);
  for (size_t i = 0; i < n; ++i) {
    double pi = p[i] * (1 - 0.1 * 0.01), mi = 0.1 * g[i], vi = 0.001 * g[i] * g[i];
    want[i] = pi - 0.1 * (mi / 0.1) / (std::sqrt(vi / 0.001) + 1e-8);
  }
  close("adamw first step", p1, std::vector<double>(want.begin(), want.begin() + n), 1e-5);
  std::vector<float> buf(n, 0.0f), p2 = p;
  sgd_f32(p2.data(), g.data(), buf.data(), n, 0.5f, 0.9f, 0.1f, 1);
  sgd_f32(p2.data(), g.data(), buf.data(), n, 0.5f, 0.9f, 0.1f, 0);
  for (size_t i = 0; i < n; ++i) {
    double q = p[i], d1 = g[i] + 0.1 * q;
    q -= 0.5 * d1;
    double d2 = 0.9 * d1 + g[i] + 0.1 * q;
    want[i] = q - 0.5 * d2;
  }
  close("sgd two momentum steps", p2, std::vector<double>(want.begin(), want.begin() + n), 1e-6);
}

static void bf16_cast() {
  std::vector<float> x = {1.0f, 1.00390625f, 1.01171875f, -2.5f, 3.0e38f, 1e-40f, INFINITY};
  x.push_back(__uint_as_float(0x3f808000u));  // exactly halfway between two bf16: rounds to even (down)
  x.push_back(__uint_as_float(0x3f818000u));  // halfway, rounds to even (up)
  std::vector<u16> h(x.size());
  std::vector<float> back(x.size());
  cast_f32_bf16(x.data(), h.data(), x.size());
  cast_bf16_f32(h.data(), back.data(), x.size());
  u16 want[] = {0x3f80, 0x3f80, 0x3f82, 0xc020, 0x7f62, 0x0001, 0x7f80, 0x3f80, 0x3f82};
  for (size_t i = 0; i < x.size(); ++i) {
    expect(h[i] == want[i], "f32 -> bf16 bits", i, h[i], want[i]);
    expect(__float_as_uint(back[i]) == ((u32)h[i] << 16), "bf16 -> f32", i, back[i], 0);
  }
}

static void f16_cast() {
  std::vector<float> x = {1.0f, -2.5f, 65504.0f, 70000.0f, 6.0e-8f, 1.0f / 3.0f, INFINITY};
  x.push_back(__uint_as_float(0x3f801000u));  // exactly halfway between two f16: rounds to even (down)
  x.push_back(__uint_as_float(0x3f803000u));  // halfway, rounds to even (up)
  std::vector<u16> h(x.size());
  std::vector<float> back(x.size());
  cast_f32_f16(x.data(), h.data(), x.size());
  cast_f16_f32(h.data(), back.data(), x.size());
  u16 want[] = {0x3c00, 0xc100, 0x7bff, 0x7c00, 0x0001, 0x3555, 0x7c00, 0x3c00, 0x3c02};
  float want_back[] = {1.0f, -2.5f, 65504.0f, INFINITY, 5.9604644775390625e-8f, 0.333251953125f, INFINITY, 1.0f, 1.001953125f};
  for (size_t i = 0; i < x.size(); ++i) {
    expect(h[i] == want[i], "f32 -> f16 bits", i, h[i], want[i]);
    expect(back[i] == want_back[i], "f16 -> f32", i, back[i], want_back[i]);
  }
}

// select.cu: strided copies into a slice of a larger output, where over three broadcast inputs (with a
// -inf fill), comparisons with NaN, and the u8 <-> f32 casts, each against a naive loop.
static void select_kernels() {
  auto set = [](Layout& l, std::vector<size_t> shape, std::vector<i64> sa, std::vector<i64> sb) {
    l = Layout{};
    l.ndim = (u32)shape.size();
    for (size_t d = 0; d < shape.size(); ++d) {
      l.shape[d] = shape[d];
      l.stride_a[d] = sa[d];
      l.stride_b[d] = sb[d];
    }
  };
  // x: a [5][3] buffer read transposed as [3, 5]; written into columns 2..7 of a [3, 9] output (the
  // host passes the slice's address and the output's strides). The other columns stay untouched.
  auto x = values(15, 20, -1, 1);
  std::vector<float> y(27, 7.0f);
  Layout l;
  set(l, {3, 5}, {1, 3}, {9, 1});
  copy_strided_f32(x.data(), y.data() + 2, l, 15);
  std::vector<double> want(27, 7.0);
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = 0; j < 5; ++j) want[i * 9 + 2 + j] = x[j * 3 + i];
  close("copy_strided into a slice", y, want, 0);

  // out[2][3][4] = mask (a [3][1] column, u8) ? a (a [4] row) : b (a [4][3][2] buffer permuted).
  u8 mask[3] = {1, 0, 7};
  std::vector<float> a = {-INFINITY, 1.5f, -2.0f, 0.25f};
  auto b = values(24, 21, -1, 1);
  Layout ma, lb;
  set(ma, {2, 3, 4}, {0, 1, 0}, {0, 0, 1});
  set(lb, {2, 3, 4}, {1, 2, 6}, {0, 0, 0});
  std::vector<float> out(24);
  where_f32(mask, a.data(), b.data(), out.data(), ma, lb, 24);
  want.assign(24, 0.0);
  for (size_t i = 0; i < 2; ++i)
    for (size_t j = 0; j < 3; ++j)
      for (size_t k = 0; k < 4; ++k) want[(i * 3 + j) * 4 + k] = mask[j] ? a[k] : b[i + 2 * j + 6 * k];
  for (size_t i = 0; i < 24; ++i) expect(out[i] == (float)want[i], "where, broadcast / -inf", i, out[i], want[i]);

  // compare a [2, 3] against a broadcast row, NaN on either side.
  std::vector<float> ca = {1.0f, NAN, -0.0f, 2.0f, 3.0f, NAN};
  std::vector<float> cb = {1.0f, 1.0f, 0.0f};
  set(l, {2, 3}, {3, 1}, {0, 1});
  std::vector<u8> cmp(6);
  for (u32 op : {(u32)C_GE, (u32)C_GT, (u32)C_EQ, (u32)C_NE}) {
    compare_f32(ca.data(), cb.data(), cmp.data(), l, 6, op);
    for (size_t i = 0; i < 6; ++i) {
      float p = ca[i], q = cb[i % 3];
      bool w = op == C_GE ? p >= q : op == C_GT ? p > q : op == C_EQ ? p == q : p != q;
      expect(cmp[i] == (w ? 1 : 0), "compare", op * 6 + i, cmp[i], w);
    }
  }

  std::vector<u8> bytes = {0, 1, 128, 255};
  std::vector<float> wide(4);
  cast_u8_f32(bytes.data(), wide.data(), 4);
  close("u8 -> f32", wide, {0.0, 1.0, 128.0, 255.0}, 0);
  std::vector<float> f = {-3.5f, -0.5f, 0.0f, 0.99f, 1.0f, 200.7f, 255.0f, 255.5f, 1e9f, NAN, INFINITY, -INFINITY};
  u8 want_u8[] = {0, 0, 0, 0, 1, 200, 255, 255, 255, 0, 255, 0};  // Rust's saturating `as u8`
  std::vector<u8> narrow(f.size());
  cast_f32_u8(f.data(), narrow.data(), f.size());
  for (size_t i = 0; i < f.size(); ++i) expect(narrow[i] == want_u8[i], "f32 -> u8", i, narrow[i], want_u8[i]);
}

// bitsandbytes 4-bit dequantization of elements [start, start + n) of an odd-sized matrix (odd start, so
// the first element is a low nibble; a partial last block), with plain and double-quantized absmax,
// against a naive decode. Exact: the same two roundings (product, then sum) in the same order.
static void dequant_bnb4() {
  const size_t total = 3 * 67, blocksize = 64, blocks = (total + blocksize - 1) / blocksize, nested = 2;
  std::vector<u8> packed((total + 1) / 2);
  auto noise = values(packed.size(), 30, 0, 256);
  for (size_t i = 0; i < packed.size(); ++i) packed[i] = (u8)noise[i];
  auto levels = values(16, 31, -1, 1);
  levels[8] = -0.0f;
  auto absmax = values(blocks, 32, 0.01f, 3);
  std::vector<u8> codes = {3, 250, 128, 17};
  auto nested_code = values(256, 33, -1, 1);
  std::vector<float> nested_absmax = {0.7f, 1.3f};
  const float offset = 0.3141f;
  const size_t start = 5, n = total - start;
  auto code_of = [&](size_t e) { return (e & 1) ? packed[e / 2] & 15 : packed[e / 2] >> 4; };
  std::vector<float> out(n, NAN), want(n);
  dequant_bnb4_f32(packed.data(), levels.data(), absmax.data(), out.data(), start, n, blocksize);
  for (size_t i = 0; i < n; ++i) {
    size_t e = start + i;
    volatile float w = levels[code_of(e)] * absmax[e / blocksize];
    want[i] = w;
    expect(std::memcmp(&out[i], &want[i], 4) == 0, "dequant_bnb4 plain", i, out[i], want[i]);
  }
  out.assign(n, NAN);
  dequant_bnb4_dq_f32(packed.data(), levels.data(), codes.data(), nested_code.data(), nested_absmax.data(), offset,
                      out.data(), start, n, blocksize, nested);
  for (size_t i = 0; i < n; ++i) {
    size_t e = start + i, b = e / blocksize;
    volatile float prod = nested_code[codes[b]] * nested_absmax[b / nested];
    volatile float scale = prod + offset;
    volatile float w = levels[code_of(e)] * scale;
    want[i] = w;
    expect(std::memcmp(&out[i], &want[i], 4) == 0, "dequant_bnb4 double quant", i, out[i], want[i]);
  }
}

int main() {
  layout_struct();
  philox_known_answers();
  dropout();
  elementwise();
  reduce_and_embedding();
  rope_and_optim();
  bf16_cast();
  f16_cast();
  select_kernels();
  dequant_bnb4();
  if (failures) {
    std::printf("kernels CPU emulation: %d mismatches\n", failures);
    return 1;
  }
  std::printf("kernels CPU emulation: ok (layout, philox, dropout, elementwise, reduce, embedding, rope, optim, bf16, f16, select, dequant)\n");
  return 0;
}
