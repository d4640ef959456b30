// What both CPU emulations (emulate.cpp, emulate_blocks.cpp) compare with: a mismatch counter that
// prints the first 20, a relative-tolerance comparison against f64 references, and deterministic inputs.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

static int failures = 0;

static void expect(bool ok, const char* what, size_t i, double got, double want) {
  if (!ok && failures++ < 20) std::printf("MISMATCH %s[%zu]: got %.9g want %.9g\n", what, i, got, want);
}

static void close(const char* what, const std::vector<float>& got, const std::vector<double>& want, double rel) {
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = rel * std::fmax(1.0, std::fabs(want[i]));
    expect(std::fabs(got[i] - want[i]) <= tol, what, i, got[i], want[i]);
  }
}

// n values in [lo, hi) from a 64-bit LCG seeded with `seed`.
static std::vector<float> values(size_t n, unsigned seed, float lo, float hi) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = lo + (hi - lo) * (float)((s >> 40) & 0xffffff) / 16777216.0f;
  }
  return v;
}
