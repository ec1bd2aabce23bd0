//! Fuzzes the GRUB environment block reader PID 1 and `berth os` use on the
//! ESP (which anything with the disk may have written): whatever it reads
//! either renders back to a block that reads the same, or is refused for its
//! size; and the kernel command line's slot arguments.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let vars = berth_iso::slots::parse_env(data);
    if let Ok(block) = berth_iso::slots::render_env(&vars) {
        assert_eq!(block.len(), 1024);
        assert_eq!(berth_iso::slots::parse_env(&block), vars);
    }
    let _ = berth_iso::slots::from_cmdline(&String::from_utf8_lossy(data));
});
