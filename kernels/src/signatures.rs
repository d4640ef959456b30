//! Every kernel the launchers call, with the parameter list they pass. The `cuda` crate launches only
//! through these entries (its argument list is checked against `params` before each launch), and
//! `tests::launcher_table_matches_the_ptx_entries` checks each entry against the `.entry` in its PTX.

use crate::Module;

/// One kernel parameter, as the launcher passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A device pointer (`.u64` in PTX).
    Ptr,
    U32,
    I32,
    U64,
    I64,
    F32,
    /// A struct passed by value, of this many bytes (`.align 8 .b8 name[N]`).
    Bytes(usize),
}

impl Param {
    /// The PTX declaration type this parameter lowers to: (type, byte size).
    pub fn ptx_type(self) -> (&'static str, usize) {
        match self {
            Param::Ptr | Param::U64 | Param::I64 => (".u64", 8),
            Param::U32 | Param::I32 => (".u32", 4),
            Param::F32 => (".f32", 4),
            Param::Bytes(n) => (".b8", n),
        }
    }
}

/// A kernel: its module, its `.entry` name and its parameters.
#[derive(Debug)]
pub struct Kernel {
    pub module: Module,
    pub name: &'static str,
    pub params: &'static [Param],
}

use Param::*;

const LAYOUT: Param = Bytes(std::mem::size_of::<crate::Layout>());
// a, b, c, m, n, k, a_m, a_k, b_k, b_n, c_m, a_batch, b_batch, c_batch, alpha, beta
const GEMM: &[Param] = &[Ptr, Ptr, Ptr, U32, U32, U32, I64, I64, I64, I64, I64, I64, I64, I64, F32, F32];
const CAST: &[Param] = &[Ptr, Ptr, U64];

macro_rules! kernel {
    ($id:ident, $module:ident, $name:literal, $params:expr) => {
        pub const $id: Kernel = Kernel { module: Module::$module, name: $name, params: $params };
    };
}

kernel!(GEMM_F32, GemmF32, "gemm_f32", GEMM);
kernel!(GEMM_BF16, GemmMma, "gemm_bf16", GEMM);
kernel!(GEMM_F16, GemmMma, "gemm_f16", GEMM);
// Same arguments; only for 16-byte aligned operands with 16-byte runs (cuda::ops::half_gemm_fast_ok).
kernel!(GEMM_BF16_FAST, GemmMma, "gemm_bf16_fast", GEMM);
kernel!(GEMM_F16_FAST, GemmMma, "gemm_f16_fast", GEMM);
// x, y, layout, n, op, scalar
kernel!(UNARY_F32, Elementwise, "unary_f32", &[Ptr, Ptr, LAYOUT, U64, U32, F32]);
// a, b, out, layout, n, op
kernel!(BINARY_F32, Elementwise, "binary_f32", &[Ptr, Ptr, Ptr, LAYOUT, U64, U32]);
kernel!(ACCUMULATE_F32, Elementwise, "accumulate_f32", &[Ptr, Ptr, U64]);
kernel!(FILL_F32, Elementwise, "fill_f32", &[Ptr, U64, F32]);
// x, y, rows, len, op
kernel!(REDUCE_LAST_F32, Reduce, "reduce_last_f32", &[Ptr, Ptr, U32, U32, U32]);
// x, y, outer, len, inner, op
kernel!(REDUCE_MID_F32, Reduce, "reduce_mid_f32", &[Ptr, Ptr, U32, U32, U32, U32]);
// x, y, rows, cols, log
kernel!(SOFTMAX_F32, Softmax, "softmax_f32", &[Ptr, Ptr, U32, U32, U32]);
// y, dy, dx, rows, cols, log
kernel!(SOFTMAX_BWD_F32, Softmax, "softmax_bwd_f32", &[Ptr, Ptr, Ptr, U32, U32, U32]);
// x, target, loss, lse, rows, cols, ignore_index
kernel!(CROSS_ENTROPY_F32, Softmax, "cross_entropy_f32", &[Ptr, Ptr, Ptr, Ptr, U32, U32, I32]);
// x, target, lse, dx, rows, cols, ignore_index, scale
kernel!(CROSS_ENTROPY_BWD_F32, Softmax, "cross_entropy_bwd_f32", &[Ptr, Ptr, Ptr, Ptr, U32, U32, I32, F32]);
// x, w, b, y, mean, rstd, rows, cols, eps, rms
kernel!(NORM_F32, Norm, "norm_f32", &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U32, U32, F32, U32]);
// x, w, mean, rstd, dy, dx, dw, db, rows, cols, rms
kernel!(NORM_BWD_F32, Norm, "norm_bwd_f32", &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, U32, U32, U32]);
// ids, table, out, n, dim, vocab
kernel!(EMBEDDING_F32, Embedding, "embedding_f32", &[Ptr, Ptr, Ptr, U32, U32, U32]);
kernel!(EMBEDDING_BWD_F32, Embedding, "embedding_bwd_f32", &[Ptr, Ptr, Ptr, U32, U32, U32]);
// x, cos, sin, y, batch, heads, seq, head_dim, per_batch, transpose
kernel!(ROPE_F32, Rope, "rope_f32", &[Ptr, Ptr, Ptr, Ptr, U32, U32, U32, U32, U32, U32]);
// scores, key_valid, batch, heads, q_len, k_len, causal
kernel!(ATTENTION_SOFTMAX_F32, Attention, "attention_softmax_f32", &[Ptr, Ptr, U32, U32, U32, U32, U32]);
// x, y, n, p, seed, offset
kernel!(DROPOUT_F32, Dropout, "dropout_f32", &[Ptr, Ptr, U64, F32, U64, U64]);
// p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2
kernel!(ADAMW_F32, Optim, "adamw_f32", &[Ptr, Ptr, Ptr, Ptr, U64, F32, F32, F32, F32, F32, F32, F32]);
// p, g, buf, n, lr, momentum, weight_decay, first
kernel!(SGD_F32, Optim, "sgd_f32", &[Ptr, Ptr, Ptr, U64, F32, F32, F32, U32]);
kernel!(CAST_F32_BF16, Cast, "cast_f32_bf16", CAST);
kernel!(CAST_BF16_F32, Cast, "cast_bf16_f32", CAST);
kernel!(CAST_F32_F16, Cast, "cast_f32_f16", CAST);
kernel!(CAST_F16_F32, Cast, "cast_f16_f32", CAST);
// x, y, layout (x read through stride_a, y written through stride_b), n
kernel!(COPY_STRIDED_F32, Select, "copy_strided_f32", &[Ptr, Ptr, LAYOUT, U64]);
// mask (u8), a, b, out, layout (mask: stride_a, a: stride_b), layout (b: stride_a), n
kernel!(WHERE_F32, Select, "where_f32", &[Ptr, Ptr, Ptr, Ptr, LAYOUT, LAYOUT, U64]);
// a, b, out (u8), layout, n, op
kernel!(COMPARE_F32, Select, "compare_f32", &[Ptr, Ptr, Ptr, LAYOUT, U64, U32]);
kernel!(CAST_U8_F32, Select, "cast_u8_f32", CAST);
kernel!(CAST_F32_U8, Select, "cast_f32_u8", CAST);
// packed (u8), levels [16], absmax, out, start, n, blocksize
kernel!(DEQUANT_BNB4_F32, Dequant, "dequant_bnb4_f32", &[Ptr, Ptr, Ptr, Ptr, U64, U64, U32]);
// packed (u8), levels [16], codes (u8), nested_code [256], nested_absmax, offset, out, start, n, blocksize,
// nested_blocksize
kernel!(DEQUANT_BNB4_DQ_F32, Dequant, "dequant_bnb4_dq_f32", &[Ptr, Ptr, Ptr, Ptr, Ptr, F32, Ptr, U64, U64, U32, U32]);

