//! The installed disk (ARCHITECTURE.md §7): its GPT layout, and writing it —
//! one code path for the build's raw/qcow2 images and for `berth install`.
//!
//! ```text
//!  LBA 0      protective MBR + GRUB's boot.img (written last)
//!  1 MiB      BIOS boot    1 MiB    GRUB core.img (BIOS)
//!  2 MiB      BERTH_EFI    256 MiB  FAT32: EFI/BOOT/BOOTX64.EFI, boot/grub/grub.cfg,
//!                                   grubenv, A/ and B/ (each slot's vmlinuz, initrd)
//!  258 MiB    BERTH_A      512 MiB  raw squashfs root
//!  770 MiB    BERTH_B      512 MiB  raw squashfs root (the other slot)
//!  1282 MiB   BERTH_STATE  the rest ext4, made and grown by PID 1 on first boot
//! ```
//!
//! Nothing here mounts anything or needs a loop device: the partitions are
//! byte ranges of one file or block device ([`Region`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub const MIB: u64 = 1 << 20;
/// GRUB's core.img for BIOS lives here.
pub const BIOS_BOOT_BYTES: u64 = MIB;
/// The EFI system partition: GRUB and each slot's kernel and initrd.
pub const ESP_BYTES: u64 = 256 * MIB;
/// Each slot's squashfs root: about three times today's.
pub const SLOT_BYTES: u64 = 512 * MIB;
/// Where the first partition starts (alignment, and room for the GPT).
pub const FIRST_BYTES: u64 = MIB;
/// The smallest disk Berth installs to: the fixed partitions and room for
/// images and containers on state.
pub const MIN_DISK_BYTES: u64 = 4 << 30;
/// What the GPT at the end of the disk takes (backup entries and header).
const GPT_TAIL_BYTES: u64 = 33 * 512;

/// The partitions, in order (their numbers are index + 1).
pub const NAMES: [&str; 5] = ["BIOS boot", ESP_NAME, "BERTH_A", "BERTH_B", STATE_NAME];
pub const ESP_NAME: &str = "BERTH_EFI";
pub use berth_sys::gpt::STATE_NAME;
/// The ESP's FAT volume label (what GRUB searches for).
pub const ESP_LABEL: &str = "BERTH_EFI";

pub use berth_sys::gpt::{guid_bytes, TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX};

/// One partition: its byte range on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub name: &'static str,
    pub start: u64,
    pub bytes: u64,
    pub type_guid: &'static str,
}

impl Part {
    pub fn end(&self) -> u64 {
        self.start + self.bytes
    }
}

/// The layout of a disk of `disk_bytes` with `sector`-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub sector: u64,
    pub disk_bytes: u64,
}

impl Layout {
    pub fn new(disk_bytes: u64, sector: u64) -> Result<Layout> {
        if disk_bytes < MIN_DISK_BYTES {
            return Err(Error::Disk(format!(
                "the disk is {:.1} GiB; Berth needs at least {} GiB",
                disk_bytes as f64 / (1u64 << 30) as f64,
                MIN_DISK_BYTES >> 30
            )));
        }
        if sector != 512 && sector != 4096 {
            return Err(Error::Disk(format!(
                "{sector}-byte sectors are not supported"
            )));
        }
        Ok(Layout { sector, disk_bytes })
    }

    /// The five partitions; state takes the rest, up to the backup GPT.
    pub fn parts(&self) -> [Part; 5] {
        let sizes = [BIOS_BOOT_BYTES, ESP_BYTES, SLOT_BYTES, SLOT_BYTES];
        let types = [TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX, TYPE_LINUX, TYPE_LINUX];
        let mut start = FIRST_BYTES;
        let mut parts = [Part {
            number: 0,
            name: "",
            start: 0,
            bytes: 0,
            type_guid: "",
        }; 5];
        for (i, part) in parts.iter_mut().enumerate() {
            let bytes = sizes.get(i).copied().unwrap_or_else(|| {
                let tail = GPT_TAIL_BYTES.max(33 * self.sector);
                (self.disk_bytes.saturating_sub(tail) - start) / MIB * MIB
            });
            *part = Part {
                number: i as u32 + 1,
                name: NAMES[i],
                start,
                bytes,
                type_guid: types[i],
            };
            start += bytes;
        }
        parts
    }

