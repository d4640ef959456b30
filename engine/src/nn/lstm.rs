//! `nn.LSTM`: multi-layer, optionally bidirectional, PyTorch's equations, gate order, parameter
//! names and initialisation:
//!
//! ```text
//! i = σ(W_ii x + b_ii + W_hi h + b_hi)      gates stacked (i, f, g, o) in weight_ih / weight_hh
//! f = σ(W_if x + b_if + W_hf h + b_hf)
//! g = tanh(W_ig x + b_ig + W_hg h + b_hg)
//! o = σ(W_io x + b_io + W_ho h + b_ho)
//! c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')
//! ```
//!
//! Built from differentiable ops (one GEMM for the input projection of every timestep, then the
//! recurrence step by step), so autograd provides the backward. Dropout between layers
//! (PyTorch's `dropout` argument) is not implemented.
use super::{sub_seed, Module};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmConfig {
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// Input and output are `[batch, seq, feature]` instead of `[seq, batch, feature]`.
    pub batch_first: bool,
    /// Whether the layer has `bias_ih_*` / `bias_hh_*`.
    pub bias: bool,
}

impl LstmConfig {
    /// PyTorch's defaults: one layer, unidirectional, `batch_first = false`, with biases.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        LstmConfig { input_size, hidden_size, num_layers: 1, bidirectional: false, batch_first: false, bias: true }
    }
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// Input size of layer `layer` (`hidden·directions` above the first).
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.hidden_size * self.num_directions()
        }
    }
}

/// The parameters of one direction of one layer.
#[derive(Clone, Debug)]
pub struct LstmCell {
    /// `[4·hidden, layer input]`, gates (i, f, g, o).
    pub weight_ih: Tensor,
    /// `[4·hidden, hidden]`.
    pub weight_hh: Tensor,
    /// `[4·hidden]`.
    pub bias_ih: Option<Tensor>,
    /// `[4·hidden]`.
    pub bias_hh: Option<Tensor>,
}

#[derive(Clone, Debug)]
pub struct Lstm {
    config: LstmConfig,
    /// Index `layer · directions + direction` (direction 1 = `_reverse`).
    cells: Vec<LstmCell>,
}

/// PyTorch's name suffix for (layer, direction): `l0`, `l0_reverse`, `l1`, …
fn suffix(layer: usize, dir: usize) -> String {
    if dir == 0 {
        format!("l{layer}")
    } else {
        format!("l{layer}_reverse")
    }
}

impl Lstm {
    /// Trainable parameters initialised U(±1/√hidden), like PyTorch.
    pub fn new(config: LstmConfig, seed: u64) -> Result<Lstm> {
        let LstmConfig { input_size, hidden_size: h, num_layers, .. } = config;
        if input_size == 0 || h == 0 || num_layers == 0 {
            return Err(Error::invalid(
                "Lstm::new",
                format!("input_size, hidden_size and num_layers must be positive, got {config:?}"),
            ));
        }
        let bound = 1.0 / (h as f32).sqrt();
        let mut k = 0u64;
        let mut draw = |shape: &[usize]| -> Result<Tensor> {
            k += 1;
            Tensor::rand_uniform(shape, -bound, bound, sub_seed(seed, k))?.requires_grad()
        };
        let mut cells = Vec::new();
        for layer in 0..num_layers {
            for _ in 0..config.num_directions() {
                let weight_ih = draw(&[4 * h, config.layer_input_size(layer)])?;
                let weight_hh = draw(&[4 * h, h])?;
                let (bias_ih, bias_hh) =
                    if config.bias { (Some(draw(&[4 * h])?), Some(draw(&[4 * h])?)) } else { (None, None) };
                cells.push(LstmCell { weight_ih, weight_hh, bias_ih, bias_hh });
            }
        }
        Ok(Lstm { config, cells })
    }

