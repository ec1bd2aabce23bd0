//! Fuzzes the GPT reader the installer and the boot-time growpart use on
//! disks they did not write: reading the table, then growing the last
//! partition of the disk (in memory).

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = Cursor::new(data.to_vec());
    if berth_sys::gpt::read_gpt(&mut disk).is_ok() {
        // A disk image twice the size: room to grow into.
        let mut bigger = data.to_vec();
        bigger.resize(data.len() * 2, 0);
        let _ = berth_sys::gpt::grow_last(&mut Cursor::new(bigger), berth_sys::gpt::STATE_NAME);
    }
});
