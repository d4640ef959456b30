//! Reductions, sum_to, softmax / log-softmax and cross-entropy on the GPU.
