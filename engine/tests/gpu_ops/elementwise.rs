//! Unary and binary ops (with broadcasting and strided views), contiguous, casts and to_device.
use crate::common::{assert_close, check, gpu, rand};
use engine::{DType, Device, Tensor};

#[test]
fn unary_ops_forward_and_backward_on_a_transposed_view() {
    let x = rand(&[37, 70], 1);
    let pos = x.sqr().unwrap().add_scalar(0.1).unwrap();
    type Op = fn(&Tensor) -> engine::Result<Tensor>;
    let ops: [(&str, Op); 12] = [
        ("neg", |t| t.neg()),
        ("exp", |t| t.exp()),
        ("tanh", |t| t.tanh()),
        ("sigmoid", |t| t.sigmoid()),
        ("relu", |t| t.relu()),
        ("silu", |t| t.silu()),
        ("gelu", |t| t.gelu()),
        ("gelu_tanh", |t| t.gelu_tanh()),
        ("affine", |t| t.affine(-1.5, 0.25)),
        ("mul_scalar", |t| t.mul_scalar(3.0)),
        ("add_scalar", |t| t.add_scalar(-2.0)),
        ("sqr", |t| t.sqr()),
    ];
    for (name, op) in ops {
        check(name, std::slice::from_ref(&x), &[true], 1e-5, |v| op(&v[0].t()?));
    }
    let positive: [(&str, Op); 4] =
        [("log", |t| t.log()), ("sqrt", |t| t.sqrt()), ("recip", |t| t.recip()), ("powf", |t| t.powf(1.7))];
    for (name, op) in positive {
        check(name, std::slice::from_ref(&pos), &[true], 1e-5, |v| op(&v[0].t()?));
    }
}

#[test]
fn binary_ops_broadcast_and_read_views_in_place() {
    let a = rand(&[5, 37, 70], 2);
    let row = rand(&[70], 3);
    let col = rand(&[5, 37, 1], 4);
    let b = rand(&[5, 37, 70], 5).sqr().unwrap().add_scalar(0.5).unwrap();
    check("add row", &[a.clone(), row.clone()], &[true, true], 1e-5, |v| v[0].add(&v[1]));
    check("sub col", &[a.clone(), col.clone()], &[true, true], 1e-5, |v| v[0].sub(&v[1]));
    check("mul", &[a.clone(), b.clone()], &[true, true], 1e-5, |v| v[0].mul(&v[1]));
    check("div", &[a.clone(), b.clone()], &[true, true], 1e-5, |v| v[0].div(&v[1]));
    check("maximum", &[a.clone(), row.clone()], &[true, false], 1e-5, |v| v[0].maximum(&v[1]));
    // A narrowed view (offset into its storage) and a transposed one.
    check("mul of views", &[a.clone(), b.clone()], &[true, true], 1e-5, |v| {
        v[0].narrow(1, 3, 30)?.transpose(1, 2)?.mul(&v[1].narrow(1, 5, 30)?.transpose(1, 2)?)
    });
}

#[test]
fn contiguous_casts_and_moves_round_trip() {
    let Some(dev) = gpu() else { return };
    let x = rand(&[13, 29], 6);
    let view = x.t().unwrap().narrow(0, 2, 20).unwrap();
    let g = x.to_device(dev).unwrap().t().unwrap().narrow(0, 2, 20).unwrap();
    assert_close("contiguous", &g.contiguous().unwrap(), &view.contiguous().unwrap(), 0.0);
    for dtype in [DType::BF16, DType::F16] {
        // Rounded on the GPU, then widened on both: the same bits as the host's casts.
        let want = view.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
        let got = g.to_dtype(dtype).unwrap();
        assert_eq!(got.dtype(), dtype);
        assert_close(&format!("{dtype:?} round trip"), &got.to_dtype(DType::F32).unwrap(), &want, 0.0);
        let back = got.to_device(Device::Cpu).unwrap();
        assert_eq!(back.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    }
    let ids = Tensor::from_vec(vec![3i64, -1, 7], &[3]).unwrap();
    assert_eq!(ids.to_device(dev).unwrap().to_device(Device::Cpu).unwrap().to_vec::<i64>().unwrap(), vec![3, -1, 7]);
    let e = x.to_device(dev).unwrap().add(&x).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}
