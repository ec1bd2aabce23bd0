//! GUID partition tables: the one reader and writer of them, for the
//! installed disk's five partitions (`berth_iso::disk::Layout`) and for the
//! one-partition state disk PID 1 makes of a blank disk. Built on `gptman`
//! (pure Rust, no util-linux in the initramfs); what is Berth's is here: the
//! order of the writes, the 1 MiB alignment, the protective MBR's boot code,
//! and the rule that a disk is only ever made a state disk when its first MiB
//! is all zero ([`check_blank`]). Partition tables, filesystem superblocks,
//! LVM and RAID headers all live there, so a disk holding anything is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How much of the disk must be zero.
pub const BLANK_CHECK_BYTES: u64 = 1 << 20;

/// Smaller disks are refused: a state partition needs room for images.
pub const MIN_DISK_BYTES: u64 = 64 << 20;

/// The state partition's GPT name, on an installed disk and on a state disk
/// alike (its ext4 filesystem carries the same label).
pub const STATE_NAME: &str = "BERTH_STATE";

/// GPT partition type GUIDs, as text ([`guid_bytes`] makes them bytes).
pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Partitions start and end on 1 MiB boundaries, as every partitioning tool
/// places them.
const ALIGN_BYTES: u64 = 1 << 20;

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
    /// Neither the primary nor the backup table is valid.
    #[error("reading the partition table: {}", chain(.0))]
    ReadTable(#[source] gptman::Error),
    #[error("writing the partition table: {}", chain(.0))]
    WriteTable(#[source] gptman::Error),
    #[error("partition {number} ({name}) cannot be written: {reason}")]
    BadPartition {
        number: u32,
        name: String,
        reason: &'static str,
    },
    #[error("growing {name}: {}", chain(source))]
    Grow { name: String, source: gptman::Error },
}

/// One partition: its entry number (1-based), name, type and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub name: String,
    /// In GPT byte order ([`guid_bytes`]).
    pub type_guid: [u8; 16],
    pub start: u64,
    pub bytes: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.bytes
    }
}

/// A disk's partition table as read: its sector size and the entries in use,
/// in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub sector: u64,
    pub partitions: Vec<Partition>,
}