/// Every kernel above.
pub const ALL: &[&Kernel] = &[
    &GEMM_F32,
    &GEMM_BF16,
    &GEMM_F16,
    &GEMM_BF16_FAST,
    &GEMM_F16_FAST,
    &UNARY_F32,
    &BINARY_F32,
    &ACCUMULATE_F32,
    &FILL_F32,
    &REDUCE_LAST_F32,
    &REDUCE_MID_F32,
    &SOFTMAX_F32,
    &SOFTMAX_BWD_F32,
    &CROSS_ENTROPY_F32,
    &CROSS_ENTROPY_BWD_F32,
    &NORM_F32,
    &NORM_BWD_F32,
    &EMBEDDING_F32,
    &EMBEDDING_BWD_F32,
    &ROPE_F32,
    &ATTENTION_SOFTMAX_F32,
    &DROPOUT_F32,
    &ADAMW_F32,
    &SGD_F32,
    &CAST_F32_BF16,
    &CAST_BF16_F32,
    &CAST_F32_F16,
    &CAST_F16_F32,
    &COPY_STRIDED_F32,
    &WHERE_F32,
    &COMPARE_F32,
    &CAST_U8_F32,
    &CAST_F32_U8,
    &DEQUANT_BNB4_F32,
    &DEQUANT_BNB4_DQ_F32,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::entries;

    #[test]
    fn launcher_table_matches_the_ptx_entries() {
        let mut seen = 0;
        for m in Module::ALL {
            let in_ptx = entries(m.ptx()).unwrap();
            for e in &in_ptx {
                let k = ALL.iter().find(|k| k.name == e.name);
                let k = k.unwrap_or_else(|| panic!("{}: .entry {} has no launcher entry", m.name(), e.name));
                assert_eq!(k.module, m, "{}: listed under another module", e.name);
                let want: Vec<_> = k.params.iter().map(|p| p.ptx_type()).collect();
                let got: Vec<_> = e.params.iter().map(|p| (p.ty.as_str(), p.bytes)).collect();
                assert_eq!(got, want, "{}: PTX parameters differ from the launcher's", e.name);
                seen += 1;
            }
        }
        assert_eq!(seen, ALL.len(), "a launcher entry names a kernel missing from its PTX");
    }
}
