//! where_cond / masked_fill, comparisons, cat / stack, narrow's backward and u8 <-> f32 casts on the
//! GPU, each against the same op on the host (forward values exactly where the op only moves or
//! compares values, gradients through both devices' autograd).
use crate::common::{assert_close, check, gpu, host, rand};
use engine::{DType, Device, Tensor};

/// Exact equality of two tensors' values, infinities and NaN included (NaN equals NaN).
fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.device(), Device::Cuda(0), "{what}: the result left the GPU");
    for (i, (a, b)) in host(got).iter().zip(host(want)).enumerate() {
        assert!(a == &b || (a.is_nan() && b.is_nan()), "{what}[{i}]: gpu {a}, host {b}");
    }
}

fn u8_mask(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<u8> = (0..n).map(|i| ((i as u64 * 7 + seed * 13) % 5 < 2) as u8 * (1 + (i % 3) as u8)).collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn where_cond_broadcasts_mask_and_values_forward_and_backward() {
    let a = rand(&[5, 37, 70], 1);
    let b = rand(&[70], 2);
    let mask = u8_mask(&[5, 37, 1], 3);
    check("where", &[mask.clone(), a.clone(), b.clone()], &[false, true, true], 1e-5, |v| {
        Tensor::where_cond(&v[0], &v[1], &v[2])
    });
    // Views: a transposed mask and a narrowed (offset) on_false.
    let wide = rand(&[70, 40], 4);
    check("where of views", &[u8_mask(&[70, 37], 5), a.clone(), wide], &[false, true, true], 1e-5, |v| {
        Tensor::where_cond(&v[0].t()?, &v[1], &v[2].narrow(1, 3, 37)?.t()?)
    });
    // A mask made on the GPU by a comparison (the maximum pattern).
    let c = rand(&[37, 70], 6);
    check("where of gt", &[a.clone(), c], &[true, true], 1e-5, |v| Tensor::where_cond(&v[0].gt(&v[1])?, &v[0], &v[1]));
    // Any mask dtype: nonzero selects, NaN included (f32 mask with 0, 0.5, -2, NaN).
    let fm: Vec<f32> = (0..37 * 70).map(|i| [0.0, 0.5, -2.0, f32::NAN, 0.0][i % 5]).collect();
    let fmask = Tensor::from_vec(fm, &[37, 70]).unwrap();
    check("where, f32 mask", &[fmask, a.clone(), b.clone()], &[false, true, true], 1e-5, |v| {
        Tensor::where_cond(&v[0], &v[1], &v[2])
    });
}

#[test]
fn masked_fill_with_minus_infinity_keeps_the_rest_and_its_gradient() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[3, 33, 65], 7);
    let mask = u8_mask(&[3, 1, 65], 8);
    let want = x.masked_fill(&mask, f32::NEG_INFINITY).unwrap();
    let (xg, mg) = (x.to_device(dev).unwrap().requires_grad().unwrap(), mask.to_device(dev).unwrap());
    let got = xg.masked_fill(&mg, f32::NEG_INFINITY).unwrap();
    assert_same("masked_fill -inf", &got, &want);
    // The filled positions get no gradient (never NaN); the others get the upstream one unchanged.
    let w = rand(&[3, 33, 65], 9);
    let grads = got.mul(&w.to_device(dev).unwrap()).unwrap().backward().unwrap();
    let want_grad = Tensor::where_cond(&mask, &Tensor::scalar(0.0), &w).unwrap();
    assert_close("masked_fill grad", grads.get(&xg).unwrap(), &want_grad, 0.0);
    check("masked_fill -1e9", &[x, mask], &[true, false], 1e-5, |v| v[0].masked_fill(&v[1], -1e9));
}

#[test]
fn comparisons_give_u8_masks_with_the_host_nan_rules() {
    let Some(dev) = gpu() else { return };
    // Every third element of `a` equals `b`'s, some are NaN on either side; `b` broadcasts as a row.
    let b: Vec<f32> = (0..70).map(|j| if j % 11 == 0 { f32::NAN } else { (j as f32 * 0.37).sin() }).collect();
    let a: Vec<f32> = (0..37 * 70)
        .map(|i| match i % 7 {
            0 | 3 => b[i % 70],
            5 => f32::NAN,
            _ => ((i * 13) as f32 * 0.11).cos(),
        })
        .collect();
    let (a, b) = (Tensor::from_vec(a, &[37, 70]).unwrap(), Tensor::from_vec(b, &[70]).unwrap());
    let (ag, bg) = (a.to_device(dev).unwrap(), b.to_device(dev).unwrap());
    type Op = fn(&Tensor, &Tensor) -> engine::Result<Tensor>;
    let ops: [(&str, Op); 3] = [("ge", |x, y| x.ge(y)), ("gt", |x, y| x.gt(y)), ("eq", |x, y| x.eq_mask(y))];
    for (name, op) in ops {
        let got = op(&ag, &bg).unwrap();
        assert_eq!(got.dtype(), DType::U8, "{name}");
        assert_same(name, &got, &op(&a, &b).unwrap());
        // Swapped operands, and a transposed view against a column.
        assert_same(&format!("{name} swapped"), &op(&bg, &ag).unwrap(), &op(&b, &a).unwrap());
        let col = b.narrow(0, 0, 37).unwrap().reshape(&[37, 1]).unwrap();
        let colg = col.to_device(dev).unwrap();
        let (at, atg) = (a.t().unwrap(), ag.t().unwrap());
        assert_same(
            &format!("{name} of views"),
            &op(&atg, &colg.t().unwrap()).unwrap(),
            &op(&at, &col.t().unwrap()).unwrap(),
        );
    }
    // u8 operands are compared as f32 (widened on the GPU).
    let m = u8_mask(&[37, 70], 10);
    let mg = m.to_device(dev).unwrap();
    let one = Tensor::from_vec(vec![1u8], &[1]).unwrap();
    assert_same("u8 ge", &mg.ge(&one.to_device(dev).unwrap()).unwrap(), &m.ge(&one).unwrap());
    let e = ag.ge(&b).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}

