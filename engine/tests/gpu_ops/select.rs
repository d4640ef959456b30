//! where_cond / masked_fill, comparisons, cat / stack and narrow backward on the GPU.
