//! Scaled dot-product attention and rotary embeddings: values against naive f64 loops, gradients
//! against finite differences, on sizes that are not multiples of the SIMD width.
mod common;
use common::*;
use engine::{rope_tables, scaled_dot_product_attention, AttentionMask, DType, Tensor};

// ----- attention reference ------------------------------------------------------------------------

struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
}

/// Explicit loops in f64: scores, mask, softmax, weighted sum. Fully masked rows give zeros.
/// `keep` is `[batch, tk]`.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, keep: Option<&[bool]>, scale: Option<f64>) -> Vec<f32> {
    let (qv, kv, vv) = (q.to_vec::<f32>().unwrap(), k.to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
    let (b, h, tq, d) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let (hk, tk, dv) = (k.dims()[1], k.dims()[2], v.dims()[3]);
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let group = h / hk;
    let mut out = vec![0.0f32; b * h * tq * dv];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / group;
            for i in 0..tq {
                let mut s = vec![f64::NEG_INFINITY; tk];
                for j in 0..tk {
                    let visible = !causal || (j as i64) <= i as i64 + tk as i64 - tq as i64;
                    let kept = keep.is_none_or(|m| m[bi * tk + j]);
                    if visible && kept {
                        let mut dot = 0.0;
                        for c in 0..d {
                            dot += qv[((bi * h + hi) * tq + i) * d + c] as f64
                                * kv[((bi * hk + kh) * tk + j) * d + c] as f64;
                        }
                        s[j] = dot * scale;
                    }
                }
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue; // no visible key: zeros
                }
                let e: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..dv {
                    let mut acc = 0.0;
                    for j in 0..tk {
                        acc += e[j] / sum * vv[((bi * hk + kh) * tk + j) * dv + c] as f64;
                    }
                    out[((bi * h + hi) * tq + i) * dv + c] = acc as f32;
                }
            }
        }
    }
    out
}

fn inputs(c: &Case, seed: u64) -> (Tensor, Tensor, Tensor) {
    (
        randn(&[c.batch, c.heads, c.tq, c.d], seed),
        randn(&[c.batch, c.kv_heads, c.tk, c.d], seed + 1),
        randn(&[c.batch, c.kv_heads, c.tk, c.dv], seed + 2),
    )
}

fn check(c: &Case, mask: &AttentionMask, keep: Option<&[bool]>, seed: u64) {
    let (q, k, v) = inputs(c, seed);
    let out = scaled_dot_product_attention(&q, &k, &v, mask).unwrap();
    assert_eq!(out.dims(), &[c.batch, c.heads, c.tq, c.dv]);
    let want = reference(&q, &k, &v, mask.causal, keep, mask.scale.map(|s| s as f64));
    assert_close(&out.to_vec::<f32>().unwrap(), &want, 1e-4, 1e-5);
}

/// Batch 0 left-padded by `left`, batch 1 right-padded by `right` (as a `[2, tk]` 0/1 list).
fn padding(tk: usize, left: usize, right: usize) -> Vec<bool> {
    let mut keep = vec![true; 2 * tk];
    keep[..left].fill(false);
    keep[2 * tk - right..].fill(false);
    keep
}

fn padding_tensor(keep: &[bool], tk: usize, dtype: DType) -> Tensor {
    let ones: Vec<i64> = keep.iter().map(|&k| k as i64).collect();
    Tensor::from_vec(ones, &[keep.len() / tk, tk]).unwrap().to_dtype(dtype).unwrap()
}

#[test]
fn attention_no_mask() {
    let c = Case { batch: 2, heads: 3, kv_heads: 3, tq: 7, tk: 9, d: 5, dv: 6 };
    check(&c, &AttentionMask::none(), None, 10);
    check(&c, &AttentionMask::none().with_scale(0.3), None, 11);
}

#[test]
fn attention_causal_square() {
    let c = Case { batch: 2, heads: 2, kv_heads: 2, tq: 7, tk: 7, d: 5, dv: 3 };
    check(&c, &AttentionMask::causal(), None, 20);
    // Row 0 sees only key 0: its output is v[0] exactly.
    let (q, k, v) = inputs(&c, 21);
    let out = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::causal()).unwrap();
    let (o, vv) = (out.to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
    assert_close(&o[..3], &vv[..3], 1e-6, 1e-7);
}

