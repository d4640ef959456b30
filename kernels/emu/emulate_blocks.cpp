// The block-cooperative kernels (SIMT GEMM, tensor-core GEMMs with mma.sync / cp.async / ldmatrix emulated, row softmax / log-softmax and their backward, cross-entropy,
// layer / RMS norm, last-dim reduction, attention masked softmax) executed on the CPU with real threads
// (cuda_threads.h) against naive references. Run by kernels/check.sh; exits non-zero on any mismatch.
#include "cuda_threads.h"
#include "checks.h"
#include <cstdio>

#include "../cu/attention.cu"
#include "../cu/gemm_f32.cu"
#undef BM
#undef BN
#undef BK
#include "../cu/gemm_mma.cu"
#include "../cu/norm.cu"
#include "../cu/reduce.cu"
#include "../cu/softmax.cu"

static void gemm() {
  // 130 x 135 x 19, batch 2, every transpose combination, alpha 0.5, beta 2: two tiles each way, a
  // partial k step, so the bounds, both load orders and the double buffer all run.
  const u32 m = 130, n = 135, k = 19, batch = 2;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      auto a = values(m * k * batch, 1, -1, 1), b = values(k * n * batch, 2, -1, 1);
      auto c = values(m * n * batch, 3, -1, 1);
      std::vector<float> c0 = c;
      i64 a_m = ta ? 1 : k, a_k = ta ? m : 1, b_k = tb ? 1 : n, b_n = tb ? k : 1;
      emu_launch((n + 127) / 128, (m + 127) / 128, batch, 256, [&] {
        gemm_f32(a.data(), b.data(), c.data(), m, n, k, a_m, a_k, b_k, b_n, n, m * k, k * n, m * n, 0.5f, 2.0f);
      });
      std::vector<double> want(c.size());
      for (u32 z = 0; z < batch; ++z)
        for (u32 i = 0; i < m; ++i)
          for (u32 j = 0; j < n; ++j) {
            double s = 0;
            for (u32 p = 0; p < k; ++p)
              s += (double)a[z * m * k + i * a_m + p * a_k] * b[z * k * n + p * b_k + j * b_n];
            want[z * m * n + i * n + j] = 0.5 * s + 2.0 * c0[z * m * n + i * n + j];
          }
      close(ta ? (tb ? "gemm_f32 AtBt" : "gemm_f32 AtB") : (tb ? "gemm_f32 ABt" : "gemm_f32 AB"), c, want, 1e-5);
    }
}

static unsigned short to_bf16(float f) {  // round to nearest even (finite inputs)
  unsigned x = __float_as_uint(f);
  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static void gemm_tensor_cores() {
  // gemm_mma.cu with mma.sync emulated: 130 x 135 x 40 (two tiles each way, a partial k step of 32).
  const u32 m = 130, n = 135, k = 40;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      auto af = values(m * k, 11, -1, 1), bf = values(k * n, 12, -1, 1);
      std::vector<unsigned short> a(af.size()), b(bf.size());
      for (size_t i = 0; i < af.size(); ++i) a[i] = to_bf16(af[i]);
      for (size_t i = 0; i < bf.size(); ++i) b[i] = to_bf16(bf[i]);
      std::vector<float> c(m * n, NAN);
      i64 a_m = ta ? 1 : k, a_k = ta ? m : 1, b_k = tb ? 1 : n, b_n = tb ? k : 1;
      emu_launch((n + 127) / 128, (m + 127) / 128, 1, 256, [&] {
        gemm_bf16(a.data(), b.data(), c.data(), m, n, k, a_m, a_k, b_k, b_n, n, 0, 0, 0, 1.0f, 0.0f);
      });
      std::vector<double> want(c.size());
      for (u32 i = 0; i < m; ++i)
        for (u32 j = 0; j < n; ++j) {
          double s = 0;
          for (u32 p = 0; p < k; ++p)
            s += (double)emu_half_to_float(a[i * a_m + p * a_k], true) * emu_half_to_float(b[p * b_k + j * b_n], true);
          want[i * n + j] = s;
        }
      close(ta ? (tb ? "gemm_bf16 AtBt" : "gemm_bf16 AtB") : (tb ? "gemm_bf16 ABt" : "gemm_bf16 AB"), c, want, 1e-5);
    }
}