    pub fn part(&self, name: &str) -> Option<Part> {
        self.parts().into_iter().find(|p| p.name == name)
    }

    pub fn esp(&self) -> Part {
        self.parts()[1]
    }

    /// The slot partition `BERTH_<slot>`.
    pub fn slot(&self, slot: char) -> Part {
        if slot == 'B' {
            self.parts()[3]
        } else {
            self.parts()[2]
        }
    }

    pub fn bios_boot(&self) -> Part {
        self.parts()[0]
    }
}

/// Writes the GPT of `layout` (primary and backup) and a protective MBR that
/// keeps bytes 0..440 (the boot code) as they are.
pub fn write_gpt<D: Read + Write + Seek>(disk: &mut D, layout: &Layout) -> Result<()> {
    let partitions: Vec<berth_sys::gpt::Partition> = layout
        .parts()
        .iter()
        .map(|part| berth_sys::gpt::Partition {
            number: part.number,
            name: part.name.to_string(),
            type_guid: guid_bytes(part.type_guid),
            start: part.start,
            bytes: part.bytes,
        })
        .collect();
    Ok(berth_sys::gpt::write_gpt(disk, layout.sector, &partitions)?)
}

/// A byte range of a file or device, as a file of its own (a partition).
#[derive(Debug)]
pub struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Region<'a> {
    pub fn new(file: &'a File, part: &Part) -> Region<'a> {
        Region {
            file,
            start: part.start,
            len: part.bytes,
            pos: 0,
        }
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let mut f = self.file;
        f.seek(SeekFrom::Start(self.start + self.pos))?;
        let read = f.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the end of the partition",
            ));
        }
        let mut f = self.file;
        f.seek(SeekFrom::Start(self.start + self.pos))?;
        let written = f.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut f = self.file;
        f.flush()
    }
}

/// Where a seek `to` lands in a region of `len` bytes, from `pos`.
fn seek_within(len: u64, pos: u64, to: SeekFrom) -> io::Result<u64> {
    match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_within(self.len, self.pos, to)?;
        Ok(self.pos)
    }
}

/// A partition read and written through a cache of 64 KiB blocks, for
/// fatfs: it reads and writes a FAT entry or a sector at a time, and
/// writing a 10 MiB kernel and initrd took half a million system calls,
/// four seconds of an upgrade under QEMU's TCG. Writes stay in memory until
/// [`CachedRegion::flush`] (or more than [`CachedRegion::LIMIT`] bytes are
/// cached). fatfs flushes it with each file's `flush`, so files still reach
/// the disk in the order they are written; `FileSystem::unmount` does not,
/// so a caller flushes after it.
#[derive(Debug)]
pub struct CachedRegion<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
    blocks: std::collections::BTreeMap<u64, CachedBlock>,
}

#[derive(Debug)]
struct CachedBlock {
    data: Vec<u8>,
    dirty: bool,
}

impl<'a> CachedRegion<'a> {
    const BLOCK: u64 = 64 * 1024;
    /// Cached bytes past which everything is written out and dropped.
    pub const LIMIT: u64 = 16 * MIB;

    pub fn new(file: &'a File, part: &Part) -> CachedRegion<'a> {
        CachedRegion {
            file,
            start: part.start,
            len: part.bytes,
            pos: 0,
            blocks: std::collections::BTreeMap::new(),
        }
    }

    /// The block holding `pos`, read from the disk unless `whole` says the
    /// caller is about to overwrite all of it.
    fn block(&mut self, index: u64, whole: bool) -> io::Result<&mut CachedBlock> {
        use std::os::unix::fs::FileExt;
        if !self.blocks.contains_key(&index)
            && self.blocks.len() as u64 * Self::BLOCK >= Self::LIMIT
        {
            self.flush()?;
            self.blocks.clear();
        }
        let at = index * Self::BLOCK;
        let size = Self::BLOCK.min(self.len - at) as usize;
        let file = self.file;
        let start = self.start;
        match self.blocks.entry(index) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut data = vec![0u8; size];
                if !whole {
                    file.read_exact_at(&mut data, start + at)?;
                }
                Ok(e.insert(CachedBlock { data, dirty: false }))
            }
        }
    }
}

