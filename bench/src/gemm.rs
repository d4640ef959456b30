//! `gemm` and `fma-peak` subcommands.
//!
//! `gemm` times [`engine::cpu::gemm::sgemm`] on square shapes and on the shapes of a transformer's
//! Linear layers (C[tokens×n] = X[tokens×k]·Wᵀ with W stored [n×k] row-major, i.e. B is a
//! transposed view). `fma-peak` measures how many f32 FMAs per second the cores can retire, which
//! is the ceiling any GEMM can reach.

use engine::cpu::gemm::{sgemm, Parallelism};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One GEMM shape. `b_transposed`: B is the transposed view of a row-major [n×k] matrix.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    b_transposed: bool,
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> =
        [256, 512, 1024, 2048].iter().map(|&s| Case { m: s, n: s, k: s, b_transposed: false }).collect();
    for (n, k) in [(384, 384), (1536, 384), (384, 1536)] {
        v.push(Case { m: 2048, n, k, b_transposed: true });
    }
    v
}

/// Deterministic pseudo-random fill in [-1, 1).
fn fill(v: &mut [f32], mut seed: u64) {
    for x in v.iter_mut() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *x = ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Parses `MxNxK` with an optional `t` suffix (B transposed), e.g. `2048x384x1536t`.
fn parse_shape(s: &str) -> Option<Case> {
    let (dims, b_transposed) = match s.strip_suffix('t') {
        Some(d) => (d, true),
        None => (s, false),
    };
    let v: Vec<usize> = dims.split('x').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    match v[..] {
        [m, n, k] => Some(Case { m, n, k, b_transposed }),
        _ => None,
    }
}

struct Opts {
    serial: bool,
    budget: Duration,
    shapes: Vec<Case>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut shapes = Vec::new();
    let mut serial = false;
    let mut budget = Duration::from_millis(600);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--serial" => serial = true,
            "--shape" => {
                let v = it.next().ok_or("--shape needs a value")?;
                shapes.push(parse_shape(v).ok_or(format!("--shape {v}: want MxNxK or MxNxKt"))?);
            }
            "--ms" => {
                let v = it.next().ok_or("--ms needs a value")?;
                let ms: u64 = v.parse().map_err(|e| format!("--ms {v}: {e}"))?;
                budget = Duration::from_millis(ms);
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` (options: --serial, --ms <per-case time budget>, \
                     --shape MxNxK[t] (repeatable; t: B transposed))"
                ))
            }
        }
    }
    if shapes.is_empty() {
        shapes = cases();
    }
    Ok(Opts { serial, budget, shapes })
}

/// `bench gemm [--serial] [--ms N] [--shape MxNxK[t]]...`: one JSON line per shape (and per
/// parallelism mode). Without `--shape`, the standard square and transformer shapes.
pub fn run_gemm(args: &[String]) -> Result<(), String> {
    let Opts { serial: with_serial, budget, shapes } = parse_opts(args)?;
    let mut modes = vec![Parallelism::Rayon];
    if with_serial {
        modes.push(Parallelism::Serial);
    }
    for case in shapes {
        let Case { m, n, k, b_transposed } = case;
        let mut a = vec![0f32; m * k];
        let mut b = vec![0f32; k * n];
        let mut c = vec![0f32; m * n];
        fill(&mut a, 1);
        fill(&mut b, 2);
        // Row-major A; B either row-major [k×n] or the transposed view of row-major [n×k].
        let (rsb, csb) = if b_transposed { (1, k) } else { (n, 1) };
        for &par in &modes {
            let threads = match par {
                Parallelism::Serial => 1,
                Parallelism::Rayon => rayon::current_num_threads(),
            };
            let mut run = || {
                let t = Instant::now();
                sgemm(m, n, k, 1.0, black_box(&a), k, 1, black_box(&b), rsb, csb, 0.0, &mut c, n, 1, par);
                black_box(&mut c);
                t.elapsed().as_secs_f64()
            };
            // Warm-up: page in the buffers, size the packing buffers, spin up the pool.
            let first = run();
            run();
            let reps = ((budget.as_secs_f64() / first.max(1e-6)) as usize).clamp(5, 200);
            let mut times: Vec<f64> = (0..reps).map(|_| run()).collect();
            let flops = 2.0 * (m * n * k) as f64;
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(&mut times);
            println!(
                "{}",
                json!({
                    "bench": "gemm",
                    "impl": "engine",
                    "m": m, "n": n, "k": k,
                    "b_layout": if b_transposed { "transposed" } else { "row-major" },
                    "threads": threads,
                    "gflops": flops / best / 1e9,
                    "gflops_median": flops / med / 1e9,
                    "reps": reps,
                })
            );
        }
    }
    Ok(())
}

/// Number of independent accumulator chains. Needs ≥ FMA latency × FMA pipes (4 × 2 on current
/// x86 cores) to keep every pipe busy; 12 leaves room for the two operands in 16 ymm registers.
const CHAINS: usize = 12;

fn fma_chains_f32x8(iters: u64) -> f32 {
    // 8-lane f32 vectors. The bench crate does not depend on `wide`, so this uses the AVX2 + FMA
    // intrinsics directly (the workspace compiles for x86-64-v3); elsewhere a portable
    // `[f32; 8]` with `mul_add` stands in (only as fast as the compiler makes it).
    #[cfg(all(target_arch = "x86_64", target_feature = "fma"))]
    {
        // SAFETY: this build targets a CPU with AVX and FMA (`target_feature = "fma"` is on).
        unsafe { fma_chains_avx2(iters) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "fma")))]
    {
        let x = black_box([0.999_999_9f32; 8]);
        let y = black_box([1e-7f32; 8]);
        let mut acc = [[1f32; 8]; CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                for l in 0..8 {
                    a[l] = a[l].mul_add(x[l], y[l]);
                }
            }
        }
        acc.iter().flatten().sum()
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "fma"))]
#[target_feature(enable = "avx,fma")]
fn fma_chains_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let x = black_box(_mm256_set1_ps(0.999_999_9));
    let y = black_box(_mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = black_box(_mm256_add_ps(*a, _mm256_set1_ps(i as f32)));
    }
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut out = [0f32; 8];
    let mut s = 0f32;
    for a in acc {
        // SAFETY: `out` holds 8 f32, exactly one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), a) };
        s += out.iter().sum::<f32>();
    }
    s
}

/// Same with 512-bit vectors (16 chains, all kept in registers), if the CPU has
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    const N: usize = 16;
    let x = black_box(_mm512_set1_ps(0.999_999_9));
    let y = black_box(_mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); N];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = black_box(_mm512_add_ps(*a, _mm512_set1_ps(i as f32)));
    }
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

/// Runs `f(iters)` on `threads` threads at once (the calling thread alone when 1) and returns
/// the FMA GFLOP/s over all of them.
fn measure(threads: usize, flops_per_iter: f64, f: fn(u64) -> f32) -> f64 {
    // Calibrate to ~0.3 s per measurement.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        black_box(f(black_box(iters)));
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.05 {
            iters = (iters as f64 * 0.3 / dt) as u64;
            break;
        }
        iters *= 4;
    }
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        if threads == 1 {
            black_box(f(black_box(iters)));
        } else {
            rayon::broadcast(|_| black_box(f(black_box(iters))));
        }
        let dt = t.elapsed().as_secs_f64();
        best = best.max(threads as f64 * iters as f64 * flops_per_iter / dt / 1e9);
    }
    best
}

/// `bench fma-peak`: f32 FMA peak, one thread and all rayon threads, for 256-bit f32x8 vectors
/// and (where available) 512-bit AVX-512.
pub fn run_fma_peak(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(format!("unexpected argument `{a}`"));
    }
    let all = rayon::current_num_threads();
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    for &t in &threads {
        let g = measure(t, (CHAINS * 8 * 2) as f64, fma_chains_f32x8);
        println!("{}", json!({"bench": "fma-peak", "impl": "f32x8", "vector_bits": 256, "threads": t, "gflops": g}));
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        fn avx512(iters: u64) -> f32 {
            // SAFETY: only called after `is_x86_feature_detected!("avx512f")` returned true.
            unsafe { fma_chains_avx512(iters) }
        }
        for &t in &threads {
            let g = measure(t, (16 * 16 * 2) as f64, avx512);
            println!(
                "{}",
                json!({"bench": "fma-peak", "impl": "avx512", "vector_bits": 512, "threads": t, "gflops": g})
            );
        }
    }
    Ok(())
}