#[test]
fn cat_along_each_dim_with_views_forward_and_backward() {
    let a = rand(&[4, 6, 70], 11);
    for dim in 0..3 {
        let mut sb = [4, 6, 70];
        sb[dim] = 3;
        let b = rand(&sb, 12);
        // A third part read through a transposed view of a differently shaped tensor.
        let mut sc = [4, 6, 70];
        sc[dim] = 5;
        let c = rand(&[sc[0], sc[2], sc[1]], 13);
        check(&format!("cat dim {dim}"), &[a.clone(), b, c], &[true, true, true], 1e-5, |v| {
            Tensor::cat(&[&v[0], &v[1], &v[2].transpose(1, 2)?], dim)
        });
    }
    // A narrowed part (storage offset) and a broadcast one, along the last dim.
    let wide = rand(&[4, 6, 90], 14);
    let row = rand(&[1, 1, 7], 15);
    check("cat of narrow and broadcast", &[a.clone(), wide, row], &[true, true, true], 1e-5, |v| {
        Tensor::cat(&[&v[1].narrow(2, 11, 33)?, &v[0], &v[2].broadcast_as(&[4, 6, 7])?], 2)
    });
    // A zero-length part.
    check("cat with an empty part", &[a.clone(), rand(&[4, 0, 70], 16)], &[true, false], 1e-5, |v| {
        Tensor::cat(&[&v[0], &v[1]], 1)
    });
}

#[test]
fn stack_along_each_dim_including_the_new_last() {
    let (a, b) = (rand(&[5, 37], 17), rand(&[37, 5], 18));
    for dim in 0..=2 {
        check(&format!("stack dim {dim}"), &[a.clone(), b.clone()], &[true, true], 1e-5, |v| {
            Tensor::stack(&[&v[0], &v[1].t()?, &v[0]], dim)
        });
    }
}

#[test]
fn narrow_backward_pads_the_gradient_into_zeros() {
    let x = rand(&[6, 37, 70], 19);
    for (dim, start, len) in [(0, 1, 4), (1, 3, 30), (2, 0, 69), (2, 40, 30)] {
        check(&format!("narrow dim {dim}"), std::slice::from_ref(&x), &[true], 1e-5, |v| {
            let n = v[0].narrow(dim, start, len)?;
            n.mul(&v[0].narrow(dim, 0, len)?)
        });
    }
    // Narrowing a transposed view: the gradient is padded, then transposed back.
    check("narrow of a transpose", std::slice::from_ref(&x), &[true], 1e-5, |v| {
        v[0].transpose(1, 2)?.narrow(1, 5, 50)?.mul_scalar(3.0)
    });
}

#[test]
fn u8_and_f32_casts_on_the_gpu_match_the_host() {
    let Some(dev) = gpu() else { return };
    let m = u8_mask(&[37, 70], 20);
    let mg = m.to_device(dev).unwrap();
    type View = fn(&Tensor) -> Tensor;
    let views: [(&str, View); 3] = [
        ("whole", |t| t.clone()),
        ("narrowed", |t| t.narrow(0, 5, 20).unwrap()),
        ("transposed", |t| t.t().unwrap().narrow(0, 3, 60).unwrap()),
    ];
    for (name, view) in views {
        let got = view(&mg).to_dtype(DType::F32).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_same(&format!("u8 -> f32, {name}"), &got, &view(&m).to_dtype(DType::F32).unwrap());
    }
    let special = [-3.5f32, -0.5, 0.0, 0.99, 1.0, 200.7, 255.0, 255.5, 1e9, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let f: Vec<f32> =
        (0..37 * 70).map(|i| if i % 9 == 0 { special[i / 9 % special.len()] } else { i as f32 * 0.3 }).collect();
    let f = Tensor::from_vec(f, &[37, 70]).unwrap();
    let fg = f.to_device(dev).unwrap();
    for (name, view) in views {
        let got = view(&fg).to_dtype(DType::U8).unwrap();
        assert_eq!(got.dtype(), DType::U8);
        assert_same(&format!("f32 -> u8, {name}"), &got, &view(&f).to_dtype(DType::U8).unwrap());
    }
    // Through f32: u8 <-> bf16.
    let h = mg.to_dtype(DType::BF16).unwrap();
    assert_eq!(h.dtype(), DType::BF16);
    assert_same("u8 -> bf16 -> u8", &h.to_dtype(DType::U8).unwrap(), &m);
}

#[test]
fn mixed_devices_are_an_error() {
    let Some(dev) = gpu() else { return };
    let (a, mask) = (rand(&[3, 4], 21), u8_mask(&[3, 4], 22));
    let ag = a.to_device(dev).unwrap();
    for e in [
        Tensor::where_cond(&mask, &ag, &ag).unwrap_err(),
        Tensor::where_cond(&mask.to_device(dev).unwrap(), &a, &ag).unwrap_err(),
        Tensor::cat(&[&ag, &a], 0).unwrap_err(),
        ag.masked_fill(&mask, 0.0).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
    }
}
