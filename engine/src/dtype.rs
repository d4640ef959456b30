//! Element types. Computation is f32; bf16/f16 are storage formats converted on use; u8 holds packed
//! 4-bit data; i64 holds indices.
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
    U8,
    I64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
            DType::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::BF16 | DType::F16)
    }
}

/// Rust element types that a tensor can hold.
pub trait WithDType: Copy + Send + Sync + 'static + std::fmt::Debug {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! with_dtype {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}

with_dtype!(f32, F32, |v: f32| v as f64, |v: f64| v as f32);
with_dtype!(bf16, BF16, |v: bf16| v.to_f64(), bf16::from_f64);
with_dtype!(f16, F16, |v: f16| v.to_f64(), f16::from_f64);
with_dtype!(u8, U8, |v: u8| v as f64, |v: f64| v as u8);
with_dtype!(i64, I64, |v: i64| v as f64, |v: f64| v as i64);
