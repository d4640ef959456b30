//! Reductions, sum_to, softmax / log-softmax and cross-entropy on the GPU.
use crate::common::{assert_close, check, gpu, host, rand};
use engine::{Device, Tensor};

#[test]
fn sums_and_means_over_dims_views_and_everything() {
    let x = rand(&[5, 37, 70], 11);
    let cases: [(&str, &[usize], bool); 7] = [
        ("last", &[2], false),
        ("middle keepdim", &[1], true),
        ("first", &[0], false),
        ("adjacent pair", &[1, 2], false),
        ("adjacent pair keepdim", &[0, 1], true),
        ("outer two", &[2, 0], true),
        ("all three", &[0, 1, 2], false),
    ];
    for (name, dims, keep) in cases {
        check(&format!("sum {name}"), std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].sum(dims, keep));
        check(&format!("mean {name}"), std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].mean(dims, keep));
    }
    check("sum of a transposed narrow", std::slice::from_ref(&x), &[true], 1e-5, |v| {
        v[0].narrow(1, 3, 30)?.transpose(1, 2)?.sum(&[1], false)
    });
    check("sum_all", std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].sum_all());
    check("mean_all of a view", std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].narrow(2, 1, 33)?.mean_all());
    check("sum over no dims", std::slice::from_ref(&x), &[true], 0.0, |v| v[0].sum(&[], false));
}

#[test]
fn sum_to_undoes_broadcasting() {
    let x = rand(&[4, 37, 70], 12);
    for shape in [&[37, 70][..], &[37, 1], &[1, 70], &[70], &[4, 1, 70], &[1, 1, 1]] {
        check(&format!("sum_to {shape:?}"), std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].sum_to(shape));
    }
    // The backward of a broadcasting add, all on the GPU.
    let b = rand(&[37, 1], 13);
    check("broadcast add backward", &[x.clone(), b], &[true, true], 1e-5, |v| v[0].add(&v[1]));
}

#[test]
fn empty_tensors_reduce_like_the_host() {
    let Some(dev) = gpu() else { return };
    let x = Tensor::zeros(&[3, 0, 5], engine::DType::F32).to_device(dev).unwrap();
    let s = x.sum(&[1], false).unwrap();
    assert_eq!(s.shape(), &[3, 5]);
    assert_eq!(host(&s), vec![0.0; 15]);
    assert_eq!(x.sum(&[0], false).unwrap().shape(), &[0, 5]);
    assert_eq!(x.max(0, false).unwrap().shape(), &[0, 5]);
    assert_eq!(x.argmax(2, true).unwrap().shape(), &[3, 0, 1]);
    assert!(x.max(1, false).is_err(), "max over an empty dim");
    assert_eq!(x.softmax(2).unwrap().shape(), &[3, 0, 5]);
    let logits = Tensor::zeros(&[0, 10], engine::DType::F32).to_device(dev).unwrap();
    let none = Tensor::from_vec(Vec::<i64>::new(), &[0]).unwrap();
    assert_eq!(host(&logits.cross_entropy(&none).unwrap()), vec![0.0]);
}

/// Values with many ties (multiples of 0.5 in [-1, 1]), plus the special values the host handles.
fn tied(shape: &[usize], seed: u64) -> Tensor {
    let v = rand(shape, seed).affine(2.0, 0.0).unwrap().to_vec_f32().unwrap();
    Tensor::from_vec(v.iter().map(|x| x.round() * 0.5).collect::<Vec<f32>>(), shape).unwrap()
}

/// Non-finite values equal (NaN to NaN), finite ones within `rel` of max(1, |host|).
fn assert_near(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let ok =
            if b.is_finite() { (a - b).abs() <= rel * b.abs().max(1.0) } else { a == b || (a.is_nan() && b.is_nan()) };
        assert!(ok, "{what}[{i}]: gpu {a}, host {b}");
    }
}

fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_near(what, got, want, 0.0);
}