    /// An LSTM over given parameters, named as PyTorch names them (`weight_ih_l0`, …,
    /// `bias_hh_l1_reverse`), used as they are (trainable if they are variables). Every parameter
    /// the configuration calls for must be present with the right shape; nothing else may be.
    pub fn from_named(config: LstmConfig, tensors: &[(String, Tensor)]) -> Result<Lstm> {
        let op = "Lstm::from_named";
        let h = config.hidden_size;
        if config.input_size == 0 || h == 0 || config.num_layers == 0 {
            return Err(Error::invalid(op, format!("sizes must be positive, got {config:?}")));
        }
        let take = |name: String, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::invalid(op, format!("missing parameter {name}")))?;
            if t.shape() != shape {
                return Err(Error::shape(op, format!("{name} has shape {:?}, expected {shape:?}", t.shape())));
            }
            if t.dtype() != DType::F32 {
                return Err(Error::DType { op, expected: DType::F32, got: t.dtype() });
            }
            Ok(t)
        };
        let mut cells = Vec::new();
        for layer in 0..config.num_layers {
            for dir in 0..config.num_directions() {
                let s = suffix(layer, dir);
                let weight_ih = take(format!("weight_ih_{s}"), &[4 * h, config.layer_input_size(layer)])?;
                let weight_hh = take(format!("weight_hh_{s}"), &[4 * h, h])?;
                let (bias_ih, bias_hh) = if config.bias {
                    (Some(take(format!("bias_ih_{s}"), &[4 * h])?), Some(take(format!("bias_hh_{s}"), &[4 * h])?))
                } else {
                    (None, None)
                };
                cells.push(LstmCell { weight_ih, weight_hh, bias_ih, bias_hh });
            }
        }
        let lstm = Lstm { config, cells };
        let known = lstm.named_parameters();
        if let Some((extra, _)) = tensors.iter().find(|(n, _)| !known.iter().any(|(k, _)| k == n)) {
            return Err(Error::invalid(op, format!("unexpected parameter {extra} for {config:?}")));
        }
        Ok(lstm)
    }

    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    /// The parameters of `layer`, direction `dir` (1 = reverse).
    pub fn cell(&self, layer: usize, dir: usize) -> Option<&LstmCell> {
        if layer >= self.config.num_layers || dir >= self.config.num_directions() {
            return None;
        }
        self.cells.get(layer * self.config.num_directions() + dir)
    }

    /// The parameter called `name` (PyTorch's name), if there is one.
    pub fn parameter(&self, name: &str) -> Option<Tensor> {
        self.named_parameters().into_iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Runs the LSTM over `x` (`[batch, seq, input]` if `batch_first`, else `[seq, batch, input]`;
    /// or unbatched `[seq, input]`). `state` is the initial `(h_0, c_0)`, each
    /// `[layers·directions, batch, hidden]` (`[layers·directions, hidden]` unbatched); zeros when
    /// `None`. Returns the output (`[batch, seq, directions·hidden]` / `[seq, batch, …]`, the last
    /// layer's hidden states, both directions concatenated) and the final `(h_n, c_n)`.
    pub fn forward(&self, x: &Tensor, state: Option<(&Tensor, &Tensor)>) -> Result<(Tensor, (Tensor, Tensor))> {
        let op = "Lstm::forward";
        let cfg = &self.config;
        let (h, dirs) = (cfg.hidden_size, cfg.num_directions());
        let n_states = cfg.num_layers * dirs;
        if x.rank() == 2 {
            // Unbatched: a batch of one.
            let state = match state {
                Some((h0, c0)) => {
                    if h0.rank() != 2 || c0.rank() != 2 {
                        return Err(Error::shape(
                            op,
                            format!("unbatched input needs 2-D h_0 and c_0, got {:?} and {:?}", h0.shape(), c0.shape()),
                        ));
                    }
                    Some((h0.unsqueeze(1)?, c0.unsqueeze(1)?))
                }
                None => None,
            };
            let xb = x.unsqueeze(if cfg.batch_first { 0 } else { 1 })?;
            let (out, (hn, cn)) = self.forward(&xb, state.as_ref().map(|(a, b)| (a, b)))?;
            let out = out.squeeze(if cfg.batch_first { 0 } else { 1 })?;
            return Ok((out, (hn.squeeze(1)?, cn.squeeze(1)?)));
        }
        if x.rank() != 3 || x.shape()[2] != cfg.input_size {
            return Err(Error::shape(
                op,
                format!("input of shape {:?} is not 3-D ending in input_size = {}", x.shape(), cfg.input_size),
            ));
        }
        let x = if cfg.batch_first { x.transpose(0, 1)? } else { x.clone() };
        let (steps, batch) = (x.shape()[0], x.shape()[1]);
        if steps == 0 || batch == 0 {
            return Err(Error::shape(op, format!("empty sequence or batch: input shape {:?}", x.shape())));
        }
        if let Some((h0, c0)) = state {
            for (what, t) in [("h_0", h0), ("c_0", c0)] {
                if t.shape() != [n_states, batch, h] {
                    return Err(Error::shape(
                        op,
                        format!("{what} has shape {:?}, expected {:?}", t.shape(), [n_states, batch, h]),
                    ));
                }
            }
        }
        let mut layer_in = x;
        let mut h_n = Vec::with_capacity(n_states);
        let mut c_n = Vec::with_capacity(n_states);
        for layer in 0..cfg.num_layers {
            let mut dir_outs = Vec::with_capacity(dirs);
            for dir in 0..dirs {
                let idx = layer * dirs + dir;
                let cell = &self.cells[idx];
                let init = match state {
                    Some((h0, c0)) => Some((h0.narrow(0, idx, 1)?.squeeze(0)?, c0.narrow(0, idx, 1)?.squeeze(0)?)),
                    None => None,
                };
                let (out, hl, cl) = run_direction(cell, &layer_in, h, dir == 1, init)?;
                dir_outs.push(out);
                h_n.push(hl);
                c_n.push(cl);
            }
            layer_in = if dirs == 1 {
                dir_outs.pop().ok_or_else(|| Error::invalid(op, "no output"))?
            } else {
                Tensor::cat(&[&dir_outs[0], &dir_outs[1]], 2)?
            };
        }
        let out = if cfg.batch_first { layer_in.transpose(0, 1)?.contiguous()? } else { layer_in };
        let hr: Vec<&Tensor> = h_n.iter().collect();
        let cr: Vec<&Tensor> = c_n.iter().collect();
        Ok((out, (Tensor::stack(&hr, 0)?, Tensor::stack(&cr, 0)?)))
    }
}

/// One direction of one layer over `x [seq, batch, in]`: the outputs `[seq, batch, hidden]` in time
/// order and the final hidden and cell states `[batch, hidden]`.
fn run_direction(
    cell: &LstmCell,
    x: &Tensor,
    h: usize,
    reverse: bool,
    init: Option<(Tensor, Tensor)>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let steps = x.shape()[0];
    // Input projection of every timestep at once: [seq, batch, 4h].
    let mut xp = x.matmul(&cell.weight_ih.t()?)?;
    match (&cell.bias_ih, &cell.bias_hh) {
        (Some(bi), Some(bh)) => xp = xp.add(&bi.add(bh)?)?,
        (Some(b), None) | (None, Some(b)) => xp = xp.add(b)?,
        (None, None) => {}
    }
    let w_hh_t = cell.weight_hh.t()?;
    let xs = split_steps(&xp)?;
    let mut state = init;
    let mut outs: Vec<Option<Tensor>> = vec![None; steps];
    for s in 0..steps {
        let t = if reverse { steps - 1 - s } else { s };
        let xt = xs[t].clone();
        // With a zero state (the default start) the recurrent terms vanish: skip them.
        let gates = match &state {
            Some((hp, _)) => xt.add(&hp.matmul(&w_hh_t)?)?,
            None => xt,
        };
        let sig = gates.sigmoid()?;
        let i = sig.narrow(1, 0, h)?;
        let f = sig.narrow(1, h, h)?;
        let g = gates.narrow(1, 2 * h, h)?.tanh()?;
        let o = sig.narrow(1, 3 * h, h)?;
        let c = match &state {
            Some((_, cp)) => f.mul(cp)?.add(&i.mul(&g)?)?,
            None => i.mul(&g)?,
        };
        let hn = o.mul(&c.tanh()?)?;
        outs[t] = Some(hn.clone());
        state = Some((hn, c));
    }
    let outs: Vec<Tensor> = outs.into_iter().flatten().collect();
    let refs: Vec<&Tensor> = outs.iter().collect();
    let out = Tensor::stack(&refs, 0)?;
    let (hl, cl) = state.ok_or_else(|| Error::invalid("Lstm::forward", "empty sequence"))?;
    Ok((out, hl, cl))
}

/// The `[batch, 4h]` slices of `xp [seq, batch, 4h]`, one per timestep. The backward of `narrow`
/// returns a gradient of its input's full size, so slicing each step straight out of `xp` would
/// cost O(seq²) in the backward; halving recursively keeps it at O(seq·log seq).
fn split_steps(xp: &Tensor) -> Result<Vec<Tensor>> {
    fn rec(x: &Tensor, out: &mut Vec<Tensor>) -> Result<()> {
        let n = x.shape()[0];
        if n == 1 {
            out.push(x.squeeze(0)?);
            return Ok(());
        }
        let half = n / 2;
        rec(&x.narrow(0, 0, half)?, out)?;
        rec(&x.narrow(0, half, n - half)?, out)
    }
    let mut out = Vec::with_capacity(xp.shape()[0]);
    rec(xp, &mut out)?;
    Ok(out)
}

impl Module for Lstm {
    /// `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` per layer, each followed
    /// by its `_reverse` twin when bidirectional: PyTorch's order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let dirs = self.config.num_directions();
        let mut v = Vec::new();
        for (idx, cell) in self.cells.iter().enumerate() {
            let s = suffix(idx / dirs, idx % dirs);
            v.push((format!("weight_ih_{s}"), cell.weight_ih.clone()));
            v.push((format!("weight_hh_{s}"), cell.weight_hh.clone()));
            if let Some(b) = &cell.bias_ih {
                v.push((format!("bias_ih_{s}"), b.clone()));
            }
            if let Some(b) = &cell.bias_hh {
                v.push((format!("bias_hh_{s}"), b.clone()));
            }
        }
        v
    }
    fn parameters_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = Vec::new();
        for cell in &mut self.cells {
            v.push(&mut cell.weight_ih);
            v.push(&mut cell.weight_hh);
            if let Some(b) = &mut cell.bias_ih {
                v.push(b);
            }
            if let Some(b) = &mut cell.bias_hh {
                v.push(b);
            }
        }
        v
    }
}
