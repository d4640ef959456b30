//! P-tuning's prompt encoder, as PEFT's `PromptEncoder` builds it: the virtual-token table goes
//! through an `MLP` (Linear-ReLU-Linear-ReLU-Linear, width `encoder_hidden_size`) or an `LSTM`
//! (bidirectional, `encoder_num_layers` layers, dropout between them) followed by Linear-ReLU-Linear.
//! Parameter names are PEFT's below `prompt_encoder.default.` (`mlp_head.0.weight`,
//! `lstm_head.weight_ih_l0_reverse`, …).
use super::config::PromptEncoderConfig;
use engine::nn::{Linear, Lstm, LstmConfig, Module};
use engine::{Error, Result, Tensor};
use std::collections::HashMap;

enum Head {
    /// `mlp_head.0`, `mlp_head.2`, `mlp_head.4`.
    Mlp([Linear; 3]),
    /// One single-layer bidirectional LSTM per layer (so dropout can sit between them, as in
    /// `nn.LSTM(dropout=…)`), then `mlp_head.0`, `mlp_head.2`.
    Lstm { layers: Vec<Lstm>, dropout: f32, head: [Linear; 2] },
}

pub struct PromptEncoder {
    head: Head,
}

/// The layer's own parameter name for PyTorch's multi-layer name (`weight_ih_l1_reverse` →
/// layer 1, `weight_ih_l0_reverse`).
fn split_layer(name: &str) -> Option<(usize, String)> {
    let (stem, rest) = name.rsplit_once("_l")?;
    let (digits, reverse) = match rest.strip_suffix("_reverse") {
        Some(d) => (d, "_reverse"),
        None => (rest, ""),
    };
    let layer = digits.parse().ok()?;
    Some((layer, format!("{stem}_l0{reverse}")))
}

fn lstm_config(dim: usize, hidden: usize, layer: usize) -> LstmConfig {
    let input = if layer == 0 { dim } else { 2 * hidden };
    LstmConfig::new(input, hidden).bidirectional(true).batch_first(true)
}

fn seed_of(seed: u64, k: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(k)
}

impl PromptEncoder {
    /// A freshly initialized encoder (PyTorch's default initialization of each layer).
    pub fn new(config: &PromptEncoderConfig, dim: usize, seed: u64) -> Result<PromptEncoder> {
        let h = config.hidden_size()?;
        let linear = |i: usize, o: usize, k: u64| Linear::new(i, o, true, seed_of(seed, k));
        let head = match config.encoder_reparameterization_type.as_str() {
            "MLP" => Head::Mlp([linear(dim, h, 1)?, linear(h, h, 2)?, linear(h, dim, 3)?]),
            _ => {
                let layers = (0..config.encoder_num_layers)
                    .map(|l| Lstm::new(lstm_config(dim, h, l), seed_of(seed, 10 + l as u64)))
                    .collect::<Result<Vec<_>>>()?;
                Head::Lstm {
                    layers,
                    dropout: config.encoder_dropout,
                    head: [linear(2 * h, 2 * h, 4)?, linear(2 * h, dim, 5)?],
                }
            }
        };
        Ok(PromptEncoder { head })
    }

