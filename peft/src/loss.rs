//! The training objectives, as transformers computes them from `labels`.
use engine::{Error, Result, Tensor};

/// Causal LM: the logits at position t predict the label at t+1 (`labels` `[batch, seq]`, -100 =
/// ignored); mean cross-entropy over the predicted positions.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() != 3 || labels.shape() != &logits.shape()[..2] {
        return Err(Error::shape(
            "causal_lm_loss",
            format!("logits {:?} and labels {:?} must be [b, t, vocab] and [b, t]", logits.shape(), labels.shape()),
        ));
    }
    let t = logits.shape()[1];
    if t < 2 {
        return Err(Error::shape("causal_lm_loss", "sequences need at least 2 positions"));
    }
    let pred = logits.narrow(1, 0, t - 1)?;
    let target = labels.narrow(1, 1, t - 1)?.contiguous()?;
    pred.cross_entropy(&target)
}

/// Sequence classification: cross-entropy of `[batch, labels]` logits against class ids `[batch]`.
pub fn classification_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    logits.cross_entropy(labels)
}
