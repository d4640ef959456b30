//! Shared by peft's GPU tests.
use engine::{Device, Tensor};

/// Whether GPU 0 can be used; without one, says why and returns false, unless REQUIRE_GPU=1 (a failure).
pub fn gpu_available() -> bool {
    match Tensor::zeros(&[1], engine::DType::F32).to_device(Device::Cuda(0)) {
        Ok(_) => true,
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("REQUIRE_GPU=1 but: {e}"),
        Err(e) => {
            eprintln!("skipped, no GPU: {e}");
            false
        }
    }
}
