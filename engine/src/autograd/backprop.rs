//! Reverse-mode sweep over the recorded graph.
use super::no_grad;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use std::collections::{HashMap, HashSet};

/// Gradients of variables, keyed by tensor id.
#[derive(Default, Clone, Debug)]
pub struct Grads {
    map: HashMap<TensorId, Tensor>,
}

impl Grads {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    pub fn get_by_id(&self, id: TensorId) -> Option<&Tensor> {
        self.map.get(&id)
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.map.insert(t.id(), grad);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = &TensorId> {
        self.map.keys()
    }

    /// Adds `other` into `self` (gradient accumulation over micro-batches).
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        let _g = no_grad();
        for (id, g) in other.map {
            let summed = match self.map.remove(&id) {
                Some(prev) => prev.add(&g)?,
                None => g,
            };
            self.map.insert(id, summed);
        }
        Ok(())
    }

    /// Multiplies every gradient by `s` (e.g. 1/accumulation steps).
    pub fn scale(&mut self, s: f32) -> Result<()> {
        let _g = no_grad();
        for g in self.map.values_mut() {
            *g = g.affine(s, 0.0)?;
        }
        Ok(())
    }
}

/// Tensors reachable from `root` through recorded ops, inputs before the ops that use them.
fn topological_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // (tensor, children already pushed)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let node_inputs: Vec<Tensor> = match t.node() {
            Some(n) => n
                .inputs()
                .ok_or_else(|| {
                    Error::invalid(
                        "backward",
                        format!("the graph through `{}` was already used by a backward pass and freed; run the forward again", n.op),
                    )
                })?
                .into_iter()
                .filter(|i| i.tracks_grad())
                .collect(),
            None => Vec::new(),
        };
        stack.push((t, true));
        for input in node_inputs {
            if !seen.contains(&input.id()) {
                stack.push((input, false));
            }
        }
    }
    Ok(order)
}

/// Backpropagates from `root`, seeding its gradient with ones. Gradients of intermediate results are
/// dropped as soon as they have been passed on, and each op's saved tensors when its backward has
/// run; only variables' gradients are returned.
pub fn backward(root: &Tensor) -> Result<Grads> {
    if !root.tracks_grad() {
        return Err(Error::invalid(
            "backward",
            "the tensor does not depend on any variable (was it computed under no_grad, or from detached inputs?)",
        ));
    }
    let _g = no_grad();
    let mut order = topological_order(root)?;
    let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
    grads.insert(root.id(), Tensor::full_on(1.0, root.shape(), crate::DType::F32, root.device())?);
    let mut out = Grads::new();
    // Outputs come last: popping walks the graph backwards and lets go of each tensor after use.
    while let Some(t) = order.pop() {
        let Some(grad) = grads.remove(&t.id()) else { continue };
        let Some(node) = t.node() else {
            if t.is_variable() {
                // Broadcast views (stride 0) become real buffers: optimizers read gradients as slices.
                out.map.insert(t.id(), grad.contiguous()?);
            }
            continue;
        };
        let Some(state) = node.take() else {
            return Err(Error::invalid("backward", format!("the graph through `{}` was already freed", node.op)));
        };
        let input_grads = (state.backward)(&t, &grad)?;
        if input_grads.len() != state.inputs.len() {
            return Err(Error::invalid(
                "backward",
                format!("{} returned {} gradients for {} inputs", node.op, input_grads.len(), state.inputs.len()),
            ));
        }
        for (input, g) in state.inputs.iter().zip(input_grads) {
            let Some(g) = g else { continue };
            if !input.tracks_grad() {
                continue;
            }
            if g.shape() != input.shape() {
                return Err(Error::shape(
                    "backward",
                    format!(
                        "{} produced a gradient of shape {:?} for an input of shape {:?}",
                        node.op,
                        g.shape(),
                        input.shape()
                    ),
                ));
            }
            let summed = match grads.remove(&input.id()) {
                Some(prev) => prev.add(&g)?,
                None => g,
            };
            grads.insert(input.id(), summed);
        }
    }
    Ok(out)
}
