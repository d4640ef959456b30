//! Every kernel of `kernels::signatures::ALL` resolves on the device (on the emulated device of
//! cuda/emulator/ this is its kernel table; cuda/emulator/build.sh checks the converse, that the table
//! holds nothing else). On the emulator also: a PTX entry it has no host build of is not found, and a
//! kernel that writes past its buffer or is given a stale pointer fails like a GPU fault. Without a GPU
//! these return early after printing why, unless REQUIRE_GPU=1.
#![cfg(feature = "driver")]

mod common;

use common::device;
use cuda::{Arg, Device};
use kernels::signatures::{ALL, FILL_F32};
use kernels::Module;

const EMULATOR: &str = "CPU emulator of kernels/cu";

fn emulated() -> Option<Device> {
    let dev = device()?;
    if dev.name().unwrap() == EMULATOR {
        Some(dev)
    } else {
        eprintln!("skipped, not the emulated device");
        None
    }
}

#[test]
fn every_kernel_of_the_signature_table_resolves() {
    let Some(_dev) = device() else { return };
    for m in Module::ALL {
        let module = cust::module::Module::from_ptx(m.ptx(), &[]).unwrap();
        for k in ALL.iter().filter(|k| k.module == m) {
            module.get_function(k.name).unwrap_or_else(|e| panic!("{}: {e:?}", k.name));
        }
    }
}

#[test]
fn the_emulator_reports_its_device_and_rejects_entries_outside_its_table() {
    let Some(dev) = emulated() else { return };
    assert_eq!(dev.compute_capability().unwrap(), (8, 0));
    assert_eq!(Device::driver_version().unwrap(), (12, 0));
    let ptx = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry not_a_kernel()\n{\nret;\n}\n";
    let module = cust::module::Module::from_ptx(ptx, &[]).unwrap();
    let e = module.get_function("not_a_kernel").unwrap_err();
    assert_eq!(e, cust::error::CudaError::NotFound);
    // A kernel of the table that this module does not declare is not found either.
    assert_eq!(module.get_function("fill_f32").unwrap_err(), cust::error::CudaError::NotFound);
}

#[test]
fn the_emulator_faults_on_writes_past_a_buffer_and_on_stale_pointers() {
    let Some(dev) = emulated() else { return };
    let buf = dev.zeros::<f32>(10).unwrap();
    dev.launch(&FILL_F32, [1, 1, 1], 32, &[buf.arg(), Arg::U64(10), Arg::F32(2.0)]).unwrap();
    assert_eq!(dev.download(&buf).unwrap(), vec![2.0; 10]);
    let e = dev.launch(&FILL_F32, [1, 1, 1], 32, &[buf.arg(), Arg::U64(11), Arg::F32(3.0)]).unwrap_err();
    assert!(e.to_string().contains("IllegalAddress"), "{e}");
    let e = dev.launch(&FILL_F32, [1, 1, 1], 32, &[Arg::Ptr(0x1000), Arg::U64(1), Arg::F32(3.0)]).unwrap_err();
    assert!(e.to_string().contains("IllegalAddress"), "{e}");
    // More than 1024 threads per block is refused before anything runs.
    let e = dev.launch(&FILL_F32, [1, 1, 1], 2048, &[buf.arg(), Arg::U64(10), Arg::F32(4.0)]).unwrap_err();
    assert!(e.to_string().contains("InvalidValue"), "{e}");
    assert_eq!(dev.download(&buf).unwrap(), vec![3.0; 10]);
}
