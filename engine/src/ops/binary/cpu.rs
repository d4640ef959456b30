//! CPU kernels for broadcasting binary ops.
use crate::cpu::strided::map_rows;
use crate::layout::Layout;
use crate::ops::unary::cpu::{load8, store8};
use wide::f32x8;

pub(crate) trait BinaryKernel: Sync {
    fn scalar(a: f32, b: f32) -> f32;
    fn simd(a: f32x8, b: f32x8) -> f32x8;
}

/// `K(a, b)` over the broadcast shape `shape`; `la`, `lb` are already broadcast to it.
pub(crate) fn map<K: BinaryKernel>(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, shape: &[usize]) -> Vec<f32> {
    map_rows(shape, [la, lb], |out, [oa, ob], [sa, sb]| {
        let n = out.len();
        match (sa, sb) {
            (1, 1) => {
                let (x, y) = (&a[oa..oa + n], &b[ob..ob + n]);
                let mut oc = out.chunks_exact_mut(8);
                let (mut xc, mut yc) = (x.chunks_exact(8), y.chunks_exact(8));
                for ((o, x8), y8) in (&mut oc).zip(&mut xc).zip(&mut yc) {
                    store8(o, K::simd(load8(x8), load8(y8)));
                }
                for ((o, &x1), &y1) in oc.into_remainder().iter_mut().zip(xc.remainder()).zip(yc.remainder()) {
                    *o = K::scalar(x1, y1);
                }
            }
            (1, 0) => {
                let (x, y) = (&a[oa..oa + n], b[ob]);
                let y8 = f32x8::splat(y);
                let mut oc = out.chunks_exact_mut(8);
                let mut xc = x.chunks_exact(8);
                for (o, x8) in (&mut oc).zip(&mut xc) {
                    store8(o, K::simd(load8(x8), y8));
                }
                for (o, &x1) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
                    *o = K::scalar(x1, y);
                }
            }
            (0, 1) => {
                let (x, y) = (a[oa], &b[ob..ob + n]);
                let x8 = f32x8::splat(x);
                let mut oc = out.chunks_exact_mut(8);
                let mut yc = y.chunks_exact(8);
                for (o, y8) in (&mut oc).zip(&mut yc) {
                    store8(o, K::simd(x8, load8(y8)));
                }
                for (o, &y1) in oc.into_remainder().iter_mut().zip(yc.remainder()) {
                    *o = K::scalar(x, y1);
                }
            }
            _ => {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = K::scalar(a[oa + j * sa], b[ob + j * sb]);
                }
            }
        }
    })
}
