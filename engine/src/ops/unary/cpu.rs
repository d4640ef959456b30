//! CPU kernels for elementwise unary ops: SIMD (`wide::f32x8`) along contiguous rows.
use crate::cpu::strided::map_rows;
use crate::layout::Layout;
use wide::f32x8;

pub(crate) trait UnaryKernel: Sync {
    fn scalar(&self, x: f32) -> f32;
    fn simd(&self, x: f32x8) -> f32x8 {
        let a = x.to_array();
        f32x8::new(std::array::from_fn(|i| self.scalar(a[i])))
    }
}

#[inline]
pub(crate) fn load8(s: &[f32]) -> f32x8 {
    let mut a = [0.0f32; 8];
    a.copy_from_slice(&s[..8]);
    f32x8::new(a)
}

#[inline]
pub(crate) fn store8(d: &mut [f32], v: f32x8) {
    d[..8].copy_from_slice(&v.to_array());
}

/// `k` applied to every element of the view `(data, layout)`; returns a contiguous result.
pub(crate) fn map<K: UnaryKernel>(k: &K, data: &[f32], layout: &Layout) -> Vec<f32> {
    map_rows(layout.shape(), [layout], |out, [off], [stride]| {
        let n = out.len();
        if stride == 1 {
            let src = &data[off..off + n];
            let mut oc = out.chunks_exact_mut(8);
            let mut ic = src.chunks_exact(8);
            for (o, i) in (&mut oc).zip(&mut ic) {
                store8(o, k.simd(load8(i)));
            }
            for (o, &i) in oc.into_remainder().iter_mut().zip(ic.remainder()) {
                *o = k.scalar(i);
            }
        } else {
            for (j, o) in out.iter_mut().enumerate() {
                *o = k.scalar(data[off + j * stride]);
            }
        }
    })
}
