//! Elementwise unary ops: forward, backward, and (in `cpu.rs`) their kernels.
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use self::cpu::UnaryKernel;
use crate::autograd::record;
use crate::error::Result;
use crate::ops::binary::cpu::BinaryKernel;
use crate::storage::{common_device, CpuStorage, Device};
use crate::tensor::Tensor;
use wide::f32x8;

macro_rules! kernel {
    ($name:ident, |$x:ident| $scalar:expr, |$v:ident| $simd:expr) => {
        pub(crate) struct $name;
        impl UnaryKernel for $name {
            #[inline(always)]
            fn scalar(&self, $x: f32) -> f32 {
                $scalar
            }
            #[inline(always)]
            fn simd(&self, $v: f32x8) -> f32x8 {
                $simd
            }
        }
    };
}

kernel!(Neg, |x| -x, |v| -v);
kernel!(Exp, |x| x.exp(), |v| v.exp());
kernel!(Log, |x| x.ln(), |v| v.ln());
kernel!(Sqrt, |x| x.sqrt(), |v| v.sqrt());
kernel!(Recip, |x| 1.0 / x, |v| f32x8::ONE / v);
kernel!(Tanh, |x| x.tanh(), |v| v.tanh());
kernel!(Relu, |x| x.max(0.0), |v| v.max(f32x8::ZERO));
kernel!(Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), |v| f32x8::ONE / (f32x8::ONE + (-v).exp()));
kernel!(Silu, |x| x / (1.0 + (-x).exp()), |v| v / (f32x8::ONE + (-v).exp()));
// 0.5·(1 + tanh(u)) = sigmoid(2u): one exp and one division instead of a tanh.
kernel!(GeluTanh, |x| gelu_tanh(x), |v| {
    let two_u = v * (f32x8::splat(0.044715) * v * v + f32x8::ONE) * f32x8::splat(2.0 * SQRT_2_OVER_PI);
    v / (f32x8::ONE + (-two_u).exp())
});

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// erf with absolute error below 1.2e-7 (Chebyshev fit of erfc, Numerical Recipes §6.2), in f64.
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    (if x >= 0.0 { r } else { -r }) as f32
}

pub(crate) struct GeluErf;
impl UnaryKernel for GeluErf {
    fn scalar(&self, x: f32) -> f32 {
        0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
    }
}

pub(crate) struct Affine {
    mul: f32,
    add: f32,
}
impl UnaryKernel for Affine {
    fn scalar(&self, x: f32) -> f32 {
        x * self.mul + self.add
    }
    fn simd(&self, x: f32x8) -> f32x8 {
        x.mul_add(f32x8::splat(self.mul), f32x8::splat(self.add))
    }
}

pub(crate) struct Powf(f32);
impl UnaryKernel for Powf {
    fn scalar(&self, x: f32) -> f32 {
        if self.0 == 2.0 {
            x * x
        } else {
            x.powf(self.0)
        }
    }
}

// Derivative kernels, as binary kernels of (x, upstream gradient).
macro_rules! grad_kernel {
    ($name:ident, |$x:ident, $g:ident| $scalar:expr) => {
        pub(crate) struct $name;
        impl BinaryKernel for $name {
            #[inline(always)]
            fn scalar($x: f32, $g: f32) -> f32 {
                $scalar
            }
            #[inline(always)]
            fn simd(x: f32x8, g: f32x8) -> f32x8 {
                let (xa, ga) = (x.to_array(), g.to_array());
                f32x8::new(std::array::from_fn(|i| Self::scalar(xa[i], ga[i])))
            }
        }
    };
}

grad_kernel!(ReluGrad, |x, g| if x > 0.0 { g } else { 0.0 });
grad_kernel!(SiluGrad, |x, g| {
    let s = 1.0 / (1.0 + (-x).exp());
    g * s * (1.0 + x * (1.0 - s))
});
grad_kernel!(GeluErfGrad, |x, g| {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
    g * (cdf + x * pdf)
});
grad_kernel!(GeluTanhGrad, |x, g| {
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let t = u.tanh();
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
});