impl Read for CachedRegion<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (index, offset) = (self.pos / Self::BLOCK, (self.pos % Self::BLOCK) as usize);
        let block = self.block(index, false)?;
        let n = buf.len().min(block.data.len() - offset);
        buf[..n].copy_from_slice(&block.data[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for CachedRegion<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the end of the partition",
            ));
        }
        let (index, offset) = (self.pos / Self::BLOCK, (self.pos % Self::BLOCK) as usize);
        let size = Self::BLOCK.min(self.len - index * Self::BLOCK) as usize;
        let n = buf.len().min(size - offset);
        let block = self.block(index, offset == 0 && n == size)?;
        block.data[offset..offset + n].copy_from_slice(&buf[..n]);
        block.dirty = true;
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes every changed block, in the order of the disk.
    fn flush(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        for (index, block) in self.blocks.iter_mut().filter(|(_, b)| b.dirty) {
            self.file
                .write_all_at(&block.data, self.start + index * Self::BLOCK)?;
            block.dirty = false;
        }
        Ok(())
    }
}

impl Seek for CachedRegion<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_within(self.len, self.pos, to)?;
        Ok(self.pos)
    }
}

/// What goes on the disk.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The OS's version, for the boot menu ([`crate::esp::slot_version_file`]).
    pub version: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    /// GRUB's images ([`crate::bootloader`]).
    pub boot: crate::bootloader::Images,
    /// The installed system's config sources (`user-data.yml`, `local.yml`:
    /// names as in `/var/lib/berth/config`), put on the ESP for PID 1 to take
    /// onto the state partition when it makes it.
    pub config: Vec<(String, Vec<u8>)>,
}

/// Reports progress of a long write: (what, bytes done, bytes in all).
pub trait Progress {
    fn step(&self, what: &str);
    fn bytes(&self, what: &str, done: u64, total: u64);
}

/// A progress reporter that says nothing.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn bytes(&self, _: &str, _: u64, _: u64) {}
}

/// What was written, for the caller to report.
#[derive(Debug, Clone)]
pub struct Written {
    pub layout: Layout,
    /// SHA-256 of the squashfs as read back from slot A.
    pub rootfs_sha256: String,
    pub rootfs_bytes: u64,
}

/// Writes the whole layout onto `disk` (a regular file already sized, or a
/// block device), slot A holding `payload`. The order makes a write cut
/// short unbootable rather than half-booting: the old signatures are wiped
/// first, the boot code (MBR boot.img, BOOTX64.EFI and grub.cfg) comes last.
pub fn write(
    disk: &File,
    disk_bytes: u64,
    payload: &Payload,
    progress: &dyn Progress,
) -> Result<Written> {
    let layout = Layout::new(disk_bytes, 512)?;
    let io_err = |what: &'static str| move |e: io::Error| Error::Disk(format!("{what}: {e}"));
    progress.step("wiping old signatures");
    wipe(disk, 0, 2 * MIB).map_err(io_err("wiping the start of the disk"))?;
    wipe(disk, disk_bytes.saturating_sub(MIB), MIB)
        .map_err(io_err("wiping the end of the disk"))?;
    // The first MiB of state too: PID 1 formats it only when it is blank.
    let state = layout.parts()[4];
    wipe(disk, state.start, MIB).map_err(io_err("wiping the state partition"))?;

    let slot = layout.slot('A');
    let copied = copy_into(disk, &payload.rootfs, &slot, "rootfs → BERTH_A", progress)?;
    progress.step("reading BERTH_A back");
    // From the disk, not from the page cache the write left behind.
    let back = read_back(disk, slot.start, copied.bytes).map_err(io_err("reading BERTH_A back"))?;
    if back != copied.crc32 {
        return Err(Error::Disk(format!(
            "BERTH_A reads back as CRC-32 {back:08x}, {:08x} was written: the disk did not keep what was written",
            copied.crc32
        )));
    }

    progress.step("writing the partition table");
    let mut whole = disk;
    write_gpt(&mut whole, &layout)?;
    progress.step("writing the EFI system partition");
    let esp = layout.esp();
    crate::esp::write(disk, &esp, payload)?;
    progress.step("writing the boot loader");
    crate::bootloader::install_bios(disk, &layout, &payload.boot)?;
    disk.sync_all().map_err(io_err("syncing the disk"))?;
    Ok(Written {
        layout,
        rootfs_sha256: copied.sha256,
        rootfs_bytes: copied.bytes,
    })
}

