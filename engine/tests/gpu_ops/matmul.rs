//! Matmul (batched, broadcast, views), the fused LoRA linear and scaled dot-product attention on the
//! GPU against the host, forward and every input gradient.
//! The packed (4-bit) Linear and QLoRA layer with bitsandbytes weights moved to the GPU, and the
//! errors for packed weights that are not there (host matrices, GGUF blocks).
//! Tolerance: 1e-4 relative to max(1, |value|) — the GPU sums hundreds of products in another order
//! than the host's GEMM (inner dims up to 300 here), so f32 rounding differs by a few 1e-6 relative.
use crate::common::{check, gpu, rand};
use engine::io::gguf::packed::GgufMatrix;
use engine::io::gguf::GgufFile;
use engine::quant::{Bnb4bit, PackedMatrix, QuantType};
use engine::{
    lora_linear, lora_linear_packed, packed_linear, scaled_dot_product_attention, AttentionMask, DType, Device, Tensor,
};
use std::sync::Arc;

const REL: f32 = 1e-4;
/// The packed products: the GPU's dequantized weights equal the host's bit for bit, so only the
/// order of the sums (inner dims up to 131) differs.
const PACKED_REL: f32 = 1e-5;

#[test]
fn matmul_2d_with_transposed_and_narrowed_views() {
    let (a, b) = (rand(&[67, 133], 1), rand(&[133, 300], 2));
    check("67x133 · 133x300", &[a.clone(), b.clone()], &[true, true], REL, |v| v[0].matmul(&v[1]));
    let (at, bt) = (rand(&[133, 67], 3), rand(&[300, 133], 4));
    check("Aᵀ · Bᵀ", &[at.clone(), bt.clone()], &[true, true], REL, |v| v[0].t()?.matmul(&v[1].t()?));
    check("A · Bᵀ", &[a.clone(), bt.clone()], &[true, true], REL, |v| v[0].matmul(&v[1].t()?));
    // Views with a storage offset and a row stride wider than the row.
    check("narrowed", &[a.clone(), b.clone()], &[true, true], REL, |v| {
        v[0].narrow(0, 5, 40)?.narrow(1, 3, 100)?.matmul(&v[1].narrow(0, 20, 100)?.narrow(1, 7, 201)?)
    });
    check("matrix · column", &[a, rand(&[133, 1], 5)], &[true, true], REL, |v| v[0].matmul(&v[1]));
}

#[test]
fn matmul_batched_and_broadcast() {
    let x3 = rand(&[5, 67, 33], 6);
    check("[5,67,33]·[5,33,41]", &[x3.clone(), rand(&[5, 33, 41], 7)], &[true, true], REL, |v| v[0].matmul(&v[1]));
    // Batch dims broadcast both ways: [4,1]·[3] -> [4,3].
    check("[4,1,17,23]·[3,23,19]", &[rand(&[4, 1, 17, 23], 8), rand(&[3, 23, 19], 9)], &[true, true], REL, |v| {
        v[0].matmul(&v[1])
    });
    // A batched left operand against one matrix (rows merged into one GEMM), and the reverse.
    check("[2,3,17,23]·[23,19]", &[rand(&[2, 3, 17, 23], 10), rand(&[23, 19], 11)], &[true, true], REL, |v| {
        v[0].matmul(&v[1])
    });
    check("[17,23]·[2,3,23,19]", &[rand(&[17, 23], 12), rand(&[2, 3, 23, 19], 13)], &[true, true], REL, |v| {
        v[0].matmul(&v[1])
    });
    // Batch dims that do not merge into one stride (a permuted view), with transposed matrices.
    check("permuted batch", &[rand(&[3, 23, 2, 17], 14), rand(&[2, 3, 19, 23], 15)], &[true, true], REL, |v| {
        v[0].permute(&[0, 2, 3, 1])?.matmul(&v[1].transpose(0, 1)?.transpose(2, 3)?)
    });
    // Two bf16 (or f16) operands go to the tensor-core GEMM: exact products and f32 sums, as the host's
    // widening to f32, so the same tolerance holds; views and broadcasts as above.
    for dtype in [DType::BF16, DType::F16] {
        let h = |t: Tensor| t.to_dtype(dtype).unwrap();
        let (a, b) = (h(rand(&[3, 23, 2, 17], 33)), h(rand(&[2, 3, 19, 23], 34)));
        check(&format!("{dtype:?} permuted batch"), &[a, b], &[false, false], REL, |v| {
            v[0].permute(&[0, 2, 3, 1])?.matmul(&v[1].transpose(0, 1)?.transpose(2, 3)?)
        });
        let (a, b) = (h(rand(&[4, 1, 67, 133], 35)), h(rand(&[3, 300, 133], 36)));
        check(&format!("{dtype:?} broadcast, Bᵀ"), &[a, b], &[false, false], REL, |v| {
            v[0].matmul(&v[1].transpose(1, 2)?)
        });
    }
    // bf16 inputs are computed in f32 (no gradient to them).
    check("bf16", &[x3.to_dtype(DType::BF16).unwrap(), rand(&[33, 9], 16)], &[false, true], REL, |v| {
        v[0].matmul(&v[1])
    });
}

