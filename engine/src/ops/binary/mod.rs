//! Broadcasting binary ops (NumPy rules): forward, backward, kernels in `cpu.rs`.
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use self::cpu::BinaryKernel;
use crate::autograd::record;
use crate::error::Result;
use crate::layout::broadcast_shapes;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use wide::f32x8;

macro_rules! kernel {
    ($name:ident, $op:tt, $simd:expr) => {
        pub(crate) struct $name;
        impl BinaryKernel for $name {
            #[inline(always)]
            fn scalar(a: f32, b: f32) -> f32 {
                a $op b
            }
            #[inline(always)]
            fn simd(a: f32x8, b: f32x8) -> f32x8 {
                $simd(a, b)
            }
        }
    };
}

kernel!(Add, +, |a, b| a + b);
kernel!(Sub, -, |a, b| a - b);
kernel!(Mul, *, |a, b| a * b);
kernel!(Div, /, |a, b| a / b);

pub(crate) struct Maximum;
impl BinaryKernel for Maximum {
    fn scalar(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    fn simd(a: f32x8, b: f32x8) -> f32x8 {
        a.max(b)
    }
}

/// Which inputs of a binary op want a gradient.
fn wants(a: &Tensor, b: &Tensor) -> (bool, bool) {
    (a.tracks_grad(), b.tracks_grad())
}

impl Tensor {
    fn binary<K: BinaryKernel>(
        &self,
        rhs: &Tensor,
        op: &'static str,
        backward: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)>
            + Send
            + Sync
            + 'static,
    ) -> Result<Tensor> {
        let (a, b) = (self.float_input(op)?, rhs.float_input(op)?);
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        let (la, lb) = (a.layout().broadcast_as(&shape)?, b.layout().broadcast_as(&shape)?);
        let out = match common_device(op, &[&a, &b])? {
            Device::Cpu => {
                let (ad, bd) = (a.read_all::<f32>(op)?, b.read_all::<f32>(op)?);
                Tensor::from_op(CpuStorage::F32(cpu::map::<K>(&ad, &la, &bd, &lb, &shape)), &shape, None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::map(op, o, (&a, &la), (&b, &lb), &shape)?,
        };
        let (ia, ib) = (a.clone(), b.clone());
        let node = record(op, &[&a, &b], move |out, g| {
            let (ga, gb) = backward(&ia, &ib, out, g)?;
            Ok(vec![ga, gb])
        });
        Ok(out.with_node_opt(node))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary::<Add>(rhs, "add", |a, b, _, g| {
            let (wa, wb) = wants(a, b);
            Ok((if wa { Some(g.sum_to(a.shape())?) } else { None }, if wb { Some(g.sum_to(b.shape())?) } else { None }))
        })
    }

    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary::<Sub>(rhs, "sub", |a, b, _, g| {
            let (wa, wb) = wants(a, b);
            Ok((
                if wa { Some(g.sum_to(a.shape())?) } else { None },
                if wb { Some(g.sum_to(b.shape())?.neg()?) } else { None },
            ))
        })
    }

    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary::<Mul>(rhs, "mul", |a, b, _, g| {
            let (wa, wb) = wants(a, b);
            Ok((
                if wa { Some(g.mul(b)?.sum_to(a.shape())?) } else { None },
                if wb { Some(g.mul(a)?.sum_to(b.shape())?) } else { None },
            ))
        })
    }

    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary::<Div>(rhs, "div", |a, b, out, g| {
            let (wa, wb) = wants(a, b);
            Ok((
                if wa { Some(g.div(b)?.sum_to(a.shape())?) } else { None },
                if wb { Some(g.mul(out)?.div(b)?.neg()?.sum_to(b.shape())?) } else { None },
            ))
        })
    }

    /// Elementwise maximum; the gradient goes to `self` where it is >= `rhs`, else to `rhs`.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary::<Maximum>(rhs, "maximum", |a, b, _, g| {
            let (wa, wb) = wants(a, b);
            let a_wins = a.ge(b)?.to_dtype(crate::DType::F32)?;
            Ok((
                if wa { Some(g.mul(&a_wins)?.sum_to(a.shape())?) } else { None },
                if wb { Some(g.mul(&a_wins.affine(-1.0, 1.0)?)?.sum_to(b.shape())?) } else { None },
            ))
        })
    }
}
