//! cat/stack, index_select/embedding, gather/scatter_add, where/masked_fill, dropout.
mod common;
use common::*;
use engine::{DType, Tensor};

fn ids(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[test]
fn cat_and_stack() {
    let a = randn(&[2, 3, 4], 1);
    let b = randn(&[2, 1, 4], 2);
    let c = Tensor::cat(&[&a, &b], 1).unwrap();
    assert_eq!(c.shape(), &[2, 4, 4]);
    let (av, bv, cv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
    for o in 0..2 {
        assert_eq!(cv[o * 16..o * 16 + 12], av[o * 12..o * 12 + 12]);
        assert_eq!(cv[o * 16 + 12..o * 16 + 16], bv[o * 4..o * 4 + 4]);
    }
    let s = Tensor::stack(&[&a, &a], 0).unwrap();
    assert_eq!(s.shape(), &[2, 2, 3, 4]);
    assert!(Tensor::cat(&[&a, &randn(&[2, 3, 5], 3)], 1).is_err());
    assert!(Tensor::cat(&[], 0).is_err());
    // a transposed (non-contiguous) input
    let t = randn(&[4, 3], 4).t().unwrap();
    gradcheck(
        |v| Tensor::cat(&[&v[0], &v[1], &v[2].t()?], 2)?.tanh(),
        &[a.clone(), randn(&[2, 3, 1], 5), randn(&[1, 3], 6).broadcast_as(&[2, 1, 3]).unwrap().contiguous().unwrap()],
    );
    gradcheck(|v| Tensor::stack(&[&v[0], &v[1]], 1), &[t.contiguous().unwrap(), randn(&[3, 4], 7)]);
}

#[test]
fn embedding_and_index_select() {
    let table = randn(&[10, 6], 1);
    let tv = table.to_vec::<f32>().unwrap();
    let i = ids(&[3, 0, 9, 3, 3, 1], &[2, 3]);
    let e = table.embedding(&i).unwrap();
    assert_eq!(e.shape(), &[2, 3, 6]);
    let ev = e.to_vec::<f32>().unwrap();
    for (k, &id) in [3usize, 0, 9, 3, 3, 1].iter().enumerate() {
        assert_eq!(ev[k * 6..k * 6 + 6], tv[id * 6..id * 6 + 6]);
    }
    // repeated ids accumulate their gradients (scatter-add)
    gradcheck(|v| v[0].embedding(&i), std::slice::from_ref(&table));
    let x = randn(&[3, 5, 2], 2);
    let sel = ids(&[4, 0, 4], &[3]);
    gradcheck(|v| v[0].index_select(1, &sel), std::slice::from_ref(&x));
    let err = table.embedding(&ids(&[10], &[1])).unwrap_err().to_string();
    assert!(err.contains("10") && err.contains("embedding") || err.contains("index_select"), "{err}");
    assert!(table.embedding(&ids(&[-1], &[1])).is_err());
    assert!(table.embedding(&Tensor::from_vec(vec![1.0f32], &[1]).unwrap()).is_err());
}

#[test]
fn gather_and_scatter_add() {
    let x = randn(&[3, 4], 3);
    let xv = x.to_vec::<f32>().unwrap();
    let idx = ids(&[0, 3, 1, 1, 2, 0], &[3, 2]);
    let g = x.gather(1, &idx).unwrap();
    let want: Vec<f32> = [(0, 0), (0, 3), (1, 1), (1, 1), (2, 2), (2, 0)].iter().map(|&(r, c)| xv[r * 4 + c]).collect();
    assert_eq!(g.to_vec::<f32>().unwrap(), want);
    gradcheck(|v| v[0].gather(1, &idx), std::slice::from_ref(&x));
    let src = randn(&[3, 2], 4);
    let s = x.scatter_add(1, &idx, &src).unwrap();
    let mut want = xv.clone();
    let sv = src.to_vec::<f32>().unwrap();
    for (k, &(r, c)) in [(0, 0), (0, 3), (1, 1), (1, 1), (2, 2), (2, 0)].iter().enumerate() {
        want[r * 4 + c] += sv[k];
    }
    assert_close(&s.to_vec::<f32>().unwrap(), &want, 1e-6, 0.0);
    gradcheck(|v| v[0].scatter_add(1, &idx, &v[1]), &[x.clone(), src]);
    assert!(x.gather(1, &ids(&[4], &[1, 1])).is_err());
    assert!(x.gather(1, &ids(&[0, 0, 0, 0], &[4, 1])).is_err()); // dim 0 larger than the input
    assert_eq!(x.gather(1, &ids(&[0; 5], &[1, 5])).unwrap().shape(), &[1, 5]); // the gather dim may be longer
}

#[test]
fn where_and_masked_fill() {
    let a = randn(&[2, 5], 5);
    let b = randn(&[5], 6);
    let mask = Tensor::from_vec(vec![1u8, 0, 1, 1, 0, 0, 0, 1, 0, 1], &[2, 5]).unwrap();
    let w = Tensor::where_cond(&mask, &a, &b).unwrap();
    let (av, bv, wv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
    let mv = mask.to_vec::<u8>().unwrap();
    for k in 0..10 {
        assert_eq!(wv[k], if mv[k] != 0 { av[k] } else { bv[k % 5] });
    }
    gradcheck(|v| Tensor::where_cond(&mask, &v[0], &v[1]), &[a.clone(), b]);
    let filled = a.masked_fill(&mask, f32::NEG_INFINITY).unwrap();
    let fv = filled.to_vec::<f32>().unwrap();
    assert!(fv.iter().zip(&mv).all(|(v, m)| if *m != 0 { *v == f32::NEG_INFINITY } else { v.is_finite() }));
    // masked positions get no gradient, others get it unchanged
    let x = a.requires_grad().unwrap();
    let g = x.masked_fill(&mask, -1e9).unwrap().sum_all().unwrap().backward().unwrap();
    let gv = g.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert!(gv.iter().zip(&mv).all(|(g, m)| *g == if *m != 0 { 0.0 } else { 1.0 }));
}

#[test]
fn dropout_is_seeded_inverted_and_differentiable() {
    let x = Tensor::ones(&[100_000], DType::F32).unwrap();
    let y = x.dropout(0.25, 42).unwrap().to_vec::<f32>().unwrap();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f32 / y.len() as f32;
    assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(y, x.dropout(0.25, 42).unwrap().to_vec::<f32>().unwrap());
    assert_ne!(y, x.dropout(0.25, 43).unwrap().to_vec::<f32>().unwrap());
    assert_eq!(x.dropout(0.0, 1).unwrap().to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert!(x.dropout(1.0, 1).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    assert!(x.dropout(1.5, 1).is_err());
    gradcheck(|v| v[0].dropout(0.5, 7), &[randn(&[3, 7], 8)]);
}
