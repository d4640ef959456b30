//! The matmul op (batched, broadcast, transposed and strided views) against a naive loop, and its
//! gradients against finite differences.
mod common;
use common::*;
use engine::Tensor;

/// Naive batched matmul over row-major values with NumPy broadcasting of the batch dims.
fn naive(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f32>) {
    let (sa, sb) = (a.shape(), b.shape());
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let rank = ba.len().max(bb.len());
    let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
    let (pa, pb) = (pad(ba), pad(bb));
    let batch: Vec<usize> = (0..rank).map(|i| pa[i].max(pb[i])).collect();
    let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let nb: usize = batch.iter().product();
    let mut out = vec![0.0f32; nb * m * n];
    for bi in 0..nb {
        let mut rem = bi;
        let mut idx = vec![0; rank];
        for d in (0..rank).rev() {
            idx[d] = rem % batch[d];
            rem /= batch[d];
        }
        let lin = |p: &[usize]| (0..rank).fold(0, |acc, d| acc * p[d] + if p[d] == 1 { 0 } else { idx[d] });
        let (oa, ob) = (lin(&pa) * m * k, lin(&pb) * k * n);
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| av[oa + i * k + p] as f64 * bv[ob + p * n + j] as f64).sum();
                out[bi * m * n + i * n + j] = s as f32;
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

fn check(a: &Tensor, b: &Tensor) {
    let got = a.matmul(b).unwrap();
    let (shape, want) = naive(a, b);
    assert_eq!(got.shape(), &shape[..]);
    let k = a.shape()[a.rank() - 1] as f32;
    assert_close(&got.to_vec::<f32>().unwrap(), &want, 1e-5, 1e-6 * k.sqrt() * 4.0);
}

#[test]
fn matches_naive_on_odd_shapes_and_views() {
    for &(m, k, n) in &[(1, 1, 1), (7, 17, 1), (17, 7, 129), (129, 33, 17), (1000, 7, 17), (3, 1000, 5)] {
        check(&randn(&[m, k], 1), &randn(&[k, n], 2));
        // transposed operands: views with swapped strides, no copies
        check(&randn(&[k, m], 3).t().unwrap(), &randn(&[n, k], 4).t().unwrap());
    }
    // strided sub-blocks: narrow both dims of a bigger matrix
    let big = randn(&[40, 50], 5);
    check(&big.narrow(0, 3, 17).unwrap().narrow(1, 5, 29).unwrap(), &randn(&[29, 13], 6));
    // batched with broadcasting over batch dims, and a 2-D rhs shared by the batch
    check(&randn(&[2, 3, 7, 5], 7), &randn(&[3, 5, 4], 8));
    check(&randn(&[2, 1, 7, 5], 9), &randn(&[4, 5, 6], 10));
    check(&randn(&[4, 9, 5], 11), &randn(&[5, 3], 12));
    check(&randn(&[4, 9, 5], 11).transpose(0, 1).unwrap(), &randn(&[5, 3], 12));
    // the Linear pattern: x [B, T, in] · Wᵀ
    check(&randn(&[2, 3, 8], 13), &randn(&[6, 8], 14).t().unwrap());
    assert!(randn(&[2, 3], 1).matmul(&randn(&[4, 2], 1)).is_err());
    assert!(randn(&[3], 1).matmul(&randn(&[3, 2], 1)).is_err());
}

#[test]
fn gradients() {
    gradcheck(|v| v[0].matmul(&v[1]), &[randn(&[3, 5], 1), randn(&[5, 4], 2)]);
    gradcheck(|v| v[0].matmul(&v[1].t()?), &[randn(&[2, 3, 5], 3), randn(&[4, 5], 4)]);
    gradcheck(|v| v[0].matmul(&v[1]), &[randn(&[2, 1, 3, 5], 5), randn(&[3, 5, 2], 6)]);
    gradcheck(|v| v[0].t()?.matmul(&v[1]), &[randn(&[5, 3], 7), randn(&[5, 2], 8)]);
}
