//! Runtime op codes of the multi-op kernels; the numbering is the order of the C enums in
//! `kernels/cu/elementwise.cu`, `kernels/cu/reduce.cu` and `kernels/cu/select.cu` (checked by a test that
//! reads those sources).

/// `unary_f32`'s op (`y = op(x, scalar)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Relu,
    GeluTanh,
    GeluErf,
    Silu,
    Tanh,
    Sigmoid,
    Sqrt,
    Rsqrt,
    Abs,
    Square,
    Recip,
    Scale,
    AddScalar,
    PowScalar,
    Copy,
}

impl Unary {
    /// Every op, in code order (what tests iterate over).
    pub const ALL: [Unary; 18] = [
        Unary::Neg,
        Unary::Exp,
        Unary::Log,
        Unary::Relu,
        Unary::GeluTanh,
        Unary::GeluErf,
        Unary::Silu,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Sqrt,
        Unary::Rsqrt,
        Unary::Abs,
        Unary::Square,
        Unary::Recip,
        Unary::Scale,
        Unary::AddScalar,
        Unary::PowScalar,
        Unary::Copy,
    ];
}

/// `binary_f32`'s op; the `*Bwd` ops take (forward input, output gradient) and give the input gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    ReluBwd,
    SiluBwd,
    GeluTanhBwd,
    GeluErfBwd,
    TanhBwd,
    SigmoidBwd,
}

/// `reduce_last_f32` / `reduce_mid_f32`'s op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reduce {
    Sum,
    Max,
    Mean,
}

/// `compare_f32`'s op: `a >= b`, `a > b`, `a == b`, `a != b` as 0 / 1 (a NaN compares false, except
/// under `Ne`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Compare {
    Ge,
    Gt,
    Eq,
    Ne,
}

impl Compare {
    /// Every op, in code order.
    pub const ALL: [Compare; 4] = [Compare::Ge, Compare::Gt, Compare::Eq, Compare::Ne];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of a C `enum { A, B, ... }` that starts with `first`, in order.
    fn c_enum(src: &str, first: &str) -> Vec<String> {
        let start = src.find(&format!("enum {{ {first}")).unwrap();
        let body = &src[start + 6..start + src[start..].find('}').unwrap()];
        body.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }

    fn camel(c_name: &str) -> String {
        c_name.split('_').skip(1).map(|w| w[..1].to_string() + &w[1..].to_lowercase()).collect()
    }

    #[test]
    fn rust_op_codes_match_the_c_enums() {
        let ew = include_str!("../cu/elementwise.cu");
        let unary: Vec<String> = c_enum(ew, "U_NEG").iter().map(|s| camel(s)).collect();
        let all_unary = Unary::ALL;
        assert_eq!(unary.len(), all_unary.len());
        for (i, op) in all_unary.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(format!("{op:?}"), unary[i]);
        }
        let binary: Vec<String> = c_enum(ew, "B_ADD").iter().map(|s| camel(s)).collect();
        let all_binary = [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Max,
            Binary::Min,
            Binary::Pow,
            Binary::ReluBwd,
            Binary::SiluBwd,
            Binary::GeluTanhBwd,
            Binary::GeluErfBwd,
            Binary::TanhBwd,
            Binary::SigmoidBwd,
        ];
        assert_eq!(binary.len(), all_binary.len());
        for (i, op) in all_binary.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(format!("{op:?}"), binary[i]);
        }
        let reduce: Vec<String> = c_enum(include_str!("../cu/reduce.cu"), "R_SUM").iter().map(|s| camel(s)).collect();
        assert_eq!(reduce, vec!["Sum", "Max", "Mean"]);
        assert_eq!((Reduce::Sum as u32, Reduce::Max as u32, Reduce::Mean as u32), (0, 1, 2));
    }

    #[test]
    fn compare_op_codes_match_the_c_enum() {
        let c: Vec<String> = c_enum(include_str!("../cu/select.cu"), "C_GE").iter().map(|s| camel(s)).collect();
        assert_eq!(c.len(), Compare::ALL.len());
        for (i, op) in Compare::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(format!("{op:?}"), c[i]);
        }
    }
}
