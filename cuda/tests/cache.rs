//! The device's cache of freed buffers: a dropped buffer's allocation is reused for the next one of the
//! same byte size (any element type), `zeros` clears what a reused allocation held, and `empty_cache`
//! frees everything. Without a GPU each test prints why and returns; REQUIRE_GPU=1 makes that a failure.
#![cfg(feature = "driver")]

mod common;

use common::device;
use cuda::Arg;

fn address(a: Arg) -> u64 {
    match a {
        Arg::Ptr(p) => p,
        other => panic!("not a pointer: {other:?}"),
    }
}

#[test]
fn freed_buffers_are_reused_zeroed_on_request_and_released() {
    let Some(dev) = device() else { return };
    assert_eq!(dev.cached_bytes(), 0);
    let mut first = dev.alloc::<f32>(1000).unwrap();
    cuda::ops::fill(&dev, &mut first, 1000, 7.0).unwrap();
    let at = address(first.arg());
    drop(first);
    assert_eq!(dev.cached_bytes(), 4000);
    // Another size does not take it; the same byte size does, whatever the element type.
    let other = dev.alloc::<f32>(999).unwrap();
    assert_ne!(address(other.arg()), at);
    let zeros = dev.zeros::<u32>(1000).unwrap();
    assert_eq!(address(zeros.arg()), at, "the cached allocation of 4000 bytes is reused");
    assert_eq!(dev.cached_bytes(), 0);
    assert!(dev.download(&zeros).unwrap().iter().all(|&v| v == 0), "zeros clears a reused allocation");
    drop((zeros, other));
    assert_eq!(dev.cached_bytes(), 4000 + 3996);
    let up = dev.upload(&[1.5f32; 999]).unwrap();
    assert_eq!(dev.download(&up).unwrap(), vec![1.5f32; 999]);
    drop(up);
    dev.empty_cache().unwrap();
    assert_eq!(dev.cached_bytes(), 0);
}