// gemm_bf16_fast / gemm_f16_fast (cp.async + ldmatrix emulated): every layout (A k- or m-contiguous, B k-
// or n-contiguous), padded leading dims, an operand offset of 8 elements, batches, alpha / beta, a C row
// stride wider than n, partial m / n tiles and k not a multiple of 32 (40: a partial second step; 136:
// five steps, so the three stages are refilled, with every warp's output stored). Padding elements hold values too, so reading one would show. main() runs it under both
// fiber schedules (warps in lockstep, and each warp running ahead to its next barrier).
static void gemm_tensor_cores_fast() {
  struct Case {
    u32 m, n, k, batch, pad;
    float alpha, beta;
  };
  const Case cases[] = {{136, 200, 136, 2, 0, 0.5f, 2.0f}, {24, 16, 40, 1, 8, 1.0f, 0.0f}, {8, 8, 8, 1, 16, -1.5f, 0.25f}};
  for (bool bf16 : {true, false})
    for (const Case& cs : cases)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          const u32 m = cs.m, n = cs.n, k = cs.k, batch = cs.batch, off = 8;
          // Leading dims: the stride of the non-contiguous dim, a multiple of 8.
          i64 lda = (ta ? m : k) + cs.pad, ldb = (tb ? k : n) + cs.pad, c_m = n + 3;
          i64 a_m = ta ? 1 : lda, a_k = ta ? lda : 1, b_k = tb ? 1 : ldb, b_n = tb ? ldb : 1;
          i64 a_batch = lda * (ta ? k : m), b_batch = ldb * (tb ? n : k), c_batch = c_m * m;
          auto af = values(off + a_batch * batch, 21 + ta, -1, 1), bf = values(off + b_batch * batch, 23 + tb, -1, 1);
          std::vector<unsigned short> a(af.size()), b(bf.size());
          for (size_t i = 0; i < af.size(); ++i) a[i] = bf16 ? to_bf16(af[i]) : f32_to_f16(af[i]);
          for (size_t i = 0; i < bf.size(); ++i) b[i] = bf16 ? to_bf16(bf[i]) : f32_to_f16(bf[i]);
          auto c = values(c_batch * batch, 25, -1, 1);
          std::vector<float> c0 = c;
          const unsigned short *pa = a.data() + off, *pb = b.data() + off;
          emu_launch((n + 127) / 128, (m + 127) / 128, batch, 256, [&] {
            if (bf16)
              gemm_bf16_fast(pa, pb, c.data(), m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, cs.alpha, cs.beta);
            else
              gemm_f16_fast(pa, pb, c.data(), m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, cs.alpha, cs.beta);
          });
          std::vector<double> want(c0.begin(), c0.end());  // the padding columns of C stay as they were
          for (u32 z = 0; z < batch; ++z)
            for (u32 i = 0; i < m; ++i)
              for (u32 j = 0; j < n; ++j) {
                double s = 0;
                for (u32 p = 0; p < k; ++p)
                  s += (double)emu_half_to_float(pa[z * a_batch + i * a_m + p * a_k], bf16) *
                       emu_half_to_float(pb[z * b_batch + p * b_k + j * b_n], bf16);
                i64 at = z * c_batch + i * c_m + j;
                want[at] = cs.alpha * s + (cs.beta == 0.0f ? 0.0 : (double)cs.beta * c0[at]);
              }
          char what[96];
          std::snprintf(what, sizeof what, "gemm_%s_fast %ux%ux%u batch %u %s%s", bf16 ? "bf16" : "f16", m, n, k, batch,
                        ta ? "At" : "A", tb ? "Bt" : "B");
          close(what, c, want, 1e-5);
        }
  // Host addresses of the 128-byte aligned tile array mirror shared-memory banks modulo 128 bytes.
  if (emu::ldmatrix_bank_conflicts && failures++ < 20)
    std::printf("gemm_*_fast: %lu ldmatrix phases with a shared-memory bank conflict\n", emu::ldmatrix_bank_conflicts);
}

