//! Fuzzes the GPT code the installer and the boot-time growpart use on disks
//! they did not write. Random bytes almost never carry a GPT signature and
//! both CRCs, so each input describes a disk instead: a sector size, a disk
//! size and up to four partitions are written with `write_gpt`, which must
//! read back as written; the rest of the input then damages bytes of the
//! primary or the backup table (the first and last 64 KiB), and the reader
//! and the grower run on what is left. They may refuse it, but must not
//! panic, and what they accept must make sense.

#![no_main]

use std::io::Cursor;

use berth_sys::gpt::{self, Partition};
use libfuzzer_sys::fuzz_target;

/// The table areas: a 512-byte-sector GPT is 34 sectors at each end, a
/// 4096-byte one 6; 64 KiB covers both with the data beside them.
const DAMAGE_WINDOW: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let [shape, mib, count, rest @ ..] = data else {
        return;
    };
    let sector: u64 = if shape & 1 == 0 { 512 } else { 4096 };
    let disk_bytes = (2 + u64::from(mib % 15)) << 20;
    let count = 1 + usize::from(count % 4);
    let (sizes, damage) = rest.split_at(rest.len().min(count));

    let mut parts = Vec::new();
    let mut start = 1u64 << 20;
    for i in 0..count {
        let sectors = 1 + u64::from(sizes.get(i).copied().unwrap_or(8));
        let name = if i + 1 == count {
            gpt::STATE_NAME.to_string()
        } else {
            format!("P{i}")
        };
        parts.push(Partition {
            number: i as u32 + 1,
            name,
            type_guid: gpt::guid_bytes(gpt::TYPE_LINUX),
            start,
            bytes: sectors * sector,
        });
        start += sectors * sector;
    }
    let mut disk = Cursor::new(vec![0u8; disk_bytes as usize]);
    if gpt::write_gpt(&mut disk, sector, &parts).is_err() {
        return;
    }
    let table = gpt::read_gpt(&mut disk).expect("a table just written reads back");
    assert_eq!(table.sector, sector);
    assert_eq!(table.partitions, parts, "read back other than written");

    let len = disk.get_ref().len();
    for hit in damage.chunks_exact(3) {
        let offset = usize::from(u16::from_le_bytes([hit[0], hit[1]])) % DAMAGE_WINDOW;
        // The high bit of the value byte picks the end of the disk.
        let at = if hit[2] & 0x80 == 0 {
            offset
        } else {
            len - 1 - offset
        };
        disk.get_mut()[at] ^= hit[2] | 1;
    }

    let Ok(table) = gpt::read_gpt(&mut disk) else {
        return;
    };
    for p in &table.partitions {
        assert!(p.bytes > 0 && p.start < p.end(), "{p:?}");
    }
    // Room to grow into: the same disk, 1–2 MiB bigger.
    let mut bigger = disk.into_inner();
    bigger.resize(len + (1 << 20) + usize::from(*mib) * 4096, 0);
    let new_len = bigger.len() as u64;
    let mut bigger = Cursor::new(bigger);
    if let Ok(Some(grown)) = gpt::grow_last(&mut bigger, gpt::STATE_NAME) {
        assert!(grown.end() <= new_len, "{grown:?} past {new_len}");
        let after = gpt::read_gpt(&mut bigger).expect("a grown table reads back");
        assert_eq!(after.find(gpt::STATE_NAME), Some(&grown));
    }
});
