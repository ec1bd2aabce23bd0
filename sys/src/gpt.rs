//! Making a blank disk into a state disk: one GPT partition named and later
//! labelled `BERTH_STATE`. Written here rather than with sfdisk because the
//! format is small and the initramfs should not need util-linux.
//!
//! The one rule that matters: a disk is only ever written when its first MiB
//! is all zero ([`check_blank`]). Partition tables, filesystem superblocks,
//! LVM and RAID headers all live there, so a disk holding anything is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How much of the disk must be zero.
pub const BLANK_CHECK_BYTES: u64 = 1 << 20;

/// Smaller disks are refused: a state partition needs room for images.
pub const MIN_DISK_BYTES: u64 = 64 << 20;

/// The GPT partition name of the state partition.
pub const PART_NAME: &str = "BERTH_STATE";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read it: {source}", disk.display())]
    Read { disk: PathBuf, source: io::Error },
    #[error("{}: cannot write the partition table: {source}", disk.display())]
    Write { disk: PathBuf, source: io::Error },
    #[error("{} holds data (a non-zero byte at offset {offset}); it is never formatted automatically", disk.display())]
    NotBlank { disk: PathBuf, offset: u64 },
    #[error("{} is only {size} bytes; a state disk needs at least {MIN_DISK_BYTES}", disk.display())]
    TooSmall { disk: PathBuf, size: u64 },
}

/// Refuses any disk whose first MiB is not all zero (or that is too small).
pub fn check_blank(disk: &Path) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        disk: disk.to_path_buf(),
        source,
    };
    let mut f = File::open(disk).map_err(read_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(read_err)?;
    f.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    while offset < BLANK_CHECK_BYTES.min(size) {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Err(Error::NotBlank {
                disk: disk.to_path_buf(),
                offset: offset + i as u64,
            });
        }
        offset += n as u64;
    }
    if size < MIN_DISK_BYTES {
        return Err(Error::TooSmall {
            disk: disk.to_path_buf(),
            size,
        });
    }
    Ok(())
}

/// A GUID as GPT stores it (the first three fields little-endian).
pub fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        })
        .collect();
    let mut raw = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        raw[i] = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
    }
    [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ]
}

/// A random version-4 GUID, in GPT byte order (the partition tables'
/// disk and partition GUIDs, here and in PID 1's state disk).
pub fn random_guid() -> [u8; 16] {
    // Uniqueness is all GPT needs (see `random::unique`).
    let mut g: [u8; 16] = crate::random::unique();
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    g
}

/// Linux filesystem data, 0FC63DAF-8483-4772-8E79-3D69D8477DE4, in GPT byte order.
const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The partition's first and last sector for a disk of `size` bytes.
pub fn partition_range(size: u64, sector: u64) -> (u64, u64) {
    let sectors = size / sector;
    let table = u64::from(ENTRIES * ENTRY_SIZE).div_ceil(sector);
    let last_usable = sectors - 2 - table;
    // 1 MiB alignment, as every partitioning tool does.
    let align = (1 << 20) / sector;
    let first = align;
    let last = ((last_usable + 1) / align) * align - 1;
    (first, last)
}

/// The protective MBR's boot code. A BIOS that tries this disk (disk before
/// CD in its boot order) loads sector 0 at 0000:7C00 and jumps there because
/// of the 0x55AA signature; all-zero code would then run off into memory and
/// hang the machine. This prints a line on the screen and asks the BIOS for
/// the next boot device with `int 18h`, the classic "not a boot disk" code.
/// Hand-assembled (16-bit real mode), offsets from 0x7C00:
///
/// ```text
/// 00  FA          cli
/// 01  31 C0       xor  ax, ax
/// 03  8E D8       mov  ds, ax          ; the message is addressed from 0:7C00
/// 05  8E D0       mov  ss, ax
/// 07  BC 00 7C    mov  sp, 0x7C00      ; a stack below the code
/// 0A  FB          sti
/// 0B  BE 22 7C    mov  si, 0x7C22      ; the message, at offset 0x22
/// 0E  FC          cld
/// 0F  AC          lodsb                ; print: al = [si++]
/// 10  84 C0       test al, al
/// 12  74 09       jz   0x1D            ; NUL: done
/// 14  B4 0E       mov  ah, 0x0E        ; BIOS teletype output
/// 16  BB 07 00    mov  bx, 0x0007      ; page 0, light grey
/// 19  CD 10       int  0x10
/// 1B  EB F2       jmp  0x0F
/// 1D  CD 18       int  0x18            ; boot failed: BIOS tries the next device
/// 1F  F4          hlt                  ; a BIOS that returns from it: stop here
/// 20  EB FD       jmp  0x1F
/// 22  "…\r\n\0"  the message
/// ```
pub const MBR_BOOT_CODE: &[u8] = &[
    0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xFB, 0xBE, 0x22, 0x7C, 0xFC, 0xAC,
    0x84, 0xC0, 0x74, 0x09, 0xB4, 0x0E, 0xBB, 0x07, 0x00, 0xCD, 0x10, 0xEB, 0xF2, 0xCD, 0x18, 0xF4,
    0xEB, 0xFD,
];