#[test]
fn attention_causal_with_prefix() {
    // tk = tq + 3: three prefix keys that every query sees, then the causal past.
    let c = Case { batch: 2, heads: 3, kv_heads: 3, tq: 7, tk: 10, d: 5, dv: 4 };
    check(&c, &AttentionMask::causal(), None, 30);
}

#[test]
fn attention_key_padding_left_and_right() {
    let c = Case { batch: 2, heads: 2, kv_heads: 2, tq: 7, tk: 7, d: 5, dv: 5 };
    let keep = padding(c.tk, 2, 3);
    for dtype in [DType::U8, DType::I64, DType::F32] {
        let m = padding_tensor(&keep, c.tk, dtype);
        check(&c, &AttentionMask::none().with_key_padding(&m), Some(&keep), 40);
        check(&c, &AttentionMask::causal().with_key_padding(&m), Some(&keep), 41);
    }
}

#[test]
fn attention_fully_masked_rows_are_zero_with_zero_gradient() {
    // Left padding of 2 under a causal mask: queries 0 and 1 of batch 0 see no key.
    let c = Case { batch: 2, heads: 2, kv_heads: 1, tq: 5, tk: 5, d: 3, dv: 4 };
    let keep = padding(c.tk, 2, 1);
    let m = padding_tensor(&keep, c.tk, DType::U8);
    let mask = AttentionMask::causal().with_key_padding(&m);
    let (q, k, v) = inputs(&c, 50);
    let (q, k, v) = (q.requires_grad().unwrap(), k.requires_grad().unwrap(), v.requires_grad().unwrap());
    let out = scaled_dot_product_attention(&q, &k, &v, &mask).unwrap();
    let o = out.to_vec::<f32>().unwrap();
    assert!(o.iter().all(|x| x.is_finite()));
    for h in 0..2 {
        for i in 0..2 {
            let row = &o[(h * 5 + i) * 4..(h * 5 + i + 1) * 4];
            assert_eq!(row, &[0.0; 4], "head {h} row {i}");
        }
    }
    assert_close(&o, &reference(&q, &k, &v, true, Some(&keep), None), 1e-4, 1e-5);
    let grads = out.sum_all().unwrap().backward().unwrap();
    let gq = grads.get(&q).unwrap().to_vec::<f32>().unwrap();
    assert!(gq.iter().all(|x| x.is_finite()));
    for h in 0..2 {
        assert_eq!(&gq[h * 15..h * 15 + 6], &[0.0; 6], "dq of masked rows, head {h}");
    }
    for t in [&k, &v] {
        assert!(grads.get(t).unwrap().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()));
    }
    // Every key masked: all zeros.
    let none = Tensor::zeros(&[2, 5], DType::U8);
    let out = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::none().with_key_padding(&none)).unwrap();
    assert!(out.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn attention_grouped_query_heads() {
    let c = Case { batch: 2, heads: 4, kv_heads: 2, tq: 7, tk: 7, d: 5, dv: 6 };
    check(&c, &AttentionMask::none(), None, 60);
    check(&c, &AttentionMask::causal(), None, 61);
    // Same as repeating each kv head over its group (LLaMA's repeat_kv).
    let (q, k, v) = inputs(&c, 62);
    let rep = |t: &Tensor| {
        let (b, hk, s, n) = (t.dims()[0], t.dims()[1], t.dims()[2], t.dims()[3]);
        t.unsqueeze(2)
            .unwrap()
            .expand(&[b, hk, 2, s, n])
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape(&[b, hk * 2, s, n])
            .unwrap()
    };
    let a = scaled_dot_product_attention(&q, &k, &v, &AttentionMask::causal()).unwrap();
    let b = scaled_dot_product_attention(&q, &rep(&k), &rep(&v), &AttentionMask::causal()).unwrap();
    assert_close(&a.to_vec::<f32>().unwrap(), &b.to_vec::<f32>().unwrap(), 1e-6, 1e-7);
}

#[test]
fn attention_decode_step() {
    // One new token against a cache of 8 past keys: causal sees all 9.
    let c = Case { batch: 2, heads: 4, kv_heads: 2, tq: 1, tk: 9, d: 5, dv: 5 };
    check(&c, &AttentionMask::causal(), None, 70);
    check(&c, &AttentionMask::none(), None, 71);
    let keep = padding(c.tk, 3, 0);
    let m = padding_tensor(&keep, c.tk, DType::I64);
    check(&c, &AttentionMask::causal().with_key_padding(&m), Some(&keep), 72);
}

#[test]
fn attention_many_query_blocks() {
    // More query rows than one block, causal with a prefix and padding.
    let c = Case { batch: 2, heads: 2, kv_heads: 1, tq: 131, tk: 136, d: 13, dv: 9 };
    let keep = padding(c.tk, 4, 7);
    let m = padding_tensor(&keep, c.tk, DType::U8);
    check(&c, &AttentionMask::causal().with_key_padding(&m), Some(&keep), 80);
    check(&c, &AttentionMask::none(), None, 81);
}

#[test]
fn attention_non_contiguous_inputs() {
    // Projections come out as [b, t, h, d]; attention gets their transposes.
    let (b, h, hk, tq, tk, d, dv) = (2, 4, 2, 7, 9, 5, 3);
    let q = randn(&[b, tq, h, d], 90).transpose(1, 2).unwrap();
    let k = randn(&[b, tk, hk, d], 91).transpose(1, 2).unwrap();
    // v with a non-unit column stride too.
    let v = randn(&[b, hk, dv, tk], 92).transpose(2, 3).unwrap();
    assert!(!q.is_contiguous() && !k.is_contiguous() && !v.is_contiguous());
    let keep = padding(tk, 1, 2);
    let m = padding_tensor(&keep, tk, DType::F32);
    for mask in [AttentionMask::none(), AttentionMask::causal().with_key_padding(&m)] {
        let out = scaled_dot_product_attention(&q, &k, &v, &mask).unwrap();
        let (qc, kc, vc) = (q.contiguous().unwrap(), k.contiguous().unwrap(), v.contiguous().unwrap());
        let want = reference(&qc, &kc, &vc, mask.causal, mask.key_padding.map(|_| &keep[..]), None);
        assert_close(&out.to_vec::<f32>().unwrap(), &want, 1e-4, 1e-5);
    }
}

#[test]
fn attention_gradients_causal_prefix_padding_gqa() {
    // heads 4 over 2 kv heads, 2 prefix keys, batch 0 left-padded, batch 1 right-padded.
    let (b, h, hk, tq, tk, d, dv) = (2, 4, 2, 3, 5, 3, 4);
    let keep = padding(tk, 1, 1);
    let m = padding_tensor(&keep, tk, DType::U8);
    let mask = AttentionMask::causal().with_key_padding(&m);
    gradcheck(
        |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], &mask),
        &[randn(&[b, h, tq, d], 100), randn(&[b, hk, tk, d], 101), randn(&[b, hk, tk, dv], 102)],
    );
}

