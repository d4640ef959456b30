//! The device every GPU test of this crate opens.
use cuda::Device;

/// GPU 0, or `None` (after saying why) when there is none and REQUIRE_GPU is not 1.
pub fn device() -> Option<Device> {
    match Device::new(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") => panic!("REQUIRE_GPU=1 but: {e}"),
        Err(e) => {
            eprintln!("skipped, no GPU: {e}");
            None
        }
    }
}