#[test]
fn matmul_empty_inner_dim_and_errors() {
    let Some(dev) = gpu() else { return };
    check(
        "k = 0",
        &[Tensor::zeros(&[4, 0], DType::F32), Tensor::zeros(&[0, 5], DType::F32)],
        &[false, false],
        0.0,
        |v| v[0].matmul(&v[1]),
    );
    let a = rand(&[4, 6], 17).to_device(dev).unwrap();
    let e = a.matmul(&rand(&[6, 3], 18)).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
    let e = a.matmul(&rand(&[5, 3], 19).to_device(dev).unwrap()).unwrap_err().to_string();
    assert!(e.contains("inner dims differ"), "{e}");
}

#[test]
fn lora_linear_with_and_without_bias_and_dropout() {
    let (x, w, bias) = (rand(&[3, 7, 45], 20), rand(&[37, 45], 21), rand(&[37], 22));
    let (a, b) = (rand(&[5, 45], 23), rand(&[37, 5], 24));
    // A fixed inverted-dropout mask (0 or 2), so both devices see the same dropped input.
    let keep = rand(&[3, 7, 45], 25).ge(&Tensor::zeros(&[1], DType::F32)).unwrap().to_dtype(DType::F32).unwrap();
    let mask = keep.mul_scalar(2.0).unwrap();
    let inputs = [x.clone(), w.clone(), bias.clone(), a.clone(), b.clone(), mask];
    let all = [true, true, true, true, true, false];
    check("lora + bias", &inputs, &all, REL, |v| lora_linear(&v[0], &v[1], Some(&v[2]), &v[3], &v[4], 0.5, None));
    let no_bias = [true, true, false, true, true, false];
    check("lora, no bias", &inputs, &no_bias, REL, |v| lora_linear(&v[0], &v[1], None, &v[3], &v[4], 2.0, None));
    check("lora + dropout", &inputs, &all, REL, |v| {
        lora_linear(&v[0], &v[1], Some(&v[2]), &v[3], &v[4], 0.5, Some(&v[0].mul(&v[5])?))
    });
    // A transposed weight view, a narrowed (offset) bias and a frozen base.
    let wt = rand(&[45, 40], 26);
    let wide_bias = rand(&[40], 27);
    check("lora, views", &[x, wt, wide_bias, a, b], &[true, false, true, true, true], REL, |v| {
        lora_linear(
            &v[0].transpose(0, 1)?,
            &v[1].narrow(1, 2, 37)?.t()?,
            Some(&v[2].narrow(0, 3, 37)?),
            &v[3],
            &v[4],
            0.5,
            None,
        )
    });
}

/// The 4-bit weights the packed tests run on: NF4 with double quantization and FP4 without, odd
/// shapes (blocks that straddle rows, a trailing partial block), block sizes 64 and 128.
pub(crate) fn bnb4_cases() -> Vec<(&'static str, [usize; 2], Bnb4bit)> {
    let cases = [
        ("nf4+dq/64", [37, 45], QuantType::Nf4, 64, true),
        ("fp4/128", [29, 67], QuantType::Fp4, 128, false),
        ("nf4/128", [23, 131], QuantType::Nf4, 128, false),
        ("fp4+dq/64", [41, 33], QuantType::Fp4, 64, true),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, ty, bs, dq))| {
            let w = rand(&shape, 40 + i as u64).to_vec::<f32>().unwrap();
            (name, shape, Bnb4bit::quantize(&w, shape, ty, bs, dq).unwrap())
        })
        .collect()
}

/// The host matrix and its GPU copy, so a `check` closure can pick the one on its inputs' device.
pub(crate) fn host_and_gpu(q: Bnb4bit, dev: Device) -> (Arc<dyn PackedMatrix>, Arc<dyn PackedMatrix>) {
    let host: Arc<dyn PackedMatrix> = Arc::new(q);
    let on_gpu = engine::quant::to_device(&host, dev).unwrap();
    assert_eq!(on_gpu.device(), dev);
    (host, on_gpu)
}

