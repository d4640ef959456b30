//! The backend's error type: every message names what was being done.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CUDA driver call failed (`code` is the driver's error name, e.g. `NoDevice`).
    #[error("CUDA driver: {what} failed: {code}")]
    Driver { what: String, code: String },

    /// A launch's arguments do not match the kernel's parameter list.
    #[error("kernel {kernel}: {detail}")]
    Signature { kernel: &'static str, detail: String },

    /// Bad shapes, sizes or parameters for an op.
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
}

impl Error {
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
