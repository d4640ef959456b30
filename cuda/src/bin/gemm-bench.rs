//! GEMM throughput of our kernels on the GPU: one JSON line per (dtype, m, n, k) with the median time of
//! timed runs after warm-up. `cuda/device-check.sh` runs this next to `cuda/torch_gemm.py` (PyTorch's
//! matmul on the same shapes, same JSON) and prints the ratios; speed is never asserted in tests.
//! usage: gemm-bench [MxNxK ...]   (default: 4096x4096x4096 and a few transformer shapes)

use cuda::ops::{gemm_f32, gemm_half};
use cuda::{Device, GemmShape};
use std::time::Instant;

const DEFAULT_SHAPES: [(usize, usize, usize); 4] =
    [(4096, 4096, 4096), (8192, 2048, 2048), (8192, 8192, 2048), (8192, 2048, 8192)];

fn parse(s: &str) -> Option<(usize, usize, usize)> {
    let v: Vec<usize> = s.split('x').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match v.as_slice() {
        [m, n, k] => Some((*m, *n, *k)),
        _ => None,
    }
}

fn time(dev: &Device, mut run: impl FnMut() -> cuda::Result<()>) -> cuda::Result<f64> {
    for _ in 0..3 {
        run()?;
    }
    dev.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        run()?;
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shapes: Vec<_> = if args.is_empty() {
        DEFAULT_SHAPES.to_vec()
    } else {
        args.iter().map(|a| parse(a).ok_or_else(|| format!("bad shape {a:?}, want MxNxK"))).collect::<Result<_, _>>()?
    };
    let dev = Device::new(0)?;
    let (major, minor) = Device::driver_version()?;
    let (cc_major, cc_minor) = dev.compute_capability()?;
    eprintln!("{}: compute capability {cc_major}.{cc_minor}, driver CUDA {major}.{minor}", dev.name()?);
    for (m, n, k) in shapes {
        let g = GemmShape::row_major(m, n, k, 1, false, false);
        let flops = 2.0 * (m * n * k) as f64;
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut c = dev.zeros::<f32>(m * n)?;
        let (da, db) = (dev.upload(&a)?, dev.upload(&b)?);
        let t = time(&dev, || gemm_f32(&dev, &da, &db, &mut c, &g))?;
        println!(
            r#"{{"impl":"ours","dtype":"f32","m":{m},"n":{n},"k":{k},"seconds":{t},"tflops":{}}}"#,
            flops / t / 1e12
        );
        let to_bf16 = |v: &[f32]| v.iter().map(|x| (x.to_bits() >> 16) as u16).collect::<Vec<u16>>();
        let (ha, hb) = (dev.upload(&to_bf16(&a))?, dev.upload(&to_bf16(&b))?);
        let t = time(&dev, || gemm_half(&dev, &ha, &hb, &mut c, &g, true))?;
        println!(
            r#"{{"impl":"ours","dtype":"bf16","m":{m},"n":{n},"k":{k},"seconds":{t},"tflops":{}}}"#,
            flops / t / 1e12
        );
    }
    Ok(())
}