pub(crate) fn pick<'a>(
    v: &Tensor,
    pair: &'a (Arc<dyn PackedMatrix>, Arc<dyn PackedMatrix>),
) -> &'a Arc<dyn PackedMatrix> {
    if v.device() == Device::Cpu {
        &pair.0
    } else {
        &pair.1
    }
}

#[test]
fn packed_linear_bnb4_forward_and_input_grad() {
    let Some(dev) = gpu() else { return };
    for (i, (name, [out_f, in_f], q)) in bnb4_cases().into_iter().enumerate() {
        let pair = host_and_gpu(q, dev);
        let seed = 50 + 10 * i as u64;
        let (x, bias) = (rand(&[3, 5, in_f], seed), rand(&[out_f], seed + 1));
        check(&format!("packed_linear {name} + bias"), &[x.clone(), bias], &[true, true], PACKED_REL, |v| {
            packed_linear(&v[0], pick(&v[0], &pair), Some(&v[1]))
        });
        check(&format!("packed_linear {name}, no bias"), std::slice::from_ref(&x), &[true], PACKED_REL, |v| {
            packed_linear(&v[0], pick(&v[0], &pair), None)
        });
        // A transposed input (read as a non-contiguous view) and a 1-D one.
        let xt = rand(&[in_f, 4], seed + 2);
        check(&format!("packed_linear {name}, view"), &[xt], &[true], PACKED_REL, |v| {
            packed_linear(&v[0].t()?, pick(&v[0], &pair), None)
        });
        check(&format!("packed_linear {name}, 1-D"), &[rand(&[in_f], seed + 3)], &[true], PACKED_REL, |v| {
            packed_linear(&v[0], pick(&v[0], &pair), None)
        });
    }
}

#[test]
fn bnb4_dequantized_on_the_gpu_equals_the_host() {
    let Some(dev) = gpu() else { return };
    for (name, [out_f, in_f], q) in bnb4_cases() {
        let (host, on_gpu) = host_and_gpu(q, dev);
        // The identity through packed_linear gives dequant(W)ᵀ exactly: each output is one product
        // by 1 plus products by 0 (which only turn FP4's -0 into +0, so values, not bits, compare).
        let eye_values: Vec<f32> = (0..in_f * in_f).map(|k| if k % (in_f + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let eye = Tensor::from_vec(eye_values, &[in_f, in_f]).unwrap();
        let got = engine::no_grad_scope(|| packed_linear(&eye.to_device(dev).unwrap(), &on_gpu, None)).unwrap();
        let mut want = vec![0f32; out_f * in_f];
        host.dequantize_rows(0..out_f, &mut want).unwrap();
        let got = crate::common::host(&got.t().unwrap());
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "{name}[{k}]");
        }
        // Back on the host: the host matrix itself.
        let back = engine::quant::to_device(&on_gpu, Device::Cpu).unwrap();
        assert!(Arc::ptr_eq(&back, &host) && back.device() == Device::Cpu);
        assert!(on_gpu.as_any().downcast_ref::<Bnb4bit>().is_some(), "{name}: as_any must reach the host Bnb4bit");
    }
}

#[test]
fn lora_linear_packed_bnb4_forward_and_grads() {
    let Some(dev) = gpu() else { return };
    for (i, (name, [out_f, in_f], q)) in bnb4_cases().into_iter().enumerate() {
        let pair = host_and_gpu(q, dev);
        let seed = 100 + 10 * i as u64;
        let (x, bias) = (rand(&[2, 7, in_f], seed), rand(&[out_f], seed + 1));
        let (a, b) = (rand(&[5, in_f], seed + 2), rand(&[out_f, 5], seed + 3));
        let keep = rand(&[2, 7, in_f], seed + 4).ge(&Tensor::zeros(&[1], DType::F32)).unwrap();
        let mask = keep.to_dtype(DType::F32).unwrap().mul_scalar(2.0).unwrap();
        let inputs = [x, bias, a, b, mask];
        check(&format!("qlora {name} + bias"), &inputs, &[true, true, true, true, false], PACKED_REL, |v| {
            lora_linear_packed(&v[0], pick(&v[0], &pair), Some(&v[1]), &v[2], &v[3], 0.5, None)
        });
        check(
            &format!("qlora {name}, no bias, dropout"),
            &inputs,
            &[true, false, true, true, false],
            PACKED_REL,
            |v| lora_linear_packed(&v[0], pick(&v[0], &pair), None, &v[2], &v[3], 2.0, Some(&v[0].mul(&v[4])?)),
        );
        // A transposed input view, and a frozen input (only the adapter trains).
        let xt = rand(&[in_f, 6], seed + 5);
        check(
            &format!("qlora {name}, view"),
            &[xt, inputs[2].clone(), inputs[3].clone()],
            &[false, true, true],
            PACKED_REL,
            |v| lora_linear_packed(&v[0].t()?, pick(&v[0], &pair), None, &v[1], &v[2], 0.5, None),
        );
    }
}

