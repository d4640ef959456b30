//! Define-by-run autograd. An op records a `Node` only when grad mode is on and one of its inputs
//! tracks gradients, so a frozen base model adds nothing to the tape and owns no gradient buffers.
//! `backprop.rs` is the one place that walks the tape and calls each op's backward.
mod backprop;

pub use backprop::{backward, Grads};

use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::Cell;

/// An op's backward: given the op's output and the gradient flowing into it, the gradient for each
/// input, in input order (`None` where an input does not need one).
pub(crate) type BackwardFn = dyn Fn(&Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// A recorded op. Its inputs and backward (with whatever the backward saved) are taken out when
/// the backward runs, so activations are freed as the sweep passes them, as in PyTorch without
/// `retain_graph`.
pub(crate) struct Node {
    pub(crate) op: &'static str,
    state: std::sync::Mutex<Option<NodeState>>,
}

pub(crate) struct NodeState {
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) backward: Box<BackwardFn>,
}

impl Node {
    /// The inputs, or `None` once a backward pass has consumed the node.
    pub(crate) fn inputs(&self) -> Option<Vec<Tensor>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|s| s.inputs.clone())
    }

    pub(crate) fn take(&self) -> Option<NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording off until dropped (nesting restores the previous state).
#[must_use = "recording is off only while the guard lives"]
pub struct NoGradGuard {
    prev: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

pub fn no_grad() -> NoGradGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { prev }
}

/// Runs `f` with recording off.
pub fn no_grad_scope<R>(f: impl FnOnce() -> R) -> R {
    let _g = no_grad();
    f()
}

/// The node to attach to an op's output, or `None` when nothing needs recording.
pub(crate) fn record(
    op: &'static str,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Option<Node> {
    if !is_grad_enabled() || !inputs.iter().any(|t| t.tracks_grad()) {
        return None;
    }
    let state = NodeState { inputs: inputs.iter().map(|&t| t.clone()).collect(), backward: Box::new(backward) };
    Some(Node { op, state: std::sync::Mutex::new(Some(state)) })
}

/// Whether an op on these inputs would be recorded.
pub(crate) fn needs_grad(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.tracks_grad())
}