/// What [`MBR_BOOT_CODE`] prints, NUL-terminated, right after the code.
pub const MBR_MESSAGE: &[u8] = b"Berth state disk, not bootable: trying the next boot device\r\n\0";

/// Sector 0 of a GPT disk: the boot code above, then one protective
/// partition (type 0xEE) covering `sectors - 1` sectors from LBA 1, and the
/// 0x55AA signature.
pub fn protective_mbr(sectors: u64, sector_size: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; sector_size as usize];
    mbr[..MBR_BOOT_CODE.len()].copy_from_slice(MBR_BOOT_CODE);
    let msg_at = MBR_BOOT_CODE.len();
    mbr[msg_at..msg_at + MBR_MESSAGE.len()].copy_from_slice(MBR_MESSAGE);
    let p = &mut mbr[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xEE;
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let covered = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&covered.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// Writes a protective MBR, primary and backup GPT with one Linux partition
/// spanning the disk. `sector` is the logical sector size (512 or 4096).
pub fn write_gpt(disk: &Path, sector: u64) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        disk: disk.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(write_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(write_err)?;
    let sectors = size / sector;
    let table_sectors = u64::from(ENTRIES * ENTRY_SIZE).div_ceil(sector);
    let (first, last) = partition_range(size, sector);

    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&LINUX_FS);
    entries[16..32].copy_from_slice(&random_guid());
    entries[32..40].copy_from_slice(&first.to_le_bytes());
    entries[40..48].copy_from_slice(&last.to_le_bytes());
    for (i, unit) in PART_NAME.encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32(&entries);
    let disk_guid = random_guid();

    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; sector as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + table_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 2 - table_sectors).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[0..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };

    let mbr = protective_mbr(sectors, sector);

    let mut put = |lba: u64, data: &[u8]| -> io::Result<()> {
        f.seek(SeekFrom::Start(lba * sector))?;
        f.write_all(data)
    };
    // Backup first, primary last: a crash midway leaves no valid primary header,
    // so the disk still reads as not partitioned rather than half-made.
    put(sectors - 1 - table_sectors, &entries).map_err(write_err)?;
    put(
        sectors - 1,
        &header(sectors - 1, 1, sectors - 1 - table_sectors),
    )
    .map_err(write_err)?;
    put(2, &entries).map_err(write_err)?;
    put(0, &mbr).map_err(write_err)?;
    put(1, &header(1, sectors - 1, 2)).map_err(write_err)?;
    f.sync_all().map_err(write_err)
}