#[test]
fn packed_weights_off_the_gpu_are_clear_errors() {
    let Some(dev) = gpu() else { return };
    let w = rand(&[16, 64], 28).to_vec::<f32>().unwrap();
    let packed: Arc<dyn PackedMatrix> = Arc::new(Bnb4bit::quantize(&w, [16, 64], QuantType::Nf4, 64, false).unwrap());
    let on = |t: Tensor| t.to_device(dev).unwrap();
    let (x, a, b) = (on(rand(&[3, 64], 29)), on(rand(&[4, 64], 30)), on(rand(&[16, 4], 31)));
    // A host matrix under GPU activations: the error says how to move it.
    let e = lora_linear_packed(&x, &packed, None, &a, &b, 1.0, None).unwrap_err().to_string();
    assert!(e.contains("on the host") && e.contains("cuda:0") && e.contains("move_to_device"), "{e}");
    let e = packed_linear(&x, &packed, None).unwrap_err().to_string();
    assert!(e.contains("on the host") && e.contains("cuda:0"), "{e}");
    // Mixed activations are the usual device error.
    let on_gpu = engine::quant::to_device(&packed, dev).unwrap();
    let e = lora_linear_packed(&x, &on_gpu, None, &rand(&[4, 64], 32), &b, 1.0, None).unwrap_err().to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");

    // GGUF blocks have no GPU kernel: moving one is an error naming the format.
    let gguf = TempGguf::q8_0_two_rows();
    let file = GgufFile::open(&gguf.0).unwrap();
    let m: Arc<dyn PackedMatrix> = Arc::new(GgufMatrix::new(&file, "w", None).unwrap());
    let e = engine::quant::to_device(&m, dev).unwrap_err().to_string();
    assert!(e.contains("q8_0") && e.contains("no GPU kernel"), "{e}");
    // And used unmoved under GPU activations it is the same clear error as a host Bnb4bit.
    let e = packed_linear(&on(rand(&[3, 32], 33)), &m, None).unwrap_err().to_string();
    assert!(e.contains("on the host") && e.contains("cuda:0"), "{e}");
}

/// A GGUF file holding one Q8_0 `[2, 32]` matrix `w` (two rows of one block), removed on drop.
struct TempGguf(std::path::PathBuf);