#[test]
fn attention_gradients_with_masked_rows_and_strided_inputs() {
    // Causal + left padding of 2 (two fully masked query rows), inputs given as [b, t, h, d] and
    // transposed inside, so the backward reads strided views.
    let (b, h, hk, t, d, dv) = (2, 2, 1, 4, 3, 2);
    let keep = padding(t, 2, 1);
    let m = padding_tensor(&keep, t, DType::I64);
    let mask = AttentionMask::causal().with_key_padding(&m).with_scale(0.7);
    gradcheck(
        |x| {
            let (q, k, v) = (x[0].transpose(1, 2)?, x[1].transpose(1, 2)?, x[2].transpose(1, 2)?);
            scaled_dot_product_attention(&q, &k, &v, &mask)
        },
        &[randn(&[b, t, h, d], 110), randn(&[b, t, hk, d], 111), randn(&[b, t, hk, dv], 112)],
    );
}

#[test]
fn attention_gradients_across_query_blocks() {
    let (tq, tk) = (67, 70);
    let mask = AttentionMask::causal();
    gradcheck(
        |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], &mask),
        &[randn(&[1, 2, tq, 2], 120), randn(&[1, 1, tk, 2], 121), randn(&[1, 1, tk, 1], 122)],
    );
}

#[test]
fn attention_gradient_only_for_some_inputs() {
    let (q, k, v) = inputs(&Case { batch: 1, heads: 2, kv_heads: 1, tq: 3, tk: 4, d: 3, dv: 2 }, 130);
    let vv = v.requires_grad().unwrap();
    let out = scaled_dot_product_attention(&q, &k, &vv, &AttentionMask::causal()).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&vv).unwrap().dims(), &[1, 1, 4, 2]);
    // Without any input that tracks, nothing is recorded.
    assert!(!scaled_dot_product_attention(&q, &k, &v, &AttentionMask::none()).unwrap().tracks_grad());
}