fn wipe(disk: &File, start: u64, len: u64) -> io::Result<()> {
    let mut f = disk;
    f.seek(SeekFrom::Start(start))?;
    let zeros = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Asks the kernel to forget its cached copy of a range, so that reading it
/// reads the device (best effort: a file on a filesystem may keep it).
fn drop_cache(disk: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain advice on an open descriptor; no memory is passed.
    unsafe {
        libc::posix_fadvise(disk.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED);
    }
}

/// What [`copy_stream_into`] wrote: its size, its SHA-256 (the rootfs's
/// identity, recorded and shown) and its CRC-32 (what [`read_back`] checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub sha256: String,
    pub crc32: u32,
}

/// Copies `from` into `part`; refuses what does not fit.
fn copy_into(
    disk: &File,
    from: &Path,
    part: &Part,
    what: &str,
    progress: &dyn Progress,
) -> Result<Copied> {
    let mut src = File::open(from).map_err(crate::io_err(from))?;
    let total = src.metadata().map_err(crate::io_err(from))?.len();
    copy_stream_into(disk, &mut src, total, part, what, progress)
        .map_err(|e| Error::Disk(format!("{}: {e}", from.display())))
}

/// Copies `total` bytes of `src` into `part`; refuses what does not fit
/// before writing anything.
pub fn copy_stream_into(
    disk: &File,
    src: &mut dyn Read,
    total: u64,
    part: &Part,
    what: &str,
    progress: &dyn Progress,
) -> Result<Copied> {
    if total > part.bytes {
        return Err(Error::Disk(format!(
            "{what}: {} MiB do not fit {} ({} MiB)",
            total.div_ceil(MIB),
            part.name,
            part.bytes / MIB
        )));
    }
    let mut dst = disk;
    dst.seek(SeekFrom::Start(part.start))
        .map_err(|e| Error::Disk(format!("{what}: {e}")))?;
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut done = 0u64;
    let mut hasher = berth_images::digest::Sha256::new();
    let mut crc = crc32fast::Hasher::new();
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| Error::Disk(format!("{what}: reading: {e}")))?;
        if n == 0 {
            break;
        }
        if done + n as u64 > part.bytes {
            return Err(Error::Disk(format!(
                "{what}: more than {} MiB, the size of {}",
                part.bytes / MIB,
                part.name
            )));
        }
        hasher.update(&buf[..n]);
        crc.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| Error::Disk(format!("{what}: {e}")))?;
        done += n as u64;
        progress.bytes(what, done, total);
    }
    if done != total {
        return Err(Error::Disk(format!(
            "{what}: {done} bytes arrived, {total} were announced"
        )));
    }
    Ok(Copied {
        bytes: done,
        sha256: hex(&hasher.finish()),
        crc32: crc.finalize(),
    })
}

/// Syncs what was written at `start..start+len`, drops it from the page
/// cache and returns the CRC-32 of what the device holds there.
///
/// A CRC, not SHA-256 again: this compares the device with bytes hashed on
/// their way to it a moment before, which a CRC-32 does (a corrupted block
/// passes one time in four billion), while SHA-256 on a small or emulated
/// CPU is slower than the disk (154 MiB read back in 15 s under QEMU's TCG),
/// on every install and upgrade.
pub fn read_back(disk: &File, start: u64, len: u64) -> io::Result<u32> {
    disk.sync_data()?;
    drop_cache(disk, start, len);
    let mut f = disk;
    f.seek(SeekFrom::Start(start))?;
    let mut crc = crc32fast::Hasher::new();
    each_chunk(&mut f.take(len), |chunk| crc.update(chunk))?;
    Ok(crc.finalize())
}

