//! Softmax and log-softmax over one dim, numerically stable (the row maximum is subtracted before
//! `exp`), with fused backward passes. Kernels (shared with the loss and norm ops) are in `cpu.rs`.
//!
//! Edge cases:
//! - A row whose elements are all -inf (a fully masked attention row) has softmax 0 everywhere and
//!   log-softmax -inf everywhere, never NaN (PyTorch gives NaN there). Its gradient follows the
//!   usual formulas with softmax = 0: zero for softmax, the incoming gradient unchanged for
//!   log-softmax.
//! - A NaN anywhere in a row makes the whole output row NaN; a +inf makes it NaN, as in PyTorch.
//! - bf16/f16 inputs are computed in f32 and give an f32 result, like the elementwise ops.
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::autograd::record;
use crate::error::Result;
use crate::storage::{CpuStorage, Device};
use crate::tensor::Tensor;

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim` (like `torch.softmax(x, dim)`). Rows of only -inf give zeros.
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_impl("softmax", dim, false)
    }

    /// `x − log Σ exp(x)` along `dim` (like `torch.log_softmax(x, dim)`). Rows of only -inf give -inf.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_impl("log_softmax", dim, true)
    }

    fn softmax_impl(&self, op: &'static str, dim: usize, log: bool) -> Result<Tensor> {
        self.layout().check_dim(op, dim)?;
        let last = self.rank() - 1;
        if dim != last {
            // Move `dim` last, run the row kernel on a contiguous copy, move it back (a view).
            return self.transpose(dim, last)?.softmax_impl(op, last, log)?.transpose(dim, last);
        }
        let x = self.float_input(op)?.contiguous()?;
        let n = x.shape()[last];
        let y = match x.device() {
            Device::Cpu => {
                Tensor::from_op(CpuStorage::F32(cpu::softmax_rows(&x.read::<f32>(op)?, n, log)), x.shape(), None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::forward(op, o, &x, n, log)?,
        };
        let node = record(op, &[&x], move |out, g| {
            let g = g.contiguous()?;
            let gx = match out.device() {
                Device::Cpu => {
                    let (yd, gd) = (out.read::<f32>(op)?, g.read::<f32>(op)?);
                    let gx =
                        if log { cpu::log_softmax_backward(&yd, &gd, n) } else { cpu::softmax_backward(&yd, &gd, n) };
                    Tensor::from_vec(gx, out.shape())?
                }
                #[cfg(feature = "cuda")]
                Device::Cuda(o) => cuda::backward(op, o, out, &g, n, log)?,
            };
            Ok(vec![Some(gx)])
        });
        Ok(y.with_node_opt(node))
    }
}