    /// An encoder over saved tensors named as [`PromptEncoder::named_parameters`] names them. Every
    /// tensor the config calls for must be present with its shape.
    pub fn from_named(config: &PromptEncoderConfig, dim: usize, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let h = config.hidden_size()?;
        let take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::invalid("prompt encoder", format!("missing `{name}`")))?;
            if t.shape() != shape {
                return Err(Error::shape(
                    "prompt encoder",
                    format!("`{name}` has shape {:?}, the config implies {shape:?}", t.shape()),
                ));
            }
            Ok(t)
        };
        let linear = |name: &str, i: usize, o: usize| -> Result<Linear> {
            Linear::from_tensors(take(&format!("{name}.weight"), &[o, i])?, Some(take(&format!("{name}.bias"), &[o])?))
        };
        let head = match config.encoder_reparameterization_type.as_str() {
            "MLP" => {
                Head::Mlp([linear("mlp_head.0", dim, h)?, linear("mlp_head.2", h, h)?, linear("mlp_head.4", h, dim)?])
            }
            _ => {
                let mut per_layer: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); config.encoder_num_layers];
                for (name, t) in tensors {
                    let Some(rest) = name.strip_prefix("lstm_head.") else { continue };
                    match split_layer(rest) {
                        Some((l, local)) if l < per_layer.len() => per_layer[l].push((local, t.clone())),
                        _ => {
                            return Err(Error::invalid(
                                "prompt encoder",
                                format!("`{name}` is not a parameter of a {}-layer LSTM", config.encoder_num_layers),
                            ))
                        }
                    }
                }
                let layers = per_layer
                    .iter()
                    .enumerate()
                    .map(|(l, named)| Lstm::from_named(lstm_config(dim, h, l), named))
                    .collect::<Result<Vec<_>>>()?;
                Head::Lstm {
                    layers,
                    dropout: config.encoder_dropout,
                    head: [linear("mlp_head.0", 2 * h, 2 * h)?, linear("mlp_head.2", 2 * h, dim)?],
                }
            }
        };
        Ok(PromptEncoder { head })
    }

    /// Makes every parameter trainable (autograd variables) or frozen.
    pub fn set_trainable(&mut self, on: bool) -> Result<()> {
        let set = |t: &mut Tensor| -> Result<()> {
            if on && !t.is_variable() {
                *t = t.requires_grad()?;
            } else if !on && t.is_variable() {
                *t = t.detach();
            }
            Ok(())
        };
        let linears: Vec<&mut Linear> = match &mut self.head {
            Head::Mlp(ls) => ls.iter_mut().collect(),
            Head::Lstm { layers, head, .. } => {
                for l in layers.iter_mut() {
                    l.set_trainable(on)?;
                }
                head.iter_mut().collect()
            }
        };
        for l in linears {
            set(&mut l.weight)?;
            if let Some(b) = &mut l.bias {
                set(b)?;
            }
        }
        Ok(())
    }

    /// Parameters in PyTorch's registration order, named below `prompt_encoder.default.`.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let push_linear = |out: &mut Vec<(String, Tensor)>, name: String, l: &Linear| {
            out.push((format!("{name}.weight"), l.weight.clone()));
            if let Some(b) = &l.bias {
                out.push((format!("{name}.bias"), b.clone()));
            }
        };
        match &self.head {
            Head::Mlp(ls) => {
                for (i, l) in ls.iter().enumerate() {
                    push_linear(&mut out, format!("mlp_head.{}", 2 * i), l);
                }
            }
            Head::Lstm { layers, head, .. } => {
                for (layer, lstm) in layers.iter().enumerate() {
                    for (name, t) in lstm.named_parameters() {
                        let renamed = name.replacen("_l0", &format!("_l{layer}"), 1);
                        out.push((format!("lstm_head.{renamed}"), t));
                    }
                }
                for (i, l) in head.iter().enumerate() {
                    push_linear(&mut out, format!("mlp_head.{}", 2 * i), l);
                }
            }
        }
        out
    }

    /// The prompt: `table` `[n, dim]` through the encoder. `dropout_seed` (training) applies the
    /// LSTM's between-layer dropout with masks drawn from it.
    pub fn forward(&self, table: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        match &self.head {
            Head::Mlp([a, b, c]) => c.forward(&b.forward(&a.forward(table)?.relu()?)?.relu()?),
            Head::Lstm { layers, dropout, head: [a, b] } => {
                let n = table.shape()[0];
                let mut x = table.unsqueeze(0)?;
                for (l, lstm) in layers.iter().enumerate() {
                    if l > 0 && *dropout > 0.0 {
                        if let Some(seed) = dropout_seed {
                            x = x.dropout(*dropout, seed_of(seed, l as u64))?;
                        }
                    }
                    x = lstm.forward(&x, None)?.0;
                }
                let x = x.reshape(&[n, x.shape()[2]])?;
                b.forward(&a.forward(&x)?.relu()?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pytorch_layer_names_split() {
        assert_eq!(super::split_layer("weight_ih_l1_reverse"), Some((1, "weight_ih_l0_reverse".into())));
        assert_eq!(super::split_layer("bias_hh_l0"), Some((0, "bias_hh_l0".into())));
        assert_eq!(super::split_layer("weight"), None);
    }
}