fn with_specials(shape: &[usize]) -> Tensor {
    let mut v = tied(shape, 21).to_vec_f32().unwrap();
    let last = shape[shape.len() - 1];
    // Row 0: all -inf; row 1: NaN after the maximum; row 2: +inf twice; row 3: NaN first, then +inf.
    v[..last].fill(f32::NEG_INFINITY);
    v[last + 5] = f32::NAN;
    v[last + 1] = 7.0;
    v[2 * last + 2] = f32::INFINITY;
    v[2 * last + 4] = f32::INFINITY;
    v[3 * last] = f32::NAN;
    v[3 * last + 3] = f32::INFINITY;
    v[4 * last + 1] = f32::NEG_INFINITY;
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn max_and_argmax_pick_the_first_maximum_like_the_host() {
    let x = tied(&[6, 37, 45], 14);
    for dim in 0..3 {
        for keep in [false, true] {
            check(&format!("max dim {dim} keepdim {keep}"), std::slice::from_ref(&x), &[true], 0.0, |v| {
                v[0].max(dim, keep)
            });
        }
    }
    check("max of a transposed view", std::slice::from_ref(&x), &[true], 0.0, |v| v[0].transpose(0, 2)?.max(1, false));
    let specials = with_specials(&[6, 45]);

    let Some(dev) = gpu() else { return };
    // Infinities make `check`'s relative tolerance NaN: compare exactly here.
    let (xc, xg) = (specials.requires_grad().unwrap(), specials.to_device(dev).unwrap().requires_grad().unwrap());
    let (mc, mg) = (xc.max(1, false).unwrap(), xg.max(1, false).unwrap());
    assert_eq!(mg.device(), dev);
    assert_same("max with inf and NaN", &host(&mg), &host(&mc));
    let w = rand(&[6], 23);
    let gc = mc.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let gg = mg.mul(&w.to_device(dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    assert_same("max with inf and NaN grad", &host(gg.get(&xg).unwrap()), &host(gc.get(&xc).unwrap()));

    for (name, t) in [("tied", x.clone()), ("specials", specials.reshape(&[1, 6, 45]).unwrap())] {
        for dim in 0..3 {
            for keep in [false, true] {
                let want = t.argmax(dim, keep).unwrap();
                let got = t.to_device(dev).unwrap().argmax(dim, keep).unwrap();
                assert_eq!(got.device(), dev, "argmax {name} {dim}: left the GPU");
                assert_eq!(got.shape(), want.shape());
                let got = got.to_device(Device::Cpu).unwrap().to_vec::<i64>().unwrap();
                assert_eq!(got, want.to_vec::<i64>().unwrap(), "argmax {name} dim {dim} keepdim {keep}");
            }
        }
    }
}

#[test]
fn softmax_and_log_softmax_over_any_dim() {
    let x = rand(&[3, 37, 70], 15).affine(4.0, 0.0).unwrap();
    for dim in 0..3 {
        check(&format!("softmax dim {dim}"), std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].softmax(dim));
        check(&format!("log_softmax dim {dim}"), std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].log_softmax(dim));
    }
    // A narrowed contiguous block (an offset into the storage), a long row, rows of one.
    check("softmax of a narrow", std::slice::from_ref(&x), &[true], 1e-5, |v| v[0].narrow(0, 1, 2)?.softmax(2));
    let long = rand(&[5, 1500], 16).affine(10.0, 0.0).unwrap();
    check("softmax long rows", std::slice::from_ref(&long), &[true], 1e-5, |v| v[0].softmax(1));
    check("log_softmax long rows", std::slice::from_ref(&long), &[true], 1e-5, |v| v[0].log_softmax(1));
    check("softmax rows of one", std::slice::from_ref(&long), &[true], 1e-5, |v| v[0].log_softmax(0)?.softmax(0));
}

#[test]
fn softmax_rows_of_only_minus_infinity_are_zero_like_the_host() {
    let Some(dev) = gpu() else { return };
    let mut v = rand(&[5, 40], 24).to_vec_f32().unwrap();
    v[..40].fill(f32::NEG_INFINITY);
    v[40 + 7] = f32::NAN;
    v[80 + 3] = f32::INFINITY;
    v[120..140].fill(f32::NEG_INFINITY);
    let x = Tensor::from_vec(v, &[5, 40]).unwrap();
    for log in [false, true] {
        let f = |t: &Tensor| if log { t.log_softmax(1) } else { t.softmax(1) };
        let (xc, xg) = (x.requires_grad().unwrap(), x.to_device(dev).unwrap().requires_grad().unwrap());
        let (yc, yg) = (f(&xc).unwrap(), f(&xg).unwrap());
        assert_near(&format!("log {log} forward"), &host(&yg), &host(&yc), 1e-5);
        // Upstream gradient only on the all -inf row and the ordinary rows (the others are NaN).
        let w: Vec<f32> =
            (0..200).map(|i| if (40..120).contains(&i) { 0.0 } else { ((i * 7) % 11) as f32 / 11.0 - 0.5 }).collect();
        let w = Tensor::from_vec(w, &[5, 40]).unwrap();
        // The forward sum may be inf or NaN; only the gradients are compared.
        let gc = yc.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gg = yg.mul(&w.to_device(dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let (gc, gg) = (host(gc.get(&xc).unwrap()), host(gg.get(&xg).unwrap()));
        assert_near(&format!("log {log} grad row 0"), &gg[..40], &gc[..40], 1e-5);
        assert_near(&format!("log {log} grad rows 3-4"), &gg[120..], &gc[120..], 1e-5);
    }
}

fn targets(rows: usize, classes: usize, ignore: i64, seed: u64) -> Tensor {
    let r = rand(&[rows], seed).to_vec_f32().unwrap();
    let t: Vec<i64> = r
        .iter()
        .enumerate()
        .map(|(i, &u)| if i % 5 == 3 { ignore } else { (((u + 1.0) / 2.0) * classes as f32) as i64 % classes as i64 })
        .collect();
    Tensor::from_vec(t, &[rows]).unwrap()
}

#[test]
fn cross_entropy_matches_the_host_with_ignored_rows() {
    let logits = rand(&[4, 9, 131], 17).affine(5.0, 0.0).unwrap();
    let t = targets(36, 131, -100, 18).reshape(&[4, 9]).unwrap();
    // Targets travel with the logits here (on the GPU for the GPU run).
    check("cross_entropy", &[logits.clone(), t.clone()], &[true, false], 1e-5, |v| v[0].cross_entropy(&v[1]));
    let t3 = targets(36, 131, 3, 19).reshape(&[4, 9]).unwrap();
    check("cross_entropy ignore 3", &[logits.clone(), t3], &[true, false], 1e-5, |v| v[0].cross_entropy_with(&v[1], 3));
    check("cross_entropy on a view", &[logits.clone(), t.clone()], &[true, false], 1e-5, |v| {
        v[0].narrow(2, 0, 131)?.transpose(0, 1)?.cross_entropy(&v[1].t()?)
    });
    let long = rand(&[3, 2000], 20).affine(8.0, 0.0).unwrap();
    let lt = Tensor::from_vec(vec![1999i64, 0, 1234], &[3]).unwrap();
    check("cross_entropy long rows", &[long, lt], &[true, false], 1e-5, |v| v[0].cross_entropy(&v[1]));

    let Some(dev) = gpu() else { return };
    // Host targets with GPU logits, and GPU targets with host logits.
    let want = logits.cross_entropy(&t).unwrap();
    let got = logits.to_device(dev).unwrap().cross_entropy(&t).unwrap();
    assert_close("cross_entropy with host targets", &got, &want, 1e-5);
    let on_host = logits.cross_entropy(&t.to_device(dev).unwrap()).unwrap();
    assert_eq!(on_host.device(), Device::Cpu);
    assert_eq!(on_host.to_scalar().unwrap(), want.to_scalar().unwrap());
}

#[test]
fn cross_entropy_edge_cases() {
    let Some(dev) = gpu() else { return };
    let logits = rand(&[6, 10], 22).to_device(dev).unwrap().requires_grad().unwrap();
    let all_ignored = Tensor::from_vec(vec![-100i64; 6], &[6]).unwrap();
    let loss = logits.cross_entropy(&all_ignored).unwrap();
    assert_eq!(loss.device(), dev);
    assert_eq!(host(&loss), vec![0.0]);
    let grads = loss.backward().unwrap();
    let g = grads.get(&logits).unwrap();
    assert_eq!(g.device(), dev);
    assert_eq!(host(g), vec![0.0; 60]);

    let bad = Tensor::from_vec(vec![0i64, 1, 10, 2, 3, 4], &[6]).unwrap().to_device(dev).unwrap();
    let e = logits.cross_entropy(&bad).unwrap_err().to_string();
    assert!(e.contains("target 10") && e.contains("out of range"), "{e}");
    let short = Tensor::from_vec(vec![0i64, 1], &[2]).unwrap();
    assert!(logits.cross_entropy(&short).is_err());
}