static void rows() {
  const u32 rows = 3, cols = 100, threads = 128;
  auto x = values(rows * cols, 4, -4, 4), dy = values(rows * cols, 5, -1, 1);
  std::vector<float> y(rows * cols), dx(rows * cols);
  std::vector<double> want(rows * cols), wdx(rows * cols);
  for (u32 log = 0; log < 2; ++log) {
    emu_launch(rows, 1, 1, threads, [&] { softmax_f32(x.data(), y.data(), rows, cols, log); });
    emu_launch(rows, 1, 1, threads, [&] { softmax_bwd_f32(y.data(), dy.data(), dx.data(), rows, cols, log); });
    for (u32 r = 0; r < rows; ++r) {
      double mx = -1e30, z = 0, dot = 0, sdy = 0;
      for (u32 i = 0; i < cols; ++i) mx = std::fmax(mx, x[r * cols + i]);
      for (u32 i = 0; i < cols; ++i) z += std::exp(x[r * cols + i] - mx);
      for (u32 i = 0; i < cols; ++i) {
        double p = std::exp(x[r * cols + i] - mx) / z;
        dot += p * dy[r * cols + i];
        sdy += dy[r * cols + i];
      }
      for (u32 i = 0; i < cols; ++i) {
        double p = std::exp(x[r * cols + i] - mx) / z, g = dy[r * cols + i];
        want[r * cols + i] = log ? std::log(p) : p;
        wdx[r * cols + i] = log ? g - p * sdy : p * (g - dot);
      }
    }
    close(log ? "log_softmax" : "softmax", y, want, 1e-5);
    close(log ? "log_softmax backward" : "softmax backward", dx, wdx, 1e-5);
  }
  // Cross-entropy with an ignored row, forward and backward.
  int target[rows] = {7, -100, 99};
  std::vector<float> loss(rows), lse(rows);
  emu_launch(rows, 1, 1, threads, [&] { cross_entropy_f32(x.data(), target, loss.data(), lse.data(), rows, cols, -100); });
  emu_launch(rows, 1, 1, threads, [&] { cross_entropy_bwd_f32(x.data(), target, lse.data(), dx.data(), rows, cols, -100, 0.5f); });
  std::vector<double> wl(rows);
  for (u32 r = 0; r < rows; ++r) {
    double z = 0;
    for (u32 i = 0; i < cols; ++i) z += std::exp((double)x[r * cols + i]);
    wl[r] = target[r] == -100 ? 0 : std::log(z) - x[r * cols + target[r]];
    for (u32 i = 0; i < cols; ++i)
      wdx[r * cols + i] = target[r] == -100 ? 0 : 0.5 * (std::exp(x[r * cols + i]) / z - ((int)i == target[r]));
  }
  close("cross_entropy", loss, wl, 1e-5);
  close("cross_entropy backward", dx, wdx, 1e-5);
  // Last-dim sum.
  std::vector<float> s(rows);
  emu_launch(rows, 1, 1, threads, [&] { reduce_last_f32(x.data(), s.data(), rows, cols, R_SUM); });
  std::vector<double> ws(rows, 0);
  for (u32 r = 0; r < rows; ++r)
    for (u32 i = 0; i < cols; ++i) ws[r] += x[r * cols + i];
  close("reduce_last sum", s, ws, 1e-5);
}

