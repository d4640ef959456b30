//! Inverted dropout: zero each element with probability p, scale the rest by 1/(1−p). The mask is a
//! stateless function of (seed, element index in row-major order), so it is reproducible and the
//! backward applies the forward's mask again. The two devices draw from different generators: the
//! host hashes (seed, index) with `counter_uniform` (splitmix64), the GPU runs Philox4x32-10 on it
//! (`cuda.rs`). Each is deterministic per seed with keep rate 1 − p, but a seed does not give the same
//! mask on the host and on a GPU.
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::random::counter_uniform;
use crate::storage::{CpuStorage, Device};
use crate::tensor::Tensor;
use rayon::prelude::*;

impl Tensor {
    pub fn dropout(&self, p: f32, seed: u64) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("probability {p} is outside [0, 1]")));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let x = self.float_input("dropout")?.contiguous()?;
        match x.device() {
            Device::Cpu => {}
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => {
                let out = cuda::apply("dropout", o, &x, p, seed)?;
                let node = record("dropout", &[&x], move |_, g| {
                    Ok(vec![Some(cuda::apply("dropout backward", o, g, p, seed)?)])
                });
                return Ok(out.with_node_opt(node));
            }
        }
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let mut mask = vec![0.0f32; x.numel()];
        mask.par_iter_mut().enumerate().with_min_len(1 << 14).for_each(|(i, m)| {
            *m = if counter_uniform(seed, i as u64) >= p { scale } else { 0.0 };
        });
        let out: Vec<f32> = x.read::<f32>("dropout")?.iter().zip(&mask).map(|(a, m)| a * m).collect();
        let mask = Tensor::from_vec(mask, x.shape())?;
        let node = record("dropout", &[&x], move |_, g| Ok(vec![Some(g.mul(&mask)?)]));
        Ok(Tensor::from_op(CpuStorage::F32(out), x.shape(), node))
    }
}
