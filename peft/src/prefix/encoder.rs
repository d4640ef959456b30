//! PEFT's `PrefixEncoder`: the flat table `[P, layers·2·token_dim]`, or Li & Liang's
//! reparameterization (embedding `[P, token_dim]` → Linear → tanh → Linear to the table width), and
//! the reshape of the table into per-layer key/value prefixes exactly as PEFT's `get_prompt` does.
use super::config::PrefixShape;
use engine::models::KvPrefix;
use engine::nn::Linear;
use engine::{Error, Result, Tensor};

/// PEFT's parameter names under `prompt_encoder.<adapter>.`.
pub const EMBEDDING: &str = "embedding.weight";
pub const TRANSFORM: [&str; 4] = ["transform.0.weight", "transform.0.bias", "transform.2.weight", "transform.2.bias"];

/// The reparameterization MLP (PEFT's `transform.0` and `transform.2`; `transform.1` is the tanh).
#[derive(Clone, Debug)]
pub struct Projection {
    pub first: Linear,
    pub second: Linear,
}

#[derive(Clone, Debug)]
pub struct PrefixEncoder {
    pub shape: PrefixShape,
    /// `[P, table width]` without projection, `[P, token_dim]` with.
    pub embedding: Tensor,
    pub projection: Option<Projection>,
}

impl PrefixEncoder {
    /// A fresh encoder as PEFT builds it: table (or embedding) N(0, 1), Linears with PyTorch's
    /// init; `zero_init` (PEFT's `init_weights = "zero"`) zeroes the table, or the last Linear.
    pub fn new(shape: PrefixShape, projection: bool, zero_init: bool, seed: u64) -> Result<PrefixEncoder> {
        let p = shape.num_virtual_tokens;
        let width = if projection { shape.token_dim() } else { shape.table_width() };
        let mut embedding = Tensor::randn(&[p, width], 0.0, 1.0, seed)?;
        if zero_init && !projection {
            embedding = Tensor::zeros(&[p, width], engine::DType::F32);
        }
        let projection = if projection {
            let first = Linear::new(shape.token_dim(), shape.encoder_hidden_size, true, seed.wrapping_add(1))?;
            let mut second = Linear::new(shape.encoder_hidden_size, shape.table_width(), true, seed.wrapping_add(2))?;
            if zero_init {
                let zeros = |s: &[usize]| Tensor::zeros(s, engine::DType::F32).requires_grad();
                second = Linear::from_tensors(
                    zeros(&[shape.table_width(), shape.encoder_hidden_size])?,
                    Some(zeros(&[shape.table_width()])?),
                )?;
            }
            Some(Projection { first, second })
        } else {
            None
        };
        Ok(PrefixEncoder { shape, embedding: embedding.requires_grad()?, projection })
    }

    /// The table PEFT saves as `prompt_embeddings` and reshapes: `[P, layers·2·token_dim]`.
    pub fn table(&self) -> Result<Tensor> {
        match &self.projection {
            None => Ok(self.embedding.clone()),
            Some(pr) => pr.second.forward(&pr.first.forward(&self.embedding)?.tanh()?),
        }
    }

    /// Per-layer prefixes `[batch, heads, P, head_dim]` from a table `[P, width]` (batch 1, shared by
    /// every row) or `[batch, P, width]`. PEFT views the last dimension as `[layers·2, heads,
    /// head_dim]` (layer-major, key before value) and permutes to `[layers·2, batch, heads, P, head_dim]`.
    pub fn split(&self, table: &Tensor) -> Result<Vec<KvPrefix>> {
        let s = self.shape;
        let table = if table.rank() == 2 { table.unsqueeze(0)? } else { table.clone() };
        let (p, w) = (s.num_virtual_tokens, s.table_width());
        if table.rank() != 3 || table.shape()[1] != p || table.shape()[2] != w {
            return Err(Error::shape(
                "prefix",
                format!("the prefix table has shape {:?}, expected [batch, {p}, {w}]", table.shape()),
            ));
        }
        let b = table.shape()[0];
        let kv =
            table.reshape(&[b, p, s.num_layers * 2, s.heads, s.head_dim])?.permute(&[2, 0, 3, 1, 4])?.contiguous()?;
        (0..s.num_layers)
            .map(|l| {
                Ok(KvPrefix {
                    key: kv.narrow(0, 2 * l, 1)?.squeeze(0)?,
                    value: kv.narrow(0, 2 * l + 1, 1)?.squeeze(0)?,
                })
            })
            .collect()
    }

    /// Every tensor with PEFT's name under `prompt_encoder.<adapter>.`.
    pub fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        let mut out = vec![(EMBEDDING, self.embedding.clone())];
        if let Some(pr) = &self.projection {
            for (name, t) in TRANSFORM.iter().zip([
                Some(&pr.first.weight),
                pr.first.bias.as_ref(),
                Some(&pr.second.weight),
                pr.second.bias.as_ref(),
            ]) {
                if let Some(t) = t {
                    out.push((name, t.clone()));
                }
            }
        }
        out
    }

    /// An encoder over given tensors (by the names of [`Self::named_tensors`]), checking every shape.
    /// With a projection, all of `TRANSFORM` must be given.
    pub fn from_named(
        shape: PrefixShape,
        get: &mut dyn FnMut(&str) -> Result<Option<Tensor>>,
        trainable: bool,
    ) -> Result<PrefixEncoder> {
        let mut fetch = |name: &str, want: &[usize]| -> Result<Option<Tensor>> {
            let Some(t) = get(name)? else { return Ok(None) };
            if t.shape() != want {
                return Err(Error::shape("prefix", format!("`{name}` has shape {:?}, expected {want:?}", t.shape())));
            }
            Ok(Some(if trainable { t.requires_grad()? } else { t.detach() }))
        };
        let (p, d, e, w) =
            (shape.num_virtual_tokens, shape.token_dim(), shape.encoder_hidden_size, shape.table_width());
        let transform: Vec<Option<Tensor>> = [vec![e, d], vec![e], vec![w, e], vec![w]]
            .iter()
            .zip(TRANSFORM)
            .map(|(want, name)| fetch(name, want))
            .collect::<Result<_>>()?;
        let projection = match transform.as_slice() {
            [Some(w0), Some(b0), Some(w2), Some(b2)] => Some(Projection {
                first: Linear::from_tensors(w0.clone(), Some(b0.clone()))?,
                second: Linear::from_tensors(w2.clone(), Some(b2.clone()))?,
            }),
            [None, None, None, None] => None,
            _ => {
                return Err(Error::invalid(
                    "prefix",
                    format!("the reparameterization needs all of {TRANSFORM:?}, some are missing"),
                ))
            }
        };
        let width = if projection.is_some() { d } else { w };
        let embedding = fetch(EMBEDDING, &[p, width])?
            .ok_or_else(|| Error::invalid("prefix", format!("`{EMBEDDING}` is missing")))?;
        Ok(PrefixEncoder { shape, embedding, projection })
    }

    /// The trainable tensors (all of them when built trainable).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.named_tensors().into_iter().map(|(_, t)| t).collect()
    }
}