/// Reads `reader` to its end a MiB at a time, handing each chunk to `f`.
fn each_chunk(reader: &mut dyn Read, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_of_file(path: &Path) -> io::Result<String> {
    sha256_of(&mut File::open(path)?)
}

fn sha256_of(reader: &mut dyn Read) -> io::Result<String> {
    let mut hasher = berth_images::digest::Sha256::new();
    each_chunk(reader, |chunk| hasher.update(chunk))?;
    Ok(hex(&hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_sys::gpt::{grow_last, read_gpt};

    /// A file of `size` bytes of `fill` in `dir`, and a partition of it.
    fn scratch(dir: &Path, size: usize, fill: u8, start: u64, bytes: u64) -> (PathBuf, File, Part) {
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![fill; size]).expect("disk");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let part = Part {
            number: 1,
            name: "x",
            start,
            bytes,
            type_guid: TYPE_LINUX,
        };
        (path, file, part)
    }

    #[test]
    fn a_cached_region_writes_nothing_until_flushed_and_reads_its_own_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Not a whole number of blocks, and not at a block boundary.
        let (path, file, part) = scratch(dir.path(), 512 * 1024, 0xee, 4096, 200 * 1024 + 100);
        let pattern: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = CachedRegion::new(&file, &part);
        r.seek(SeekFrom::Start(1000)).expect("seek");
        r.write_all(&pattern).expect("write across blocks");
        assert!(
            std::fs::read(&path).expect("read")[4096..]
                .iter()
                .all(|b| *b == 0xee),
            "nothing written before the flush"
        );
        r.seek(SeekFrom::Start(0)).expect("seek");
        let mut back = vec![0u8; 1000 + pattern.len() + 10];
        r.read_exact(&mut back).expect("read");
        assert!(
            back[..1000].iter().all(|b| *b == 0xee),
            "the disk's own bytes"
        );
        assert_eq!(&back[1000..1000 + pattern.len()], &pattern[..]);
        // The partition's end: reads stop, writes past it fail.
        r.seek(SeekFrom::End(-10)).expect("seek");
        r.write_all(&[1u8; 10]).expect("the last bytes");
        assert!(r.write_all(&[1u8]).is_err(), "past the end");
        assert_eq!(r.read(&mut [0u8; 8]).expect("read at the end"), 0);
        r.flush().expect("flush");
        let data = std::fs::read(&path).expect("read");
        assert_eq!(
            &data[4096 + 1000..4096 + 1000 + pattern.len()],
            &pattern[..]
        );
        let end = 4096 + part.bytes as usize;
        assert_eq!(&data[end - 10..end], &[1u8; 10]);
        assert!(data[..4096 + 1000].iter().all(|b| *b == 0xee));
        assert!(
            data[end..].iter().all(|b| *b == 0xee),
            "nothing past the partition"
        );
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid_bytes(TYPE_LINUX),
            [
                0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
                0x7D, 0xE4
            ]
        );
    }

    #[test]
    fn the_layout_is_aligned_and_state_takes_the_rest() {
        let layout = Layout::new(MIN_DISK_BYTES, 512).expect("layout");
        let parts = layout.parts();
        assert_eq!(parts[0].start, MIB);
        for pair in parts.windows(2) {
            assert_eq!(pair[0].end(), pair[1].start);
        }
        for p in parts {
            assert_eq!(p.start % MIB, 0, "{p:?}");
            assert_eq!(p.bytes % MIB, 0, "{p:?}");
        }
        assert_eq!(parts[4].name, STATE_NAME);
        assert!(parts[4].end() <= MIN_DISK_BYTES - 33 * 512);
        assert!(parts[4].bytes > 2 << 30);
        assert!(Layout::new(MIN_DISK_BYTES - 1, 512).is_err());
    }

    #[test]
    fn the_partition_table_reads_back_and_grows_with_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.set_len(MIN_DISK_BYTES).expect("size");
        let layout = Layout::new(MIN_DISK_BYTES, 512).expect("layout");
        let mut f = &file;
        write_gpt(&mut f, &layout).expect("gpt");
        let gpt = read_gpt(&mut f).expect("read");
        let names: Vec<&str> = gpt.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, NAMES);
        for (read, part) in gpt.partitions.iter().zip(layout.parts()) {
            assert_eq!(read.number, part.number);
            assert_eq!(read.type_guid, guid_bytes(part.type_guid));
            assert_eq!((read.start, read.bytes), (part.start, part.bytes));
        }
        // Nothing to grow on the disk it was made for.
        assert!(grow_last(&mut f, STATE_NAME).expect("grow").is_none());
        file.set_len(MIN_DISK_BYTES + (2 << 30))
            .expect("grow the file");
        let grown = grow_last(&mut f, STATE_NAME)
            .expect("grow")
            .expect("it grew");
        assert_eq!(grown.start, layout.parts()[4].start);
        assert!(grown.bytes >= layout.parts()[4].bytes + (2 << 30) - MIB);
        let again = read_gpt(&mut f).expect("read again");
        assert_eq!(again.partitions[4], grown);
        // The slots are untouched.
        assert_eq!(again.partitions[2].start, layout.slot('A').start);
    }

    #[test]
    fn a_region_is_a_bounded_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, file, part) = scratch(dir.path(), 4096, 0, 1024, 1024);
        let mut r = Region::new(&file, &part);
        r.write_all(b"hello").expect("write");
        assert!(r.write_all(&[1u8; 2000]).is_err());
        assert_eq!(r.seek(SeekFrom::End(0)).expect("seek"), 1024);
        let data = std::fs::read(&path).expect("read");
        assert_eq!(&data[1024..1029], b"hello");
        assert!(data[..1024].iter().all(|b| *b == 0));
        assert!(data[2048..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_whole_disk_is_written_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("vmlinuz"), b"kernel").expect("vmlinuz");
        std::fs::write(p("initrd"), b"initrd").expect("initrd");
        std::fs::write(p("rootfs"), vec![0x5au8; 3 * MIB as usize + 17]).expect("rootfs");
        let boot = crate::bootloader::Images::in_dir(dir.path());
        std::fs::write(&boot.boot_img, vec![0xEBu8; 512]).expect("boot.img");
        std::fs::write(&boot.core_img, vec![7u8; 8192]).expect("core.img");
        std::fs::write(&boot.efi, b"MZ efi").expect("efi");
        let payload = Payload {
            version: "1.2.3".into(),
            vmlinuz: p("vmlinuz"),
            initrd: p("initrd"),
            rootfs: p("rootfs"),
            boot,
            config: vec![(
                "user-data.yml".into(),
                b"#cloud-config\nhostname: x\n".to_vec(),
            )],
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p("disk"))
            .expect("disk");
        file.set_len(MIN_DISK_BYTES).expect("size");
        let written = write(&file, MIN_DISK_BYTES, &payload, &Quiet).expect("write");
        assert_eq!(written.rootfs_bytes, 3 * MIB + 17);
        assert_eq!(
            written.rootfs_sha256,
            sha256_of_file(&p("rootfs")).expect("sha")
        );
        let esp = written.layout.esp();
        let read = |path: &str| crate::esp::read_file(&file, &esp, path).expect(path);
        assert_eq!(read("A/vmlinuz"), b"kernel");
        assert_eq!(
            String::from_utf8(read("A/version.cfg")).expect("utf-8"),
            format!(
                "set berth_version=\"1.2.3\"\nset berth_os_args=\"{}\"\n",
                crate::grub::os_args()
            )
        );
        assert_eq!(read("A/initrd"), b"initrd");
        assert_eq!(read("EFI/BOOT/BOOTX64.EFI"), b"MZ efi");
        assert_eq!(
            read(&format!("{}/user-data.yml", crate::esp::CONFIG_DIR)),
            b"#cloud-config\nhostname: x\n"
        );
        assert!(String::from_utf8(read("boot/grub/grub.cfg"))
            .expect("utf-8")
            .contains("berth.slot=$berth_slot"));
        assert_eq!(read("boot/grub/grubenv").len(), 1024);
        let mut f = &file;
        let gpt = read_gpt(&mut f).expect("gpt");
        assert_eq!(gpt.partitions[1].name, ESP_NAME);
        // A disk too small is refused before anything is written.
        assert!(write(&file, MIN_DISK_BYTES - MIB, &payload, &Quiet).is_err());
    }
}
