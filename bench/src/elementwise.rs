//! Elementwise and reduction throughput on large tensors next to memcpy of the same bytes, measured
//! in the same run. GB/s counts every byte an op must read and write once; memcpy moves 2 bytes per
//! byte copied (read + write). The ratio compares against the faster of single-threaded and
//! rayon-parallel memcpy into a preallocated buffer, and also memcpy into a fresh allocation, which is
//! what an out-of-place op pays.
use engine::{DType, Tensor};
use rayon::prelude::*;
use serde_json::json;
use std::time::Instant;

fn time_best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

pub fn run(args: &[String]) -> Result<(), String> {
    let n: usize = match args.iter().position(|a| a == "--n") {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or("--n needs a number")?,
        None => 16 << 20,
    };
    let reps = 10;
    let e = |r: engine::Result<Tensor>| r.map_err(|e| e.to_string());
    let a = e(Tensor::randn(&[n / 1024, 1024], 0.0, 1.0, 1))?;
    let b = e(Tensor::randn(&[n / 1024, 1024], 0.0, 1.0, 2))?;
    let row = e(Tensor::randn(&[1024], 0.0, 1.0, 3))?;
    let n = a.numel();
    let bytes = (n * 4) as f64;

    let src = a.to_vec::<f32>().map_err(|e| e.to_string())?;
    let mut dst = vec![0.0f32; n];
    let t_serial = time_best(reps, || dst.copy_from_slice(&src));
    let t_par = time_best(reps, || {
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s))
    });
    let t_alloc = time_best(reps, || {
        let v = src.clone();
        std::hint::black_box(&v);
    });
    let memcpy_gbps = 2.0 * bytes / t_serial.min(t_par) / 1e9;
    for (name, t) in [("memcpy", t_serial), ("memcpy-rayon", t_par), ("memcpy-alloc", t_alloc)] {
        println!("{}", json!({"bench":"elementwise","op":name,"n":n,"gbps":2.0 * bytes / t / 1e9,"ms":t*1e3}));
    }

    type Op<'a> = (&'a str, f64, Box<dyn Fn() -> engine::Result<Tensor> + 'a>);
    let ops: Vec<Op> = vec![
        ("add", 3.0, Box::new(|| a.add(&b))),
        ("mul", 3.0, Box::new(|| a.mul(&b))),
        ("add-row-broadcast", 2.0, Box::new(|| a.add(&row))),
        ("affine", 2.0, Box::new(|| a.affine(2.0, 1.0))),
        ("exp", 2.0, Box::new(|| a.exp())),
        ("relu", 2.0, Box::new(|| a.relu())),
        ("gelu_tanh", 2.0, Box::new(|| a.gelu_tanh())),
        ("sum-all", 1.0, Box::new(|| a.sum_all())),
        ("sum-rows", 1.0, Box::new(|| a.sum(&[1], false))),
        ("sum-cols", 1.0, Box::new(|| a.sum(&[0], false))),
        ("to-bf16", 1.5, Box::new(|| a.to_dtype(DType::BF16))),
    ];
    for (name, traffic, f) in ops {
        let mut err = None;
        let t = time_best(reps, || {
            if let Err(e) = f() {
                err = Some(e.to_string());
            }
        });
        if let Some(e) = err {
            return Err(format!("{name}: {e}"));
        }
        let gbps = traffic * bytes / t / 1e9;
        println!(
            "{}",
            json!({"bench":"elementwise","op":name,"n":n,"gbps":gbps,"ms":t*1e3,"ratio_vs_memcpy":gbps/memcpy_gbps})
        );
    }
    Ok(())
}