impl Tensor {
    /// `params` are the op's scalars, for the GPU launch (see `cuda::launches`).
    fn unary<K: UnaryKernel>(
        &self,
        op: &'static str,
        k: K,
        #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] params: [f32; 2],
        backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let x = self.float_input(op)?;
        let out = match x.device() {
            Device::Cpu => {
                let data = x.read_all::<f32>(op)?;
                Tensor::from_op(CpuStorage::F32(cpu::map(&k, &data, x.layout())), self.shape(), None)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => cuda::map(op, o, &x, params)?,
        };
        let input = x.clone();
        let node = record(op, &[&x], move |out, g| Ok(vec![Some(backward(&input, out, g)?)]));
        Ok(out.with_node_opt(node))
    }

    /// `x` and the gradient through a derivative kernel (`op` names it for the GPU: `relu_bwd`, ...).
    fn grad_via<K: BinaryKernel>(op: &'static str, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let gc = g.contiguous()?;
        match common_device(op, &[x, &gc])? {
            Device::Cpu => {
                let out = {
                    let (xd, gd) = (x.read_all::<f32>(op)?, gc.read_all::<f32>(op)?);
                    crate::ops::binary::cpu::map::<K>(&xd, x.layout(), &gd, gc.layout(), &shape)
                };
                Tensor::from_vec(out, &shape)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(o) => crate::ops::binary::cuda::map(op, o, (x, x.layout()), (&gc, gc.layout()), &shape),
        }
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary("neg", Neg, [0.0; 2], |_, _, g| g.neg())
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary("exp", Exp, [0.0; 2], |_, out, g| g.mul(out))
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary("log", Log, [0.0; 2], |x, _, g| g.div(x))
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary("sqrt", Sqrt, [0.0; 2], |_, out, g| g.div(&out.affine(2.0, 0.0)?))
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.unary("recip", Recip, [0.0; 2], |_, out, g| g.mul(&out.sqr()?)?.neg())
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary("tanh", Tanh, [0.0; 2], |_, out, g| g.mul(&out.sqr()?.affine(-1.0, 1.0)?))
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary("sigmoid", Sigmoid, [0.0; 2], |_, out, g| g.mul(&out.mul(&out.affine(-1.0, 1.0)?)?))
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary("relu", Relu, [0.0; 2], |x, _, g| Tensor::grad_via::<ReluGrad>("relu_bwd", x, g))
    }
    pub fn silu(&self) -> Result<Tensor> {
        self.unary("silu", Silu, [0.0; 2], |x, _, g| Tensor::grad_via::<SiluGrad>("silu_bwd", x, g))
    }
    /// GELU with the exact erf (`nn.GELU()`, BERT's "gelu").
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary("gelu", GeluErf, [0.0; 2], |x, _, g| Tensor::grad_via::<GeluErfGrad>("gelu_bwd", x, g))
    }
    /// GELU with the tanh approximation (`nn.GELU("tanh")`, GPT-2's "gelu_new").
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary("gelu_tanh", GeluTanh, [0.0; 2], |x, _, g| Tensor::grad_via::<GeluTanhGrad>("gelu_tanh_bwd", x, g))
    }
    /// `x · mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        self.unary("affine", Affine { mul, add }, [mul, add], move |_, _, g| g.affine(mul, 0.0))
    }
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        self.affine(1.0, s)
    }
    pub fn mul_scalar(&self, s: f32) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    /// `x^e` elementwise.
    pub fn powf(&self, e: f32) -> Result<Tensor> {
        self.unary("powf", Powf(e), [e, 0.0], move |x, _, g| g.mul(&x.powf(e - 1.0)?.affine(e, 0.0)?))
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.powf(2.0)
    }
}