impl Table {
    pub fn find(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
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

/// `gptman`'s error with its sources: its I/O variant says only "generic
/// I/O error" and keeps what went wrong in its source.
fn chain(e: &gptman::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// Where the last partition may end (exclusive, in sectors): the end of the
/// usable area between the tables, rounded down to the alignment.
fn aligned_end(last_usable_lba: u64, sector: u64) -> u64 {
    let align = ALIGN_BYTES / sector;
    (last_usable_lba + 1) / align * align
}

/// Reads the GPT of `disk`: the primary table, or the backup when the
/// primary is damaged; 512-byte sectors tried first, then 4096.
pub fn read_gpt<D: Read + Seek + ?Sized>(disk: &mut D) -> Result<Table, Error> {
    let gpt = gptman::GPT::find_from(disk).map_err(Error::ReadTable)?;
    let sector = gpt.sector_size;
    let partitions = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(number, e)| {
            // The table is read from disks Berth did not write: an entry that
            // ends before it starts, or past any disk, is refused, not wrapped.
            let bytes = e
                .ending_lba
                .checked_add(1)
                .and_then(|end| end.checked_sub(e.starting_lba))
                .and_then(|n| n.checked_mul(sector));
            let start = e.starting_lba.checked_mul(sector);
            match (start, bytes) {
                (Some(start), Some(bytes)) if start.checked_add(bytes).is_some() => Ok(Partition {
                    number,
                    name: e.partition_name.as_str().to_string(),
                    type_guid: e.partition_type_guid,
                    start,
                    bytes,
                }),
                _ => Err(Error::ReadTable(gptman::Error::InvalidPartitionBoundaries)),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Table { sector, partitions })
}

/// Writes a new GPT holding `partitions` (each at its entry number, on
/// `sector` boundaries) and its protective MBR, keeping bytes 0..446 of
/// sector 0 (boot code) as they are. The backup table goes first and the
/// protective MBR's signature last: a write cut short leaves no valid primary
/// table, or one no reader takes without its protective MBR.
pub fn write_gpt<D: Read + Write + Seek>(
    disk: &mut D,
    sector: u64,
    partitions: &[Partition],
) -> Result<(), Error> {
    let mut gpt = gptman::GPT::new_from(disk, sector, random_guid()).map_err(Error::WriteTable)?;
    let entries = gpt.header.number_of_partition_entries;
    for p in partitions {
        let bad = |reason| Error::BadPartition {
            number: p.number,
            name: p.name.clone(),
            reason,
        };
        if p.number == 0 || p.number > entries {
            return Err(bad("its number is not that of an entry"));
        }
        if p.bytes == 0 || p.start % sector != 0 || p.bytes % sector != 0 {
            return Err(bad("it is empty or not on sector boundaries"));
        }
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_guid,
            unique_partition_guid: random_guid(),
            starting_lba: p.start / sector,
            ending_lba: p.end() / sector - 1,
            attribute_bits: 0,
            partition_name: p.name.as_str().into(),
        };
    }
    // gptman writes the header it holds first and the other copy second, so
    // it is handed the backup's view of the table.
    let header = &mut gpt.header;
    std::mem::swap(&mut header.primary_lba, &mut header.backup_lba);
    header.partition_entry_lba = header.last_usable_lba + 1;
    gpt.write_into(disk).map_err(Error::WriteTable)?;
    gptman::GPT::write_protective_mbr_into(disk, sector).map_err(Error::WriteTable)?;
    Ok(())
}

/// Makes `disk` a state disk: [`MBR_BOOT_CODE`] and one Linux partition
/// named [`STATE_NAME`] from 1 MiB to the last whole MiB before the backup
/// table. `sector` is the logical sector size (512 or 4096). The caller has
/// checked the disk blank ([`check_blank`]).
pub fn write_state_disk(disk: &Path, sector: u64) -> Result<(), Error> {
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
    if size < MIN_DISK_BYTES {
        return Err(Error::TooSmall {
            disk: disk.to_path_buf(),
            size,
        });
    }
    let usable = gptman::GPTHeader::new_from(&mut f, sector, [0; 16]).map_err(Error::WriteTable)?;
    let end = aligned_end(usable.last_usable_lba, sector) * sector;
    let state = Partition {
        number: 1,
        name: STATE_NAME.to_string(),
        type_guid: guid_bytes(TYPE_LINUX),
        start: ALIGN_BYTES,
        bytes: end - ALIGN_BYTES,
    };
    f.seek(SeekFrom::Start(0)).map_err(write_err)?;
    f.write_all(&[MBR_BOOT_CODE, MBR_MESSAGE].concat())
        .map_err(write_err)?;
    write_gpt(&mut f, sector, &[state])?;
    f.sync_all().map_err(write_err)
}

/// Grows the last partition of `disk`, if it is `name`, to the last whole
/// MiB before the end of the disk (moving the backup GPT there). Returns the
/// partition as it now is when it grew; `None` when there was nothing to
/// grow (less than 1 MiB).
pub fn grow_last<D: Read + Write + Seek>(
    disk: &mut D,
    name: &str,
) -> Result<Option<Partition>, Error> {
    let gpt_err = |source| Error::Grow {
        name: name.to_string(),
        source,
    };
    let mut gpt = gptman::GPT::find_from(disk).map_err(Error::ReadTable)?;
    let sector = gpt.sector_size;
    gpt.header.update_from(disk, sector).map_err(gpt_err)?;
    let Some((number, entry)) = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .max_by_key(|(_, e)| e.ending_lba)
        .map(|(n, e)| (n, e.clone()))
    else {
        return Ok(None);
    };
    if entry.partition_name.as_str() != name {
        return Ok(None);
    }
    let end = aligned_end(gpt.header.last_usable_lba, sector);
    let align = ALIGN_BYTES / sector;
    if end <= entry.ending_lba.saturating_add(1 + align) {
        return Ok(None);
    }
    gpt[number].ending_lba = end - 1;
    gpt.write_into(disk).map_err(gpt_err)?;
    Ok(Some(Partition {
        number,
        name: name.to_string(),
        type_guid: entry.partition_type_guid,
        start: entry.starting_lba * sector,
        bytes: (end - entry.starting_lba) * sector,
    }))
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
        write_state_disk(&disk, 512).expect("gpt");
        let data = std::fs::read(&disk).expect("read");
        assert_eq!(&data[512..520], b"EFI PART");
        let end = data.len() - 512;
        assert_eq!(&data[end..end + 8], b"EFI PART");
        let table = read_gpt(&mut File::open(&disk).expect("open")).expect("read back");
        assert_eq!(table.sector, 512);
        let [state] = table.partitions.as_slice() else {
            panic!("{table:?}");
        };
        assert_eq!((state.number, state.name.as_str()), (1, STATE_NAME));
        assert_eq!(state.type_guid, guid_bytes(TYPE_LINUX));
        // 1 MiB alignment at both ends, up to the last whole MiB before the
        // backup table (33 sectors at the end).
        assert_eq!(state.start, 1 << 20);
        assert_eq!(state.end(), 99 << 20);
        assert!(
            check_blank(&disk).is_err(),
            "a partitioned disk is not blank"
        );

        // fdisk (util-linux) checks both headers' CRCs and the entry array.
        let first = state.start / 512;
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

    #[test]
    fn a_state_disk_with_4096_byte_sectors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 100 << 20);
        write_state_disk(&disk, 4096).expect("gpt");
        let table = read_gpt(&mut File::open(&disk).expect("open")).expect("read back");
        assert_eq!(table.sector, 4096);
        let state = table.find(STATE_NAME).expect("state");
        assert_eq!((state.start, state.end()), (1 << 20, 99 << 20));
    }

    /// The backup table is whole on its own: a disk whose primary header
    /// is damaged reads the same from the backup.
    #[test]
    fn the_backup_table_stands_in_for_the_primary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 100 << 20);
        let parts: Vec<Partition> = [
            (1, "one", TYPE_ESP, 1u64, 2u64),
            (3, "three", TYPE_LINUX, 3, 90),
        ]
        .into_iter()
        .map(|(number, name, t, start, end)| Partition {
            number,
            name: name.to_string(),
            type_guid: guid_bytes(t),
            start: start << 20,
            bytes: (end - start) << 20,
        })
        .collect();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .expect("open");
        write_gpt(&mut f, 512, &parts).expect("gpt");
        let table = read_gpt(&mut f).expect("read");
        assert_eq!(table.partitions, parts);
        f.seek(SeekFrom::Start(512)).expect("seek");
        f.write_all(&[0u8; 512]).expect("damage the primary header");
        assert_eq!(read_gpt(&mut f).expect("read the backup").partitions, parts);
    }

    #[test]
    fn partitions_that_cannot_be_entries_are_refused() {
        let mut disk = io::Cursor::new(vec![0u8; 8 << 20]);
        let part = |number, start, bytes| Partition {
            number,
            name: "x".into(),
            type_guid: guid_bytes(TYPE_LINUX),
            start,
            bytes,
        };
        for bad in [
            part(0, 1 << 20, 1 << 20),
            part(129, 1 << 20, 1 << 20),
            part(1, 1000, 1 << 20),
            part(1, 1 << 20, 0),
        ] {
            assert!(
                matches!(
                    write_gpt(&mut disk, 512, std::slice::from_ref(&bad)),
                    Err(Error::BadPartition { .. })
                ),
                "{bad:?}"
            );
        }
        // Overlapping partitions are gptman's to refuse.
        let overlap = [part(1, 1 << 20, 2 << 20), part(2, 2 << 20, 1 << 20)];
        assert!(matches!(
            write_gpt(&mut disk, 512, &overlap),
            Err(Error::WriteTable(_))
        ));
        assert!(disk.get_ref().iter().all(|b| *b == 0), "nothing written");
    }

    #[test]
    fn the_last_partition_grows_with_its_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 100 << 20);
        write_state_disk(&disk, 512).expect("gpt");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .expect("open");
        assert_eq!(grow_last(&mut f, STATE_NAME).expect("grow"), None);
        f.set_len(200 << 20).expect("grow the disk");
        assert_eq!(grow_last(&mut f, "OTHER").expect("not ours"), None);
        let grown = grow_last(&mut f, STATE_NAME)
            .expect("grow")
            .expect("it grew");
        assert_eq!((grown.start, grown.end()), (1 << 20, 199 << 20));
        assert_eq!(read_gpt(&mut f).expect("read").partitions, [grown]);
    }

    /// The boot code's jumps and message address agree with where the bytes
    /// are, and it ends in `int 18h`; the QEMU tests boot a BIOS through it.
    #[test]
    fn the_protective_mbr_hands_back_to_the_bios() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = image(dir.path(), 100 << 20);
        write_state_disk(&disk, 512).expect("gpt");
        let mut mbr = vec![0u8; 512];
        File::open(&disk)
            .and_then(|mut f| f.read_exact(&mut mbr))
            .expect("read");
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        let entry = &mbr[446..462];
        assert_eq!(entry[4], 0xEE);
        assert_eq!(&entry[8..12], &1u32.to_le_bytes());
        assert_eq!(&entry[12..16], &((100u32 << 11) - 1).to_le_bytes());
        assert!(mbr[462..510].iter().all(|b| *b == 0), "one MBR partition");
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