#[test]
fn attention_shape_errors() {
    let q = randn(&[1, 3, 4, 5], 1);
    let k = randn(&[1, 2, 4, 5], 2);
    let v = randn(&[1, 2, 4, 5], 3);
    assert!(scaled_dot_product_attention(&q, &k, &v, &AttentionMask::none()).is_err(), "3 heads over 2 kv heads");
    let q = randn(&[1, 2, 4, 5], 1);
    assert!(scaled_dot_product_attention(&q, &k, &randn(&[1, 2, 3, 5], 4), &AttentionMask::none()).is_err());
    assert!(scaled_dot_product_attention(&q, &randn(&[1, 2, 4, 6], 5), &v, &AttentionMask::none()).is_err());
    assert!(scaled_dot_product_attention(&q.reshape(&[2, 4, 5]).unwrap(), &k, &v, &AttentionMask::none()).is_err());
    let bad = Tensor::ones(&[1, 5], DType::U8).unwrap();
    assert!(scaled_dot_product_attention(&q, &k, &v, &AttentionMask::none().with_key_padding(&bad)).is_err());
}

// ----- rope ---------------------------------------------------------------------------------------

/// HF's `q * cos + rotate_half(q) * sin`, `cos`/`sin` indexed `[b][t][i]` through `tab`.
fn rope_reference(x: &Tensor, tab: impl Fn(usize, usize, usize) -> (f32, f32)) -> Vec<f32> {
    let xv = x.to_vec::<f32>().unwrap();
    let (b, h, t, hd) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    let half = hd / 2;
    let mut out = vec![0.0; xv.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                let row = ((bi * h + hi) * t + ti) * hd;
                for i in 0..hd {
                    let rot = if i < half { -xv[row + i + half] } else { xv[row + i - half] };
                    let (c, s) = tab(bi, ti, i);
                    out[row + i] = xv[row + i] * c + rot * s;
                }
            }
        }
    }
    out
}

#[test]
fn rope_tables_match_direct_math() {
    let (hd, theta) = (10, 10000.0f32);
    let positions = [0i64, 1, 2, 5, 37, 100];
    let pos = Tensor::from_vec(positions.to_vec(), &[6]).unwrap();
    let (cos, sin) = rope_tables(&pos, hd, theta).unwrap();
    assert_eq!(cos.dims(), &[6, hd]);
    let (cv, sv) = (cos.to_vec::<f32>().unwrap(), sin.to_vec::<f32>().unwrap());
    for (ti, &p) in positions.iter().enumerate() {
        for i in 0..hd {
            let inv = (theta as f64).powf(-2.0 * (i % (hd / 2)) as f64 / hd as f64);
            let a = p as f64 * inv;
            let at = ti * hd + i;
            assert!((cv[at] as f64 - a.cos()).abs() < 2e-5, "cos p={p} i={i}: {} vs {}", cv[at], a.cos());
            assert!((sv[at] as f64 - a.sin()).abs() < 2e-5, "sin p={p} i={i}: {} vs {}", sv[at], a.sin());
        }
    }
    // [batch, t] positions give [batch, t, hd], row by row the same.
    let pos2 = Tensor::from_vec(vec![0i64, 1, 2, 37, 100, 5], &[2, 3]).unwrap();
    let (c2, s2) = rope_tables(&pos2, hd, theta).unwrap();
    assert_eq!(c2.dims(), &[2, 3, hd]);
    let (c2, s2) = (c2.to_vec::<f32>().unwrap(), s2.to_vec::<f32>().unwrap());
    for (row, src) in [0usize, 1, 2, 4, 5, 3].iter().enumerate() {
        assert_eq!(&c2[row * hd..(row + 1) * hd], &cv[src * hd..(src + 1) * hd]);
        assert_eq!(&s2[row * hd..(row + 1) * hd], &sv[src * hd..(src + 1) * hd]);
    }
    assert!(rope_tables(&pos, 7, theta).is_err(), "odd head_dim");
}

