//! LayerNorm and RMSNorm over the last dim, with fused backward passes for the input, the weight
//! and the bias. The forward saves each row's mean and 1/std; the backward recomputes x̂ from them.
//! Computation is in f32 (bf16/f16 inputs are converted), and the result is f32. On a GPU the
//! same passes run through `cuda.rs`, the statistics staying on the device.
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use self::cpu::Wants;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;

impl Tensor {
    /// `nn.LayerNorm` over the last dim: `(x − mean) / √(var + eps) · weight + bias`, with the
    /// biased variance. `weight` and `bias` have shape `[last dim]`; either may be absent.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        self.norm_impl("layer_norm", weight, bias, eps, true)
    }

    /// LLaMA's RMSNorm over the last dim: `x · rsqrt(mean(x²) + eps) · weight`, computed in f32.
    /// `weight` has shape `[last dim]`, or is absent (no scaling).
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        self.norm_impl("rms_norm", weight, None, eps, false)
    }

    fn norm_impl(
        &self,
        op: &'static str,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        centered: bool,
    ) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::shape(op, "cannot normalize a 0-dim tensor over its last dim"));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::invalid(op, format!("eps must be finite and >= 0, got {eps}")));
        }
        let n = self.shape()[self.rank() - 1];
        let param = |t: Option<&Tensor>, name: &str| -> Result<Option<Tensor>> {
            let Some(t) = t else { return Ok(None) };
            if t.shape() != [n] {
                return Err(Error::shape(
                    op,
                    format!(
                        "{name} of shape {:?} does not match input of shape {:?}: expected [{n}] (the last dim)",
                        t.shape(),
                        self.shape()
                    ),
                ));
            }
            Ok(Some(t.float_input(op)?.contiguous()?))
        };
        let (w, b) = (param(weight, "weight")?, param(bias, "bias")?);
        let x = self.float_input(op)?.contiguous()?;
        let mut inputs: Vec<&Tensor> = vec![&x];
        inputs.extend(w.iter());
        inputs.extend(b.iter());
        let (y, saved) = match common_device(op, &inputs)? {
            Device::Cpu => {
                let (y, stats) = {
                    let xd = x.read::<f32>(op)?;
                    let wd = w.as_ref().map(|t| t.read::<f32>(op)).transpose()?;
                    let bd = b.as_ref().map(|t| t.read::<f32>(op)).transpose()?;
                    cpu::norm_forward(&xd, n, wd.as_deref(), bd.as_deref(), eps, centered)
                };
                (Tensor::from_op(CpuStorage::F32(y), x.shape(), None), Saved::Cpu(stats))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => {
                let i = cuda::Inputs { x: &x, w: w.as_ref(), b: b.as_ref(), cols: n, eps, centered };
                let (y, saved) = cuda::forward(op, o, &i)?;
                (y, Saved::Gpu(o, saved))
            }
        };
        let (xs, ws, bs) = (x.clone(), w.clone(), b.clone());
        let node = record(op, &inputs, move |_, g| {
            let g = g.contiguous()?;
            let wants = Wants {
                x: xs.tracks_grad(),
                w: ws.as_ref().is_some_and(|t| t.tracks_grad()),
                b: bs.as_ref().is_some_and(|t| t.tracks_grad()),
            };
            let (gx, gw, gb) = match &saved {
                Saved::Cpu(stats) => {
                    let (gx, gw, gb) = {
                        let (xd, gd) = (xs.read::<f32>(op)?, g.read::<f32>(op)?);
                        let wd = ws.as_ref().map(|t| t.read::<f32>(op)).transpose()?;
                        cpu::norm_backward(&xd, &gd, n, wd.as_deref(), stats, centered, wants)
                    };
                    (
                        gx.map(|v| Tensor::from_vec(v, xs.shape())).transpose()?,
                        gw.map(|v| Tensor::from_vec(v, &[n])).transpose()?,
                        gb.map(|v| Tensor::from_vec(v, &[n])).transpose()?,
                    )
                }
                #[cfg(feature = "cuda")]
                Saved::Gpu(o, saved) => {
                    let i = cuda::Inputs { x: &xs, w: ws.as_ref(), b: bs.as_ref(), cols: n, eps, centered };
                    let (gx, gw, gb) = cuda::backward(op, *o, &i, saved, &g, wants.w, wants.b)?;
                    (wants.x.then_some(gx), gw, gb)
                }
            };
            let mut grads = vec![gx];
            if ws.is_some() {
                grads.push(gw);
            }
            if bs.is_some() {
                grads.push(gb);
            }
            Ok(grads)
        });
        Ok(y.with_node_opt(node))
    }
}

/// What the forward keeps for the backward: each row's statistics, on the device that made them.
enum Saved {
    Cpu(Vec<cpu::RowStats>),
    #[cfg(feature = "cuda")]
    Gpu(u32, cuda::Saved),
}
