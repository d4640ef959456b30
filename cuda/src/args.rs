//! Kernel arguments, checked against the kernel's parameter list (`kernels::signatures`) and packed into
//! the 8-byte aligned storage whose addresses `cuLaunchKernel` takes.

use crate::{Error, Result};
use kernels::{Kernel, Param};

/// One launch argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A device address (0 for an optional pointer left out).
    Ptr(u64),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    /// A by-value struct's bytes.
    Bytes(Vec<u8>),
}

impl Arg {
    fn matches(&self, p: Param) -> bool {
        matches!(
            (self, p),
            (Arg::Ptr(_), Param::Ptr)
                | (Arg::U32(_), Param::U32)
                | (Arg::I32(_), Param::I32)
                | (Arg::U64(_), Param::U64)
                | (Arg::I64(_), Param::I64)
                | (Arg::F32(_), Param::F32)
        ) || matches!((self, p), (Arg::Bytes(b), Param::Bytes(n)) if b.len() == n)
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::Ptr(v) | Arg::U64(v) => v.to_ne_bytes().to_vec(),
            Arg::I64(v) => v.to_ne_bytes().to_vec(),
            Arg::U32(v) => v.to_ne_bytes().to_vec(),
            Arg::I32(v) => v.to_ne_bytes().to_vec(),
            Arg::F32(v) => v.to_ne_bytes().to_vec(),
            Arg::Bytes(b) => b.clone(),
        }
    }
}

/// Arguments packed for a launch: one 8-byte aligned slot per parameter.
#[derive(Debug)]
pub struct Packed {
    slots: Vec<Vec<u64>>,
}

impl Packed {
    /// The per-parameter addresses `cuLaunchKernel` reads (valid while `self` lives and is not moved from).
    pub fn pointers(&mut self) -> Vec<*mut std::ffi::c_void> {
        self.slots.iter_mut().map(|s| s.as_mut_ptr().cast()).collect()
    }

    /// The packed bytes of parameter `i` (for tests).
    pub fn slot_bytes(&self, i: usize, len: usize) -> Vec<u8> {
        self.slots[i].iter().flat_map(|w| w.to_ne_bytes()).take(len).collect()
    }
}

/// Checks `args` against `kernel`'s parameter list and packs them.
pub fn pack(kernel: &Kernel, args: &[Arg]) -> Result<Packed> {
    if args.len() != kernel.params.len() {
        return Err(Error::Signature {
            kernel: kernel.name,
            detail: format!("takes {} arguments, got {}", kernel.params.len(), args.len()),
        });
    }
    let mut slots = Vec::with_capacity(args.len());
    for (i, (a, p)) in args.iter().zip(kernel.params).enumerate() {
        if !a.matches(*p) {
            return Err(Error::Signature {
                kernel: kernel.name,
                detail: format!("argument {i} is {a:?}, expected {p:?}"),
            });
        }
        let bytes = a.bytes();
        let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
        for (j, b) in bytes.iter().enumerate() {
            let w = &mut words[j / 8];
            let mut wb = w.to_ne_bytes();
            wb[j % 8] = *b;
            *w = u64::from_ne_bytes(wb);
        }
        slots.push(words);
    }
    Ok(Packed { slots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::signatures::{FILL_F32, UNARY_F32};

    #[test]
    fn packs_matching_arguments_and_rejects_others() {
        let mut p = pack(&FILL_F32, &[Arg::Ptr(0x1000), Arg::U64(7), Arg::F32(1.5)]).unwrap();
        assert_eq!(p.pointers().len(), 3);
        assert_eq!(p.slot_bytes(0, 8), 0x1000u64.to_ne_bytes());
        assert_eq!(p.slot_bytes(2, 4), 1.5f32.to_ne_bytes());
        let e = pack(&FILL_F32, &[Arg::Ptr(0), Arg::U32(7), Arg::F32(1.0)]).unwrap_err().to_string();
        assert!(e.contains("fill_f32") && e.contains("argument 1"), "{e}");
        assert!(pack(&FILL_F32, &[Arg::Ptr(0)]).unwrap_err().to_string().contains("takes 3 arguments, got 1"));
        let layout = kernels::Layout::new(&[2, 3], &[3, 1], &[0, 1]).unwrap().to_bytes().to_vec();
        let args = [Arg::Ptr(1), Arg::Ptr(2), Arg::Bytes(layout.clone()), Arg::U64(6), Arg::U32(0), Arg::F32(0.0)];
        let p = pack(&UNARY_F32, &args).unwrap();
        assert_eq!(p.slot_bytes(2, 152), layout);
        let short = [Arg::Ptr(1), Arg::Ptr(2), Arg::Bytes(vec![0; 8]), Arg::U64(6), Arg::U32(0), Arg::F32(0.0)];
        assert!(pack(&UNARY_F32, &short).is_err());
    }
}