#[test]
fn rope_matches_hf_formula() {
    let (b, h, t, hd) = (2, 3, 5, 10);
    let x = randn(&[b, h, t, hd], 200);
    let pos = Tensor::from_vec(vec![0i64, 1, 2, 9, 31], &[t]).unwrap();
    let (cos, sin) = rope_tables(&pos, hd, 10000.0).unwrap();
    let (cv, sv) = (cos.to_vec::<f32>().unwrap(), sin.to_vec::<f32>().unwrap());
    let want = rope_reference(&x, |_, ti, i| (cv[ti * hd + i], sv[ti * hd + i]));
    assert_close(&x.rope(&cos, &sin).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6, 1e-6);

    // Per-batch positions (left padding shifts them), and a non-contiguous x.
    let pos = Tensor::from_vec(vec![0i64, 0, 0, 1, 2, 0, 1, 2, 3, 4], &[b, t]).unwrap();
    let (cos, sin) = rope_tables(&pos, hd, 500000.0).unwrap();
    let (cv, sv) = (cos.to_vec::<f32>().unwrap(), sin.to_vec::<f32>().unwrap());
    let xt = randn(&[b, t, h, hd], 201).transpose(1, 2).unwrap();
    let want =
        rope_reference(&xt.contiguous().unwrap(), |bi, ti, i| (cv[(bi * t + ti) * hd + i], sv[(bi * t + ti) * hd + i]));
    assert_close(&xt.rope(&cos, &sin).unwrap().to_vec::<f32>().unwrap(), &want, 1e-6, 1e-6);
    // Position 0 is the identity.
    let (c0, s0) = rope_tables(&Tensor::from_vec(vec![0i64; t], &[t]).unwrap(), hd, 10000.0).unwrap();
    assert_close(&x.rope(&c0, &s0).unwrap().to_vec::<f32>().unwrap(), &x.to_vec::<f32>().unwrap(), 0.0, 0.0);
}

#[test]
fn rope_gradients() {
    let pos = Tensor::from_vec(vec![3i64, 4, 5, 6], &[4]).unwrap();
    let (cos, sin) = rope_tables(&pos, 6, 10000.0).unwrap();
    gradcheck(|x| x[0].rope(&cos, &sin), &[randn(&[2, 3, 4, 6], 210)]);
    let pos = Tensor::from_vec(vec![0i64, 1, 2, 3, 7, 1, 5, 9], &[2, 4]).unwrap();
    let (cos, sin) = rope_tables(&pos, 6, 100.0).unwrap();
    gradcheck(|x| x[0].transpose(1, 2)?.rope(&cos, &sin), &[randn(&[2, 4, 3, 6], 211)]);
}

#[test]
fn rope_shape_errors() {
    let pos = Tensor::arange_i64(0, 4).unwrap();
    let (cos, sin) = rope_tables(&pos, 6, 10000.0).unwrap();
    assert!(randn(&[1, 2, 4, 5], 1).rope(&cos, &sin).is_err(), "odd head_dim");
    assert!(randn(&[1, 2, 3, 6], 1).rope(&cos, &sin).is_err(), "t differs");
    assert!(randn(&[2, 4, 6], 1).rope(&cos, &sin).is_err(), "rank 3 x");
    let (c3, s3) = rope_tables(&Tensor::from_vec(vec![0i64; 12], &[3, 4]).unwrap(), 6, 10000.0).unwrap();
    assert!(randn(&[2, 2, 4, 6], 1).rope(&c3, &s3).is_err(), "batch differs");
    assert!(randn(&[3, 2, 4, 6], 1).rope(&c3, &s3).is_ok());
}