/// The node of a disk's first partition (`vda` → `vda1`, `nvme0n1` → `nvme0n1p1`).
pub fn first_partition(disk: &Path) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p1"))
    } else {
        PathBuf::from(format!("{s}1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn image(dir: &Path, size: u64) -> PathBuf {
        let p = dir.join("disk.img");
        File::create(&p)
            .and_then(|f| f.set_len(size))
            .expect("image");
        p
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn refuses_a_disk_with_data_anywhere_in_the_first_mib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 128 << 20);
        check_blank(&disk).expect("a blank disk passes");
        for offset in [0u64, 510, 4096, (1 << 20) - 1] {
            let mut f = OpenOptions::new().write(true).open(&disk).expect("open");
            f.seek(SeekFrom::Start(offset)).expect("seek");
            f.write_all(&[0x42]).expect("write");
            drop(f);
            let before = std::fs::read(&disk).expect("read");
            match check_blank(&disk) {
                Err(Error::NotBlank { offset: at, .. }) => assert_eq!(at, offset),
                other => panic!("offset {offset}: {other:?}"),
            }
            assert_eq!(std::fs::read(&disk).expect("read"), before, "untouched");
            let mut f = OpenOptions::new().write(true).open(&disk).expect("open");
            f.seek(SeekFrom::Start(offset)).expect("seek");
            f.write_all(&[0]).expect("write");
        }
        // Data past the first MiB does not make a disk "in use".
        let mut f = OpenOptions::new().write(true).open(&disk).expect("open");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(b"x").expect("write");
        check_blank(&disk).expect("still blank where it matters");
    }

    #[test]
    fn refuses_small_disks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 8 << 20);
        assert!(matches!(check_blank(&disk), Err(Error::TooSmall { .. })));
    }

    #[test]
    fn writes_a_table_other_tools_accept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 100 << 20);
        write_gpt(&disk, 512).expect("gpt");
        let data = std::fs::read(&disk).expect("read");
        assert_eq!(&data[512..520], b"EFI PART");
        let end = data.len() - 512;
        assert_eq!(&data[end..end + 8], b"EFI PART");
        let (first, last) = partition_range(100 << 20, 512);
        assert_eq!(first, 2048);
        assert_eq!((last + 1) % 2048, 0);
        assert!(
            check_blank(&disk).is_err(),
            "a partitioned disk is not blank"
        );

        // fdisk (util-linux) checks both headers' CRCs and the entry array.
        let Ok(out) = Command::new("fdisk").arg("-l").arg(&disk).output() else {
            berth_testkit::skip!("fdisk is not installed (util-linux): no cross-check");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("Disklabel type: gpt"), "{text}");
        assert!(!text.to_lowercase().contains("corrupt"), "{text}");
        assert!(text.contains(&format!("{first}")), "{text}");
        assert!(text.contains("Linux filesystem"), "{text}");
        if let Ok(out) = Command::new("sfdisk").arg("--dump").arg(&disk).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("name=\"BERTH_STATE\""), "{text}");
        }
    }

    /// The boot code's jumps and message address agree with where the bytes
    /// are, and it ends in `int 18h`; the QEMU tests boot a BIOS through it.
    #[test]
    fn the_protective_mbr_hands_back_to_the_bios() {
        let mbr = protective_mbr(204_800, 512);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(mbr[446 + 4], 0xEE);
        let code = MBR_BOOT_CODE;
        // mov si, imm16 points at the message, which follows the code.
        assert_eq!(code[0x0B], 0xBE);
        let si = usize::from(u16::from_le_bytes([code[0x0C], code[0x0D]]));
        assert_eq!(si - 0x7C00, code.len());
        assert_eq!(
            &mbr[si - 0x7C00..si - 0x7C00 + MBR_MESSAGE.len()],
            MBR_MESSAGE
        );
        assert_eq!(MBR_MESSAGE.last(), Some(&0));
        // Short jumps land on instruction starts: jz → int 18h, jmp → lodsb, jmp → hlt.
        let target = |at: usize| (at as isize + 2 + isize::from(code[at + 1] as i8)) as usize;
        assert_eq!((code[0x12], target(0x12)), (0x74, 0x1D));
        assert_eq!(&code[0x1D..0x1F], &[0xCD, 0x18]);
        assert_eq!((code[0x1B], target(0x1B)), (0xEB, 0x0F));
        assert_eq!(code[0x0F], 0xAC);
        assert_eq!((code[0x20], target(0x20)), (0xEB, 0x1F));
        assert_eq!(code[0x1F], 0xF4);
        // Code and message stay clear of the partition table.
        assert!(code.len() + MBR_MESSAGE.len() <= 440);
    }

    #[test]
    fn partition_nodes() {
        assert_eq!(
            first_partition(Path::new("/dev/vda")),
            Path::new("/dev/vda1")
        );
        assert_eq!(
            first_partition(Path::new("/dev/nvme0n1")),
            Path::new("/dev/nvme0n1p1")
        );
    }
}
