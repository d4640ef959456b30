//! nn layers: forwards against naive loops (the LSTM against an f64 implementation of PyTorch's
//! equations), gradients against finite differences, parameter names, init ranges, freezing and
//! loading.
mod common;
use common::*;
use engine::nn::{prefixed, Dropout, Embedding, LayerNorm, Linear, Lstm, LstmConfig, Module, RmsNorm};
use engine::{DType, Result, Tensor};
use std::collections::HashMap;

fn v(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

#[test]
fn linear_forward_matches_loops() {
    let lin = Linear::new(5, 3, true, 1).unwrap();
    let x = randn(&[2, 4, 5], 2);
    let y = lin.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 4, 3]);
    let (w, b, xv) = (v(&lin.weight), v(lin.bias.as_ref().unwrap()), v(&x));
    let mut want = vec![0.0f32; 2 * 4 * 3];
    for r in 0..8 {
        for o in 0..3 {
            let mut s = b[o] as f64;
            for i in 0..5 {
                s += xv[r * 5 + i] as f64 * w[o * 5 + i] as f64;
            }
            want[r * 3 + o] = s as f32;
        }
    }
    assert_close(&v(&y), &want, 1e-5, 1e-6);
    // 1-D input, no bias, transposed (non-contiguous) input.
    let nb = Linear::from_tensors(lin.weight.clone(), None).unwrap();
    let row_x = x.narrow(0, 1, 1).unwrap().narrow(1, 2, 1).unwrap().reshape(&[5]).unwrap(); // x[1, 2, :]
    let y1 = nb.forward(&row_x).unwrap();
    assert_eq!(y1.shape(), &[3]);
    let row = &want[(4 + 2) * 3..(4 + 2) * 3 + 3];
    assert_close(&v(&y1), &row.iter().zip(&b).map(|(a, b)| a - b).collect::<Vec<_>>(), 1e-5, 1e-6);
    let xt = randn(&[5, 4], 3).t().unwrap();
    let yt = lin.forward(&xt).unwrap();
    let yc = lin.forward(&xt.contiguous().unwrap()).unwrap();
    assert_close(&v(&yt), &v(&yc), 1e-6, 1e-7);
    assert!(lin.forward(&randn(&[2, 4], 4)).is_err());
    assert!(Linear::new(0, 3, true, 1).is_err());
    assert!(Linear::from_tensors(randn(&[3, 5], 1), Some(randn(&[4], 1))).is_err());
}

#[test]
fn linear_init_and_gradients() {
    let lin = Linear::new(16, 8, true, 7).unwrap();
    let bound = 1.0 / 4.0;
    for (name, p) in lin.named_parameters() {
        let vals = v(&p);
        assert!(vals.iter().all(|x| x.abs() <= bound), "{name} outside ±1/√in");
        let spread = vals.iter().cloned().fold(f32::MIN, f32::max) - vals.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > bound, "{name} looks degenerate");
        assert!(p.is_variable());
    }
    assert_eq!(lin.named_parameters().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["weight", "bias"]);
    assert_eq!(lin.num_parameters(), 16 * 8 + 8);
    // Same seed, same layer; another seed, another.
    assert_eq!(v(&Linear::new(16, 8, true, 7).unwrap().weight), v(&lin.weight));
    assert_ne!(v(&Linear::new(16, 8, true, 8).unwrap().weight), v(&lin.weight));
    gradcheck(
        |t| Linear::from_tensors(t[1].clone(), Some(t[2].clone()))?.forward(&t[0]),
        &[randn(&[2, 3, 4], 1), randn(&[5, 4], 2), randn(&[5], 3)],
    );
}

#[test]
fn embedding_forward_and_gradient() {
    let emb = Embedding::new(7, 4, 3).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 6, 0, 1, 3, 3], &[2, 3]).unwrap();
    let y = emb.forward(&ids).unwrap();
    assert_eq!(y.shape(), &[2, 3, 4]);
    let w = v(&emb.weight);
    let want: Vec<f32> = [1usize, 6, 0, 1, 3, 3].iter().flat_map(|&i| w[i * 4..i * 4 + 4].to_vec()).collect();
    assert_eq!(v(&y), want);
    // N(0, 1) init.
    let big = Embedding::new(200, 50, 4).unwrap();
    let vals = v(&big.weight);
    let mean = vals.iter().map(|&x| x as f64).sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    assert!(emb.forward(&Tensor::from_vec(vec![7i64], &[1]).unwrap()).is_err());
    assert!(emb.forward(&randn(&[2], 1)).is_err());
    let idc = ids.clone();
    gradcheck(move |t| Embedding::from_tensor(t[0].clone())?.forward(&idc), &[randn(&[7, 4], 5)]);
}

