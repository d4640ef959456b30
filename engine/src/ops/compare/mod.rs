//! Comparisons (broadcasting) returning u8 masks of 0/1. Not differentiable.
#[cfg(feature = "cuda")]
mod cuda;

use crate::dtype::DType;
use crate::error::Result;
use crate::layout::broadcast_shapes;
use crate::ops::binary::cpu::{map, BinaryKernel};
use crate::storage::{common_device, Device};
use crate::tensor::Tensor;
use wide::f32x8;

macro_rules! cmp_kernel {
    ($name:ident, $op:tt, $method:ident) => {
        struct $name;
        impl BinaryKernel for $name {
            fn scalar(a: f32, b: f32) -> f32 {
                if a $op b { 1.0 } else { 0.0 }
            }
            fn simd(a: f32x8, b: f32x8) -> f32x8 {
                a.$method(b) & f32x8::ONE
            }
        }
    };
}

cmp_kernel!(Ge, >=, simd_ge);
cmp_kernel!(Gt, >, simd_gt);
cmp_kernel!(Eq, ==, simd_eq);

impl Tensor {
    fn compare<K: BinaryKernel>(&self, rhs: &Tensor, op: &'static str) -> Result<Tensor> {
        let _g = crate::autograd::no_grad();
        let (a, b) = (self.to_dtype(DType::F32)?, rhs.to_dtype(DType::F32)?);
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        let (la, lb) = (a.layout().broadcast_as(&shape)?, b.layout().broadcast_as(&shape)?);
        match common_device(op, &[&a, &b])? {
            Device::Cpu => {
                let out = {
                    let (ad, bd) = (a.read_all::<f32>(op)?, b.read_all::<f32>(op)?);
                    map::<K>(&ad, &la, &bd, &lb, &shape)
                };
                Tensor::from_vec(out.into_iter().map(|v| v as u8).collect::<Vec<u8>>(), &shape)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::map(op, o, (&a, &la), (&b, &lb), &shape),
        }
    }
    /// `self >= rhs` as a u8 mask.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare::<Ge>(rhs, "ge")
    }
    /// `self > rhs` as a u8 mask.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare::<Gt>(rhs, "gt")
    }
    /// `self == rhs` as a u8 mask.
    pub fn eq_mask(&self, rhs: &Tensor) -> Result<Tensor> {
        self.compare::<Eq>(rhs, "eq")
    }
}