static void norms() {
  const u32 rows = 2, cols = 70, threads = 96;
  auto x = values(rows * cols, 6, -2, 2), w = values(cols, 7, 0.5, 1.5), b = values(cols, 8, -1, 1);
  auto dy = values(rows * cols, 9, -1, 1);
  for (u32 rms = 0; rms < 2; ++rms) {
    std::vector<float> y(rows * cols), mean(rows), rstd(rows), dx(rows * cols), dw(cols, 0.0f), db(cols, 0.0f);
    const float* bias = rms ? nullptr : b.data();
    float* meanp = rms ? nullptr : mean.data();
    emu_launch(rows, 1, 1, threads, [&] { norm_f32(x.data(), w.data(), bias, y.data(), meanp, rstd.data(), rows, cols, 1e-5f, rms); });
    emu_launch(rows, 1, 1, threads, [&] {
      norm_bwd_f32(x.data(), w.data(), meanp, rstd.data(), dy.data(), dx.data(), dw.data(), rms ? nullptr : db.data(), rows, cols, rms);
    });
    // Reference forward in f64, and gradients of sum(dy * y) by central differences.
    auto forward = [&](const std::vector<double>& xs, const std::vector<double>& ws, const std::vector<double>& bs) {
      double l = 0;
      std::vector<double> out(rows * cols);
      for (u32 r = 0; r < rows; ++r) {
        double mu = 0, var = 0;
        if (!rms)
          for (u32 i = 0; i < cols; ++i) mu += xs[r * cols + i] / cols;
        for (u32 i = 0; i < cols; ++i) var += (xs[r * cols + i] - mu) * (xs[r * cols + i] - mu) / cols;
        for (u32 i = 0; i < cols; ++i) {
          out[r * cols + i] = (xs[r * cols + i] - mu) / std::sqrt(var + 1e-5) * ws[i] + (rms ? 0 : bs[i]);
          l += out[r * cols + i] * dy[r * cols + i];
        }
      }
      return std::make_pair(out, l);
    };
    std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end());
    close(rms ? "rms_norm" : "layer_norm", y, forward(xd, wd, bd).first, 1e-5);
    auto fd = [&](std::vector<double>& v, size_t i) {
      double keep = v[i], h = 1e-6;
      v[i] = keep + h;
      double up = forward(xd, wd, bd).second;
      v[i] = keep - h;
      double down = forward(xd, wd, bd).second;
      v[i] = keep;
      return (up - down) / (2 * h);
    };
    std::vector<double> wdx(rows * cols), wdw(cols), wdb(cols);
    for (size_t i = 0; i < xd.size(); ++i) wdx[i] = fd(xd, i);
    for (size_t i = 0; i < cols; ++i) wdw[i] = fd(wd, i);
    close(rms ? "rms_norm dx" : "layer_norm dx", dx, wdx, 1e-4);
    close(rms ? "rms_norm dw" : "layer_norm dw", dw, wdw, 1e-4);
    if (!rms) {
      for (size_t i = 0; i < cols; ++i) wdb[i] = fd(bd, i);
      close("layer_norm db", db, wdb, 1e-4);
    }
  }
}

static void attention() {
  const u32 batch = 2, heads = 2, q = 3, k = 5;  // 2 prefix keys
  auto s = values(batch * heads * q * k, 10, -3, 3);
  std::vector<float> got = s;
  unsigned char valid[batch * k] = {1, 1, 1, 0, 1, 0, 0, 0, 0, 0};
  emu_launch(batch * heads * q, 1, 1, 32, [&] { attention_softmax_f32(got.data(), valid, batch, heads, q, k, 1); });
  std::vector<double> want(s.size(), 0.0);
  for (u32 row = 0; row < batch * heads * q; ++row) {
    u32 qi = row % q, b = row / (heads * q);
    double mx = -1e30, z = 0;
    for (u32 j = 0; j < k; ++j)
      if (valid[b * k + j] && j <= qi + (k - q)) mx = std::fmax(mx, s[row * k + j]);
    for (u32 j = 0; j < k; ++j)
      if (valid[b * k + j] && j <= qi + (k - q)) z += std::exp(s[row * k + j] - mx);
    for (u32 j = 0; j < k; ++j)
      if (valid[b * k + j] && j <= qi + (k - q)) want[row * k + j] = std::exp(s[row * k + j] - mx) / z;
  }
  close("attention masked softmax", got, want, 1e-6);
}

int main() {
  gemm();
  gemm_tensor_cores();
  gemm_tensor_cores_fast();
  emu::sched.warp_run_ahead = true;  // again, with each warp running ahead to its next __syncthreads
  gemm_tensor_cores_fast();
  gemm_tensor_cores();
  emu::sched.warp_run_ahead = false;
  rows();
  norms();
  attention();
  if (failures) {
    std::printf("kernels block emulation: %d mismatches\n", failures);
    return 1;
  }
  std::printf("kernels block emulation: ok (gemm_f32, gemm_bf16 with emulated mma.sync, gemm_bf16/f16_fast with emulated cp.async and ldmatrix, softmax, cross-entropy, reduce_last, norms, attention)\n");
  return 0;
}