#[test]
fn layer_norm_and_rms_norm_match_loops() {
    let d = 6;
    let x = randn(&[3, 2, d], 1).mul_scalar(2.0).unwrap().add_scalar(0.5).unwrap();
    let (w, b) = (randn(&[d], 2), randn(&[d], 3));
    let ln = LayerNorm::from_tensors(Some(w.clone()), Some(b.clone()), 1e-5).unwrap();
    let rn = RmsNorm::from_tensor(w.clone(), 1e-6).unwrap();
    let (xv, wv, bv) = (v(&x), v(&w), v(&b));
    let (mut want_ln, mut want_rn) = (vec![], vec![]);
    for row in xv.chunks(d) {
        let mean = row.iter().map(|&x| x as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let ms = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / d as f64;
        for j in 0..d {
            want_ln.push((((row[j] as f64 - mean) / (var + 1e-5).sqrt()) * wv[j] as f64 + bv[j] as f64) as f32);
            want_rn.push((row[j] as f64 / (ms + 1e-6).sqrt() * wv[j] as f64) as f32);
        }
    }
    assert_close(&v(&ln.forward(&x).unwrap()), &want_ln, 1e-5, 1e-5);
    assert_close(&v(&rn.forward(&x).unwrap()), &want_rn, 1e-5, 1e-5);
    // Fresh layers: identity affine.
    let ln0 = LayerNorm::new(d, 1e-5).unwrap();
    let plain = LayerNorm::without_affine(d, 1e-5).unwrap();
    assert_close(&v(&ln0.forward(&x).unwrap()), &v(&plain.forward(&x).unwrap()), 1e-6, 1e-6);
    assert_eq!(ln0.named_parameters().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["weight", "bias"]);
    assert!(plain.named_parameters().is_empty());
    assert_eq!(RmsNorm::new(d, 1e-6).unwrap().named_parameters()[0].0, "weight");
    assert!(ln.forward(&randn(&[2, d + 1], 1)).is_err());
    assert!(rn.forward(&randn(&[2, d + 1], 1)).is_err());
    gradcheck(
        |t| LayerNorm::from_tensors(Some(t[1].clone()), Some(t[2].clone()), 1e-5)?.forward(&t[0]),
        &[x.clone(), w.clone(), b.clone()],
    );
    gradcheck(|t| RmsNorm::from_tensor(t[1].clone(), 1e-6)?.forward(&t[0]), &[x.clone(), w.clone()]);
}

#[test]
fn dropout_layer_is_reproducible_and_fresh_per_call() {
    let x = Tensor::ones(&[4000], DType::F32).unwrap();
    let d = Dropout::new(0.25, 9).unwrap();
    let a = v(&d.forward(&x).unwrap());
    let b = v(&d.forward(&x).unwrap());
    assert_ne!(a, b, "each call draws a new mask");
    assert_eq!(d.calls(), 2);
    let kept = a.iter().filter(|&&x| x != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - 0.75).abs() < 0.03, "kept {kept}");
    assert!(a.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.75).abs() < 1e-6));
    // Same seed → same sequence of masks; a restored counter resumes it.
    let d2 = Dropout::new(0.25, 9).unwrap();
    assert_eq!(v(&d2.forward(&x).unwrap()), a);
    let d3 = Dropout::new(0.25, 9).unwrap();
    d3.set_calls(1);
    assert_eq!(v(&d3.forward(&x).unwrap()), b);
    let mut e = d.clone();
    e.eval();
    assert_eq!(v(&e.forward(&x).unwrap()), v(&x));
    assert!(Dropout::new(1.5, 0).is_err());
}

