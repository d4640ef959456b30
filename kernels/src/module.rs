//! The PTX modules: one per `kernels/cu/NAME.cu`, embedded so that users need only a driver.

/// A PTX module (one source file's kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    Attention,
    Cast,
    Dequant,
    Dropout,
    Elementwise,
    Embedding,
    GemmF32,
    GemmMma,
    Norm,
    Optim,
    Reduce,
    Rope,
    Select,
    Softmax,
}

impl Module {
    pub const ALL: [Module; 14] = [
        Module::Attention,
        Module::Cast,
        Module::Dequant,
        Module::Dropout,
        Module::Elementwise,
        Module::Embedding,
        Module::GemmF32,
        Module::GemmMma,
        Module::Norm,
        Module::Optim,
        Module::Reduce,
        Module::Rope,
        Module::Select,
        Module::Softmax,
    ];

    /// The file stem under `kernels/cu/` and `kernels/ptx/`.
    pub fn name(self) -> &'static str {
        match self {
            Module::Attention => "attention",
            Module::Cast => "cast",
            Module::Dequant => "dequant",
            Module::Dropout => "dropout",
            Module::Elementwise => "elementwise",
            Module::Embedding => "embedding",
            Module::GemmF32 => "gemm_f32",
            Module::GemmMma => "gemm_mma",
            Module::Norm => "norm",
            Module::Optim => "optim",
            Module::Reduce => "reduce",
            Module::Rope => "rope",
            Module::Select => "select",
            Module::Softmax => "softmax",
        }
    }

    /// The module's PTX text (NUL-free, as the driver's module loader wants it).
    pub fn ptx(self) -> &'static str {
        match self {
            Module::Attention => include_str!("../ptx/attention.ptx"),
            Module::Cast => include_str!("../ptx/cast.ptx"),
            Module::Dequant => include_str!("../ptx/dequant.ptx"),
            Module::Dropout => include_str!("../ptx/dropout.ptx"),
            Module::Elementwise => include_str!("../ptx/elementwise.ptx"),
            Module::Embedding => include_str!("../ptx/embedding.ptx"),
            Module::GemmF32 => include_str!("../ptx/gemm_f32.ptx"),
            Module::GemmMma => include_str!("../ptx/gemm_mma.ptx"),
            Module::Norm => include_str!("../ptx/norm.ptx"),
            Module::Optim => include_str!("../ptx/optim.ptx"),
            Module::Reduce => include_str!("../ptx/reduce.ptx"),
            Module::Rope => include_str!("../ptx/rope.ptx"),
            Module::Select => include_str!("../ptx/select.ptx"),
            Module::Softmax => include_str!("../ptx/softmax.ptx"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ptx_file_is_a_module_and_targets_sm80_with_isa_8_0() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ptx");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let mut listed: Vec<String> = Module::ALL.iter().map(|m| format!("{}.ptx", m.name())).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for m in Module::ALL {
            let ptx = m.ptx();
            assert_eq!(ptx, std::fs::read_to_string(dir.join(format!("{}.ptx", m.name()))).unwrap());
            assert!(ptx.contains("\n.version 8.0\n"), "{}: PTX ISA must be 8.0 (CUDA 12.0 drivers)", m.name());
            assert!(ptx.contains("\n.target sm_80\n"), "{}: target must be sm_80", m.name());
            assert!(!ptx.contains('\0'));
        }
    }
}