impl TempGguf {
    fn q8_0_two_rows() -> TempGguf {
        let str_bytes = |s: &str| [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat();
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes()); // version
        f.extend(1u64.to_le_bytes()); // tensors
        f.extend(0u64.to_le_bytes()); // metadata entries
        f.extend(str_bytes("w"));
        f.extend(2u32.to_le_bytes()); // dims, innermost first
        f.extend(32u64.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(8u32.to_le_bytes()); // Q8_0
        f.extend(0u64.to_le_bytes()); // offset in the data section
        f.resize(f.len().next_multiple_of(32), 0);
        for row in 0..2u8 {
            f.extend(half::f16::from_f32(0.5).to_le_bytes()); // scale
            f.extend((0..32u8).map(|j| j.wrapping_mul(3).wrapping_add(row)));
        }
        let p = std::env::temp_dir().join(format!("gpu-ops-q8-{}.gguf", std::process::id()));
        std::fs::write(&p, f).unwrap();
        TempGguf(p)
    }
}

impl Drop for TempGguf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// q [b, h, tq, d], k [b, hk, tk, d], v [b, hk, tk, dv] as inputs of `check`.
fn qkv(b: usize, h: usize, hk: usize, tq: usize, tk: usize, d: usize, dv: usize, seed: u64) -> [Tensor; 3] {
    [rand(&[b, h, tq, d], seed), rand(&[b, hk, tk, d], seed + 1), rand(&[b, hk, tk, dv], seed + 2)]
}

fn sdpa(mask: AttentionMask<'_>) -> impl Fn(&[Tensor]) -> engine::Result<Tensor> + '_ {
    move |v| scaled_dot_product_attention(&v[0], &v[1], &v[2], &mask)
}

#[test]
fn attention_causal_and_full_with_grouped_query_heads() {
    let all = [true, true, true];
    check("full", &qkv(2, 3, 3, 19, 19, 24, 20, 40), &all, REL, sdpa(AttentionMask::none()));
    check("causal", &qkv(2, 3, 3, 19, 19, 24, 20, 43), &all, REL, sdpa(AttentionMask::causal()));
    check("causal GQA 6/2", &qkv(2, 6, 2, 19, 19, 24, 20, 46), &all, REL, sdpa(AttentionMask::causal()));
    check(
        "scale 0.3, GQA 4/1",
        &qkv(1, 4, 1, 13, 13, 8, 5, 49),
        &all,
        REL,
        sdpa(AttentionMask::none().with_scale(0.3)),
    );
    // Transposed projections ([b, t, h, d] viewed as [b, h, t, d]) are read as views.
    let proj = [rand(&[2, 19, 4, 24], 52), rand(&[2, 19, 2, 24], 53), rand(&[2, 19, 2, 20], 54)];
    check("transposed views", &proj, &all, REL, |v| {
        let t = |x: &Tensor| x.transpose(1, 2);
        scaled_dot_product_attention(&t(&v[0])?, &t(&v[1])?, &t(&v[2])?, &AttentionMask::causal())
    });
}

#[test]
fn attention_prefix_keys_and_more_queries_than_keys() {
    let all = [true, true, true];
    // Key/value prefix longer than the queries (prefix tuning, a KV cache): every query sees it.
    check("prefix causal", &qkv(2, 4, 2, 11, 30, 16, 16, 60), &all, REL, sdpa(AttentionMask::causal()));
    check("one new token", &qkv(2, 4, 4, 1, 30, 16, 16, 63), &all, REL, sdpa(AttentionMask::causal()));
    check("prefix full", &qkv(1, 2, 2, 11, 30, 16, 9, 66), &all, REL, sdpa(AttentionMask::none()));
    // Fewer keys than queries under a causal mask: the first tq - tk queries see nothing.
    check("tk < tq causal", &qkv(2, 4, 2, 19, 7, 16, 12, 69), &all, REL, sdpa(AttentionMask::causal()));
    check("tk < tq full", &qkv(2, 2, 2, 19, 7, 16, 12, 72), &all, REL, sdpa(AttentionMask::none()));
    // No key at all: zeros and zero gradients, on the GPU.
    check("no keys", &qkv(1, 2, 2, 5, 0, 4, 4, 75), &all, REL, sdpa(AttentionMask::causal()));
}

#[test]
fn attention_key_padding() {
    let Some(dev) = gpu() else { return };
    let all = [true, true, true];
    // Batch 0 left-padded by 5 (under a causal mask its first queries see no key at all), batch 1
    // with holes; an f32 mask on the host and the same as u8 on the GPU.
    let mut m = vec![1.0f32; 2 * 19];
    m[..5].iter_mut().for_each(|x| *x = 0.0);
    for j in [19 + 2, 19 + 11, 19 + 18] {
        m[j] = 0.0;
    }
    let pad = Tensor::from_vec(m, &[2, 19]).unwrap();
    let pad_u8 = pad.to_dtype(DType::U8).unwrap().to_device(dev).unwrap();
    let (causal, full) =
        (AttentionMask::causal().with_key_padding(&pad), AttentionMask::none().with_key_padding(&pad_u8));
    check("padding causal", &qkv(2, 4, 2, 19, 19, 24, 20, 80), &all, REL, sdpa(causal));
    check("padding full (mask on GPU)", &qkv(2, 4, 2, 19, 19, 24, 20, 83), &all, REL, sdpa(full));
    let pad7 = pad.narrow(1, 0, 7).unwrap();
    let short = AttentionMask::causal().with_key_padding(&pad7);
    check("padding, tk < tq", &qkv(2, 2, 1, 19, 7, 8, 8, 86), &all, REL, sdpa(short));
    // Only some inputs differentiated.
    check("grad of v only", &qkv(2, 2, 2, 9, 9, 8, 8, 89), &[false, false, true], REL, sdpa(AttentionMask::causal()));
    check("grads of q, k", &qkv(2, 2, 2, 9, 9, 8, 8, 92), &[true, true, false], REL, sdpa(AttentionMask::causal()));
}

#[test]
fn attention_mixed_devices_is_an_error() {
    let Some(dev) = gpu() else { return };
    let [q, k, v] = qkv(1, 2, 2, 5, 5, 4, 4, 95);
    let e = scaled_dot_product_attention(&q.to_device(dev).unwrap(), &k, &v, &AttentionMask::none()).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("Cuda(0)") && e.contains("Cpu"), "{e}");
}