#[test]
fn freeze_load_and_prefix() {
    let mut lin = Linear::new(3, 2, true, 1).unwrap();
    let x = randn(&[4, 3], 2);
    lin.freeze().unwrap();
    assert!(lin.trainable_parameters().is_empty());
    assert!(!lin.forward(&x).unwrap().tracks_grad(), "a frozen layer records nothing");
    lin.unfreeze().unwrap();
    let grads = lin.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&lin.weight).is_some() && grads.get(lin.bias.as_ref().unwrap()).is_some());

    let w = randn(&[2, 3], 5).to_dtype(DType::BF16).unwrap();
    let b = randn(&[2], 6);
    let handle = lin.weight.clone();
    let mut map = HashMap::from([("weight".to_string(), w.clone()), ("bias".to_string(), b.clone())]);
    lin.load_parameters(&map, true).unwrap();
    assert_eq!(v(&handle), v(&w), "loaded in place: every handle sees it");
    assert_eq!(v(lin.bias.as_ref().unwrap()), v(&b));
    map.insert("extra".into(), b.clone());
    assert!(lin.load_parameters(&map, true).is_err());
    lin.load_parameters(&map, false).unwrap();
    map.remove("extra");
    map.insert("bias".into(), randn(&[3], 1));
    assert!(lin.load_parameters(&map, false).is_err(), "shape mismatch");

    let names: Vec<String> = prefixed("head", lin.named_parameters()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["head.weight", "head.bias"]);
}

