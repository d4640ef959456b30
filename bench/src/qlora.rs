//! 4-bit (bitsandbytes NF4 + double quantization) kernels next to their f32 baselines, measured in
//! the same run:
//! - `dequant`: dequantizing a 4096×4096 matrix, GB/s of f32 output, next to a memcpy of the same
//!   output size (read + write, the faster of one thread and rayon);
//! - `qlinear`: forward + backward (input gradient; the weight is frozen in both) of the 4-bit Linear
//!   next to the f32 Linear of the same shape, on the LLaMA shapes of the train-step benchmark
//!   (runs alternate, best of 15 each).
use engine::nn::Linear;
use engine::quant::bnb4::{Bnb4bit, QuantType};
use engine::quant::PackedMatrix;
use engine::Tensor;
use rayon::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn e<T>(r: engine::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn median_time(reps: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[reps / 2])
}

fn nf4_dq(rows: usize, cols: usize, seed: u64) -> Result<Bnb4bit, String> {
    let w = e(e(Tensor::randn(&[rows, cols], 0.0, 0.02, seed))?.to_vec::<f32>())?;
    e(Bnb4bit::quantize(&w, [rows, cols], QuantType::Nf4, 64, true))
}

pub fn run_dequant(_args: &[String]) -> Result<(), String> {
    let (r, c) = (4096, 4096);
    let q = nf4_dq(r, c, 1)?;
    let mut out = vec![0f32; r * c];
    let src = vec![1f32; r * c];
    let bytes = (r * c * 4) as f64;
    let t_deq = median_time(9, || e(q.dequantize_rows(0..r, &mut out)))?;
    let t_copy = median_time(9, || {
        out.copy_from_slice(&src);
        Ok(())
    })?;
    let t_copy_par = median_time(9, || {
        out.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })?;
    let memcpy = 2.0 * bytes / t_copy.min(t_copy_par) / 1e9;
    let deq = bytes / t_deq / 1e9;
    println!(
        "{}",
        json!({"bench":"dequant","type":q.type_name(),"rows":r,"cols":c,"packed_bytes":q.stored_bytes(),
               "dequant_gbps_f32_out":deq,"dequant_ms":t_deq*1e3,"memcpy_gbps":memcpy,
               "ratio_to_memcpy":deq / memcpy,"threads":rayon::current_num_threads()})
    );
    Ok(())
}

pub fn run_qlinear(_args: &[String]) -> Result<(), String> {
    let tokens = 1024; // batch 4 × 256, the train-step benchmark's LLaMA batch
    for (out_f, in_f) in [(512, 512), (1376, 512), (512, 1376)] {
        let q: Arc<dyn PackedMatrix> = Arc::new(nf4_dq(out_f, in_f, 2)?);
        let dense = e(Linear::from_tensors(e(engine::quant::dequantize_all(q.as_ref()))?, None))?;
        let packed = e(Linear::from_packed(q.clone(), None))?;
        let x = e(e(Tensor::randn(&[tokens, in_f], 0.0, 1.0, 3))?.requires_grad())?;
        let g = e(Tensor::randn(&[tokens, out_f], 0.0, 1.0, 4))?;
        let step = |l: &Linear| -> Result<(), String> {
            let y = e(l.forward(&x))?;
            let grads = e(e(e(y.mul(&g))?.sum_all())?.backward())?;
            std::hint::black_box(grads.get(&x).ok_or("no input gradient")?);
            Ok(())
        };
        // Alternating runs, best of each: on a shared machine the two see the same interference.
        let (mut t_f32, mut t_q) = (f64::INFINITY, f64::INFINITY);
        step(&dense)?;
        step(&packed)?;
        for _ in 0..15 {
            t_f32 = t_f32.min(median_time(1, || step(&dense))?);
            t_q = t_q.min(median_time(1, || step(&packed))?);
        }
        println!(
            "{}",
            json!({"bench":"qlinear","tokens":tokens,"in":in_f,"out":out_f,"type":q.type_name(),
                   "f32_ms":t_f32*1e3,"nf4_ms":t_q*1e3,"ratio":t_q / t_f32,
                   "threads":rayon::current_num_threads()})
        );
    }
    Ok(())
}