// ----- LSTM ------------------------------------------------------------------------------------

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's LSTM equations in f64 with plain loops. Returns (output, h_n, c_n) flattened in the
/// layouts PyTorch uses.
fn lstm_reference(
    cfg: &LstmConfig,
    params: &HashMap<String, Vec<f64>>,
    x: &[f32],
    seq: usize,
    batch: usize,
    init: Option<(&[f32], &[f32])>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let h = cfg.hidden_size;
    let dirs = cfg.num_directions();
    // input as [t][b][i]
    let mut layer_in: Vec<Vec<Vec<f64>>> = (0..seq)
        .map(|t| {
            (0..batch)
                .map(|b| {
                    (0..cfg.input_size)
                        .map(|i| {
                            let flat = if cfg.batch_first {
                                (b * seq + t) * cfg.input_size + i
                            } else {
                                (t * batch + b) * cfg.input_size + i
                            };
                            x[flat] as f64
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let (mut hn, mut cn) = (vec![], vec![]);
    for layer in 0..cfg.num_layers {
        let in_size = cfg.layer_input_size(layer);
        let mut out = vec![vec![vec![0.0; dirs * h]; batch]; seq];
        for dir in 0..dirs {
            let sfx = if dir == 0 { format!("l{layer}") } else { format!("l{layer}_reverse") };
            let wih = &params[&format!("weight_ih_{sfx}")];
            let whh = &params[&format!("weight_hh_{sfx}")];
            let zero = vec![0.0; 4 * h];
            let bih = params.get(&format!("bias_ih_{sfx}")).unwrap_or(&zero);
            let bhh = params.get(&format!("bias_hh_{sfx}")).unwrap_or(&zero);
            let idx = layer * dirs + dir;
            let mut hs = vec![vec![0.0; h]; batch];
            let mut cs = vec![vec![0.0; h]; batch];
            if let Some((h0, c0)) = init {
                for b in 0..batch {
                    for k in 0..h {
                        hs[b][k] = h0[(idx * batch + b) * h + k] as f64;
                        cs[b][k] = c0[(idx * batch + b) * h + k] as f64;
                    }
                }
            }
            for s in 0..seq {
                let t = if dir == 0 { s } else { seq - 1 - s };
                for b in 0..batch {
                    let mut gates = vec![0.0; 4 * h];
                    for r in 0..4 * h {
                        let mut acc = bih[r] + bhh[r];
                        for i in 0..in_size {
                            acc += wih[r * in_size + i] * layer_in[t][b][i];
                        }
                        for k in 0..h {
                            acc += whh[r * h + k] * hs[b][k];
                        }
                        gates[r] = acc;
                    }
                    for k in 0..h {
                        let i = sigmoid(gates[k]);
                        let f = sigmoid(gates[h + k]);
                        let g = gates[2 * h + k].tanh();
                        let o = sigmoid(gates[3 * h + k]);
                        cs[b][k] = f * cs[b][k] + i * g;
                        hs[b][k] = o * cs[b][k].tanh();
                        out[t][b][dir * h + k] = hs[b][k];
                    }
                }
            }
            hn.extend(hs.into_iter().flatten());
            cn.extend(cs.into_iter().flatten());
        }
        layer_in = out;
    }
    let mut output = vec![];
    if cfg.batch_first {
        for b in 0..batch {
            for t in 0..seq {
                output.extend_from_slice(&layer_in[t][b]);
            }
        }
    } else {
        output = layer_in.into_iter().flatten().flatten().collect();
    }
    (output, hn, cn)
}

fn params_f64(lstm: &Lstm) -> HashMap<String, Vec<f64>> {
    lstm.named_parameters().into_iter().map(|(n, t)| (n, v(&t).into_iter().map(f64::from).collect())).collect()
}

fn check_lstm(cfg: LstmConfig, seq: usize, batch: usize, with_state: bool, seed: u64) {
    let lstm = Lstm::new(cfg, seed).unwrap();
    let x_shape = if cfg.batch_first { [batch, seq, cfg.input_size] } else { [seq, batch, cfg.input_size] };
    let x = randn(&x_shape, seed + 1);
    let n_states = cfg.num_layers * cfg.num_directions();
    let h0 = randn(&[n_states, batch, cfg.hidden_size], seed + 2).mul_scalar(0.5).unwrap();
    let c0 = randn(&[n_states, batch, cfg.hidden_size], seed + 3);
    let state = if with_state { Some((&h0, &c0)) } else { None };
    let (out, (hn, cn)) = lstm.forward(&x, state).unwrap();
    let (h0v, c0v) = (v(&h0), v(&c0));
    let init = if with_state { Some((h0v.as_slice(), c0v.as_slice())) } else { None };
    let (want_out, want_h, want_c) = lstm_reference(&cfg, &params_f64(&lstm), &v(&x), seq, batch, init);
    let d = cfg.num_directions() * cfg.hidden_size;
    let want_shape = if cfg.batch_first { [batch, seq, d] } else { [seq, batch, d] };
    assert_eq!(out.shape(), &want_shape);
    assert_eq!(hn.shape(), &[n_states, batch, cfg.hidden_size]);
    assert_eq!(cn.shape(), &[n_states, batch, cfg.hidden_size]);
    let f = |w: Vec<f64>| w.into_iter().map(|x| x as f32).collect::<Vec<_>>();
    assert_close(&v(&out), &f(want_out), 1e-5, 1e-5);
    assert_close(&v(&hn), &f(want_h), 1e-5, 1e-5);
    assert_close(&v(&cn), &f(want_c), 1e-5, 1e-5);
}

#[test]
fn lstm_one_layer_matches_reference() {
    check_lstm(LstmConfig::new(5, 4), 6, 3, false, 10);
    check_lstm(LstmConfig::new(5, 4).batch_first(true), 6, 3, true, 20);
    check_lstm(LstmConfig::new(3, 2).bias(false), 4, 2, true, 30);
}

#[test]
fn lstm_two_layer_bidirectional_matches_reference() {
    check_lstm(LstmConfig::new(5, 4).num_layers(2).bidirectional(true).batch_first(true), 5, 3, false, 40);
    check_lstm(LstmConfig::new(3, 6).num_layers(2).bidirectional(true), 4, 2, true, 50);
    check_lstm(LstmConfig::new(2, 3).num_layers(3), 3, 2, true, 60);
}

#[test]
fn lstm_names_shapes_and_init() {
    let cfg = LstmConfig::new(3, 4).num_layers(2).bidirectional(true);
    let lstm = Lstm::new(cfg, 1).unwrap();
    let named = lstm.named_parameters();
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = vec![];
    for l in ["l0", "l0_reverse", "l1", "l1_reverse"] {
        for p in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
            want.push(format!("{p}_{l}"));
        }
    }
    assert_eq!(names, want);
    let shape = |n: &str| lstm.parameter(n).unwrap().shape().to_vec();
    assert_eq!(shape("weight_ih_l0"), [16, 3]);
    assert_eq!(shape("weight_ih_l1_reverse"), [16, 8], "layers above the first take hidden·directions");
    assert_eq!(shape("weight_hh_l1"), [16, 4]);
    assert_eq!(shape("bias_hh_l0_reverse"), [16]);
    for (n, p) in &named {
        assert!(v(p).iter().all(|x| x.abs() <= 0.5), "{n} outside ±1/√hidden");
        assert!(p.is_variable());
    }
    // Distinct draws per tensor.
    assert_ne!(v(&lstm.parameter("bias_ih_l0").unwrap()), v(&lstm.parameter("bias_hh_l0").unwrap()));
    // Round trip through names; missing / unexpected / misshapen names are errors.
    let again = Lstm::from_named(cfg, &named).unwrap();
    let x = randn(&[2, 2, 3], 3);
    assert_eq!(v(&again.forward(&x, None).unwrap().0), v(&lstm.forward(&x, None).unwrap().0));
    assert!(Lstm::from_named(cfg, &named[1..]).is_err());
    let mut extra = named.clone();
    extra.push(("weight_ih_l2".into(), randn(&[16, 8], 1)));
    assert!(Lstm::from_named(cfg, &extra).is_err());
    let mut bad = named.clone();
    bad[0].1 = randn(&[16, 4], 1);
    assert!(Lstm::from_named(cfg, &bad).is_err());
    // Input / state shape errors.
    assert!(lstm.forward(&randn(&[2, 2, 4], 1), None).is_err());
    let h0 = randn(&[2, 2, 4], 1);
    assert!(lstm.forward(&x, Some((&h0, &h0))).is_err(), "needs layers·directions = 4 states");
    // Unbatched input = a batch of one.
    let xs = randn(&[3, 3], 4);
    let (o1, (h1, _)) = lstm.forward(&xs, None).unwrap();
    let (ob, (hb, _)) = lstm.forward(&xs.unsqueeze(1).unwrap(), None).unwrap();
    assert_eq!(o1.shape(), &[3, 8]);
    assert_eq!(v(&o1), v(&ob));
    assert_eq!(v(&h1), v(&hb));
}

/// Everything an LSTM returns, flattened into one tensor.
fn lstm_all(lstm: &Lstm, x: &Tensor, state: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    let (out, (h, c)) = lstm.forward(x, state)?;
    let flat = |t: &Tensor| -> Result<Tensor> { t.contiguous()?.reshape(&[t.numel()]) };
    Tensor::cat(&[&flat(&out)?, &flat(&h)?, &flat(&c)?], 0)
}

#[test]
fn lstm_gradcheck_two_layer_bidirectional() {
    let cfg = LstmConfig::new(3, 2).num_layers(2).bidirectional(true).batch_first(true);
    let lstm = Lstm::new(cfg, 5).unwrap();
    let named = lstm.named_parameters();
    let checked = ["weight_ih_l0", "weight_hh_l0", "bias_hh_l0_reverse", "weight_ih_l1_reverse", "weight_hh_l1"];
    let build = move |t: &[Tensor]| -> Result<Lstm> {
        let mut params = named.clone();
        for (k, name) in checked.iter().enumerate() {
            let slot = params.iter_mut().find(|(n, _)| n == name).unwrap();
            slot.1 = t[k + 1].clone();
        }
        Lstm::from_named(cfg, &params)
    };
    let mut inputs = vec![randn(&[2, 3, 3], 6)];
    inputs.extend(checked.iter().map(|n| lstm.parameter(n).unwrap().detach()));
    let b1 = build.clone();
    gradcheck(move |t| lstm_all(&b1(t)?, &t[0], None), &inputs);
    // With an initial state, checked w.r.t. h_0 and c_0 as well.
    inputs.push(randn(&[4, 2, 2], 7).mul_scalar(0.5).unwrap());
    inputs.push(randn(&[4, 2, 2], 8));
    let n = inputs.len();
    gradcheck(move |t| lstm_all(&build(t)?, &t[0], Some((&t[n - 2], &t[n - 1]))), &inputs);
}

#[test]
fn lstm_parameters_receive_gradients_and_freeze() {
    let cfg = LstmConfig::new(3, 2).bidirectional(true);
    let mut lstm = Lstm::new(cfg, 9).unwrap();
    let x = randn(&[3, 2, 3], 1);
    let loss = lstm.forward(&x, None).unwrap().0.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (n, p) in lstm.named_parameters() {
        let g = grads.get(&p).unwrap_or_else(|| panic!("no gradient for {n}"));
        assert!(v(g).iter().any(|&x| x != 0.0), "zero gradient for {n}");
    }
    lstm.freeze().unwrap();
    assert!(lstm.trainable_parameters().is_empty());
    assert!(!lstm.forward(&x, None).unwrap().0.tracks_grad());
}
