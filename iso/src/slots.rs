//! The A/B slots of an installed disk and boot counting (ARCHITECTURE.md §7).
//!
//! GRUB reads `boot/grub/grubenv` on the ESP: `berth_default` is the
//! committed slot; `berth_try`, when set, is a slot to boot *once*. GRUB
//! clears `berth_try` and saves the block before it loads the kernel
//! ([`crate::bootloader::disk_grub_cfg`]), so whatever stops a trial boot — a
//! kernel panic, a hang the watchdog resets, a power cut — the next boot is
//! the committed slot again. Userspace writes the block in place through the
//! FAT file (same clusters, the changed bytes inside its first sector),
//! never by replacing the file: GRUB writes it through its block list.
//!
//! What happened to each slot is recorded on the state partition
//! ([`RECORDS`]): the upgrade writes and arms, PID 1 commits or fails the
//! trial, and on a later boot of the old slot turns a trial that never
//! reported into a failure. A version that failed is not tried again unless
//! forced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::disk::{Part, Region, ESP_NAME, MIB, TYPE_ESP, TYPE_LINUX};
use crate::{Error, Result};

/// The slot records, relative to the root the state partition is under.
pub const RECORDS: &str = "var/lib/berth/os/slots.json";
/// The grubenv path on the ESP.
pub const GRUBENV: &str = "boot/grub/grubenv";
/// The installed disk's GRUB config, on the ESP: written once, by the installer.
pub const GRUB_CFG: &str = "boot/grub/grub.cfg";
/// The kernel argument GRUB adds to a trial boot.
pub const TRIAL_ARG: &str = "berth.trial=1";
/// What GRUB's environment block holds at most: its first sector, so that
/// a write of it is one sector and a cut write leaves the old or the new.
const ENV_CONTENT_MAX: usize = 512;

/// The disk the running system was installed on, and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub disk: PathBuf,
    pub esp: Part,
    pub a: Part,
    pub b: Part,
}

impl Installed {
    /// Finds the disk holding `BERTH_EFI` and both slots, from sysfs
    /// (`sys_block`, e.g. `/sys/class/block`) and device nodes under `dev`.
    pub fn find(sys_block: &Path, dev: &Path) -> Result<Option<Installed>> {
        let Ok(entries) = std::fs::read_dir(sys_block) else {
            return Ok(None);
        };
        let mut disks = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let uevent = std::fs::read_to_string(path.join("uevent")).unwrap_or_default();
            if !uevent.lines().any(|l| l == format!("PARTNAME={ESP_NAME}")) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if let Some(disk) = real.parent().and_then(Path::file_name) {
                disks.push(dev.join(disk));
            }
        }
        disks.sort();
        for disk in disks {
            match Installed::open(&disk) {
                Ok(found) => return Ok(Some(found)),
                Err(e) => log::debug!("{}: {e}", disk.display()),
            }
        }
        Ok(None)
    }

    /// Reads the partitions of `disk` from its GPT.
    pub fn open(disk: &Path) -> Result<Installed> {
        let mut file = File::open(disk).map_err(crate::io_err(disk))?;
        let table = berth_sys::gpt::read_gpt(&mut file)?;
        let find = |name: &'static str, type_guid: &'static str| -> Result<Part> {
            table
                .find(name)
                .map(|p| Part {
                    number: p.number,
                    name,
                    start: p.start,
                    bytes: p.bytes,
                    type_guid,
                })
                .ok_or_else(|| Error::Disk(format!("{} has no {name} partition", disk.display())))
        };
        Ok(Installed {
            disk: disk.to_path_buf(),
            esp: find(ESP_NAME, TYPE_ESP)?,
            a: find("BERTH_A", TYPE_LINUX)?,
            b: find("BERTH_B", TYPE_LINUX)?,
        })
    }

    pub fn slot(&self, slot: char) -> &Part {
        if slot == 'B' {
            &self.b
        } else {
            &self.a
        }
    }

    fn open_rw(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(crate::io_err(&self.disk))
    }

    /// GRUB's variables as they are on the ESP.
    pub fn read_env(&self) -> Result<BTreeMap<String, String>> {
        let file = File::open(&self.disk).map_err(crate::io_err(&self.disk))?;
        let bytes = crate::esp::read_file(&file, &self.esp, GRUBENV)?;
        Ok(parse_env(&bytes))
    }

    /// Whether the disk's grub.cfg reads the grubenv variable `var`: one
    /// written by an installer from before `var` existed never does, and an
    /// upgrade does not rewrite it.
    pub fn grub_cfg_reads(&self, var: &str) -> Result<bool> {
        let file = File::open(&self.disk).map_err(crate::io_err(&self.disk))?;
        let cfg = crate::esp::read_file(&file, &self.esp, GRUB_CFG)?;
        Ok(String::from_utf8_lossy(&cfg).contains(var))
    }

    /// Rewrites grubenv in place with `vars`.
    pub fn write_env(&self, vars: &BTreeMap<String, String>) -> Result<()> {
        let block = render_env(vars)?;
        let file = self.open_rw()?;
        let err = |e: io::Error| Error::Disk(format!("ESP: rewriting {GRUBENV}: {e}"));
        {
            let fs = fatfs::FileSystem::new(Region::new(&file, &self.esp), fatfs::FsOptions::new())
                .map_err(err)?;
            let mut f = fs.root_dir().open_file(GRUBENV).map_err(err)?;
            let len = f.seek(SeekFrom::End(0)).map_err(err)?;
            if len != block.len() as u64 {
                return Err(Error::Disk(format!(
                    "ESP: {GRUBENV} is {len} bytes, not {}: GRUB could not save to it",
                    block.len()
                )));
            }
            f.seek(SeekFrom::Start(0)).map_err(err)?;
            f.write_all(&block).map_err(err)?;
            f.flush().map_err(err)?;
            drop(f);
            fs.unmount().map_err(err)?;
        }
        file.sync_all().map_err(err)?;
        let back = self.read_env()?;
        if &back != vars {
            return Err(Error::Disk(format!(
                "ESP: {GRUBENV} reads back as {back:?}, not {vars:?}"
            )));
        }
        Ok(())
    }

    /// Streams a root filesystem of `size` bytes into `slot`, then reads
    /// it back from the device; returns its SHA-256.
    pub fn write_rootfs(
        &self,
        slot: char,
        rootfs: &mut dyn Read,
        size: u64,
        progress: &dyn crate::disk::Progress,
    ) -> Result<String> {
        let part = *self.slot(slot);
        let file = self.open_rw()?;
        let what = format!("rootfs → {}", part.name);
        let copied = crate::disk::copy_stream_into(&file, rootfs, size, &part, &what, progress)?;
        progress.step(&format!("reading {} back", part.name));
        let back = crate::disk::read_back(&file, part.start, copied.bytes)
            .map_err(|e| Error::Disk(format!("reading {} back: {e}", part.name)))?;
        if back != copied.crc32 {
            return Err(Error::Disk(format!(
                "{} reads back as CRC-32 {back:08x}, {:08x} was written: the disk did not keep what was written",
                part.name, copied.crc32
            )));
        }
        Ok(copied.sha256)
    }

    /// Writes a slot's kernel, initrd, version and kernel arguments (for the
    /// menu's titles and the slot's command line,
    /// [`crate::esp::slot_version_file`]) on the ESP and reads them back.
    pub fn write_boot_files(
        &self,
        slot: char,
        kernel: &[u8],
        initrd: &[u8],
        version: &str,
        os_args: Option<&str>,
    ) -> Result<()> {
        let version = crate::esp::version_cfg(version, os_args)?;
        let file = self.open_rw()?;
        let (kernel_path, initrd_path) = crate::esp::slot_files(slot);
        let version_path = crate::esp::slot_version_file(slot);
        {
            let err = |what: String| move |e: io::Error| Error::Disk(format!("ESP: {what}: {e}"));
            let mut volume = crate::disk::CachedRegion::new(&file, &self.esp);
            let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
                .map_err(err("opening".into()))?;
            let root = fs.root_dir();
            if root.open_dir(&slot.to_string()).is_err() {
                root.create_dir(&slot.to_string())
                    .map_err(err(format!("creating {slot}/")))?;
            }
            for (path, data) in [
                (&kernel_path, kernel),
                (&initrd_path, initrd),
                (&version_path, version.as_slice()),
            ] {
                let mut f = root
                    .create_file(path)
                    .map_err(err(format!("creating {path}")))?;
                f.truncate().map_err(err(format!("truncating {path}")))?;
                f.write_all(data).map_err(err(format!("writing {path}")))?;
                f.flush().map_err(err(format!("writing {path}")))?;
            }
            drop(root);
            fs.unmount().map_err(err("closing".into()))?;
            volume.flush().map_err(err("writing".into()))?;
        }
        file.sync_all()
            .map_err(|e| Error::Disk(format!("ESP: syncing: {e}")))?;
        for (path, data) in [
            (&kernel_path, kernel),
            (&initrd_path, initrd),
            (&version_path, version.as_slice()),
        ] {
            if crate::esp::read_file(&file, &self.esp, path)? != data {
                return Err(Error::Disk(format!(
                    "ESP: {path} does not read back as written"
                )));
            }
        }
        Ok(())
    }
}

/// `VERSION_ID` of the OS whose root is `root` (its `etc/os-release`, else
/// `usr/lib/os-release`): the version a live system installs and records.
pub fn os_version(root: &Path) -> Option<String> {
    let release = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .ok()?;
    os_release_value(&release, "VERSION_ID")
}

/// One `KEY=value` of an os-release text, unquoted.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

/// The other slot.
pub fn other(slot: char) -> char {
    if slot == 'A' {
        'B'
    } else {
        'A'
    }
}

/// `A` or `B` from a `berth.slot=` value.
pub fn parse_slot(text: &str) -> Option<char> {
    match text.trim().to_ascii_uppercase().as_str() {
        "A" => Some('A'),
        "B" => Some('B'),
        _ => None,
    }
}

/// The variables of a GRUB environment block. Entries [`render_env`] would
/// refuse are left out, so whatever was read can be written back.
pub fn parse_env(bytes: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, v)| env_entry_is_plain(k, v))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `key=value` means the same to GRUB (which unescapes `\\`) and to
/// [`parse_env`], and cannot add or hide a line: no line breaks, no
/// backslash, a key without `=` that is not a comment.
fn env_entry_is_plain(key: &str, value: &str) -> bool {
    const BREAKS: [char; 3] = ['\n', '\r', '\\'];
    !key.is_empty()
        && !key.starts_with('#')
        && !key.contains('=')
        && !key.contains(BREAKS)
        && !value.contains(BREAKS)
}

/// The 1024-byte block for `vars`, refused when its content would not fit
/// one sector.
pub fn render_env(vars: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    if let Some((k, v)) = vars.iter().find(|(k, v)| !env_entry_is_plain(k, v)) {
        return Err(Error::Disk(format!(
            "the GRUB environment entry {k:?}={v:?} would not read back as written"
        )));
    }
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let block = crate::bootloader::grubenv(&pairs);
    // Measured before the block is padded (or cut) to 1024 bytes: an entry
    // longer than the block would otherwise be cut silently (found by the
    // `grubenv` fuzz target).
    let content = "# GRUB Environment Block\n".len()
        + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if content > ENV_CONTENT_MAX || block.len() != 1024 {
        return Err(Error::Disk(format!(
            "the GRUB environment would be {content} bytes; at most {ENV_CONTENT_MAX} are written in one sector"
        )));
    }
    Ok(block)
}

/// What became of the image in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Booted and healthy here; a boot may fall back to it.
    Committed,
    /// Being written: not bootable until it is written and read back.
    Writing,
    /// Written and read back, not (yet) armed.
    Written,
    /// The next boot tries it once.
    Armed,
    /// Its trial boot started and has not committed.
    Trying,
    /// Its trial boot did not come up healthy; see the reason.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Committed => "committed",
            Status::Writing => "writing",
            Status::Written => "written",
            Status::Armed => "armed",
            Status::Trying => "trying",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the epoch of the last change.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_sha256: Option<String>,
}

/// Every slot's record, and the versions that failed here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    #[serde(default)]
    pub slots: BTreeMap<char, SlotRecord>,
    /// version → why it failed.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
    /// The kernel arguments that failed their trial last
    /// ([`crate::kernel_args`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args_failed: Option<crate::kernel_args::Failed>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Records {
    /// The records under `root`; none yet is empty, an unreadable file an error.
    pub fn load(root: &Path) -> Result<Records> {
        let path = root.join(RECORDS);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Disk(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(crate::io_err(&path)(e)),
        }
    }

    /// Writes them with the one atomic writer (synced, 0600 in 0700).
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = root.join(RECORDS);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Disk(format!("{}: {e}", path.display())))?;
        berth_configs::sources::write_atomic(&path, &bytes).map_err(|e| Error::Disk(e.to_string()))
    }

    pub fn set(&mut self, slot: char, version: &str, status: Status, reason: Option<String>) {
        let entry = self.slots.entry(slot).or_insert_with(|| SlotRecord {
            version: version.to_string(),
            status,
            reason: None,
            at: 0,
            image: None,
            rootfs_sha256: None,
        });
        entry.version = version.to_string();
        entry.status = status;
        entry.reason = reason.clone();
        entry.at = now();
        if status == Status::Failed {
            self.failed.insert(
                version.to_string(),
                reason.unwrap_or_else(|| "failed".into()),
            );
        }
        if status == Status::Committed {
            self.failed.remove(version);
        }
    }

    /// Brings the records up to date with a boot of `running` (version
    /// `version`, a trial or not): a first boot records the installed
    /// slot, a boot of the committed slot turns the other slot's trial that
    /// never reported into a failure. Returns what changed, for the log.
    pub fn on_boot(&mut self, running: char, version: &str, trial: bool) -> Vec<String> {
        let mut notes = Vec::new();
        let other = other(running);
        if trial {
            self.set(running, version, Status::Trying, None);
            notes.push(format!("trial boot of {version} in slot {running}"));
            return notes;
        }
        let mine = self.slots.get(&running).cloned();
        match mine {
            Some(r) if r.status == Status::Committed && r.version == version => {}
            Some(r) if matches!(r.status, Status::Trying | Status::Armed) => {
                // Not a trial, yet GRUB chose this slot: its commit reached
                // grubenv and a power cut came before the records did.
                self.set(running, version, Status::Committed, None);
                notes.push(format!("{version} in slot {running} was committed"));
            }
            _ => {
                self.set(running, version, Status::Committed, None);
            }
        }
        if let Some(r) = self.slots.get(&other).cloned() {
            if matches!(r.status, Status::Armed | Status::Trying) {
                let reason = if r.status == Status::Armed {
                    "its trial boot never got as far as its services (the kernel panicked, or it hung and the watchdog reset it)"
                } else {
                    "its trial boot did not commit (it crashed, hung until the watchdog reset it, or lost power)"
                };
                self.set(other, &r.version, Status::Failed, Some(reason.into()));
                notes.push(format!(
                    "{} in slot {other} failed: {reason}; back on {version}",
                    r.version
                ));
            }
        }
        notes
    }
}

/// `berth.slot=` and whether this is a trial boot, from a kernel command line.
pub fn from_cmdline(cmdline: &str) -> Option<(char, bool)> {
    let mut slot = None;
    let mut trial = false;
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("berth.slot=") {
            slot = parse_slot(v);
        }
        if word == TRIAL_ARG {
            trial = true;
        }
    }
    slot.map(|s| (s, trial))
}

/// Rounds up to whole MiB, for messages.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_version_is_version_id_of_etc_else_usr_lib() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(os_version(root.path()), None);
        std::fs::create_dir_all(root.path().join("usr/lib")).expect("mkdir");
        std::fs::write(
            root.path().join("usr/lib/os-release"),
            "NAME=Berth\nVERSION_ID=\"0.2.0\"\n",
        )
        .expect("write");
        assert_eq!(os_version(root.path()).as_deref(), Some("0.2.0"));
        std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
        std::fs::write(root.path().join("etc/os-release"), "VERSION_ID=0.3.0\n").expect("write");
        assert_eq!(os_version(root.path()).as_deref(), Some("0.3.0"));
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_round_trips_and_stays_in_one_sector() {
        let vars = env(&[("berth_default", "A"), ("berth_try", "B")]);
        let block = render_env(&vars).expect("render");
        assert_eq!(block.len(), 1024);
        assert_eq!(parse_env(&block), vars);
        let huge = env(&[("x", &"y".repeat(600))]);
        assert!(render_env(&huge).is_err());
        // Longer than the whole block: refused, not cut to fit.
        let longer = env(&[("x", &"y".repeat(1100))]);
        assert!(render_env(&longer).is_err());
    }

    #[test]
    fn entries_that_would_not_read_back_are_refused_and_skipped() {
        for (k, v) in [
            ("berth_try", "B\nberth_default=B"),
            ("berth_try", "B\r"),
            ("a\\b", "1"),
            ("#c", "1"),
            ("", "1"),
        ] {
            assert!(render_env(&env(&[(k, v)])).is_err(), "{k:?}={v:?}");
        }
        let block = b"# GRUB Environment Block\nberth_default=A\n=x\nodd=a\\b\nk=v\rw\n####";
        assert_eq!(parse_env(block), env(&[("berth_default", "A")]));
    }

    #[test]
    fn a_first_boot_commits_what_was_installed() {
        let mut r = Records::default();
        r.on_boot('A', "1.0", false);
        assert_eq!(r.slots[&'A'].status, Status::Committed);
        assert_eq!(r.slots[&'A'].version, "1.0");
    }

    #[test]
    fn a_trial_that_never_reported_fails_on_the_next_boot_of_the_old_slot() {
        let mut r = Records::default();
        r.on_boot('A', "1.0", false);
        r.set('B', "2.0", Status::Armed, None);
        let notes = r.on_boot('A', "1.0", false);
        assert_eq!(r.slots[&'B'].status, Status::Failed);
        assert!(r.failed.contains_key("2.0"));
        assert!(notes[0].contains("never got as far"), "{notes:?}");

        r.set('B', "2.1", Status::Trying, None);
        r.on_boot('A', "1.0", false);
        assert!(r.failed["2.1"].contains("did not commit"));
    }

    #[test]
    fn a_commit_cut_short_after_grubenv_is_finished_by_the_next_boot() {
        let mut r = Records::default();
        r.on_boot('A', "1.0", false);
        r.set('B', "2.0", Status::Trying, None);
        r.on_boot('B', "2.0", false);
        assert_eq!(r.slots[&'B'].status, Status::Committed);
        assert_eq!(
            r.slots[&'A'].status,
            Status::Committed,
            "the old one is kept"
        );
    }

    #[test]
    fn a_written_slot_that_was_never_armed_is_left_alone() {
        let mut r = Records::default();
        r.on_boot('A', "1.0", false);
        r.set('B', "2.0", Status::Written, None);
        assert!(r.on_boot('A', "1.0", false).is_empty());
        assert_eq!(r.slots[&'B'].status, Status::Written);
    }

    #[test]
    fn the_command_line_names_the_slot_and_the_trial() {
        assert_eq!(
            from_cmdline("console=ttyS0 berth.slot=B berth.trial=1"),
            Some(('B', true))
        );
        assert_eq!(from_cmdline("berth.slot=a"), Some(('A', false)));
        assert_eq!(from_cmdline("console=ttyS0"), None);
    }

    #[test]
    fn grubenv_is_rewritten_in_place_on_a_real_fat_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk_path = dir.path().join("disk");
        let (file, layout) =
            crate::testing::installed_disk(&disk_path, &dir.path().join("boot")).expect("disk");
        let installed = Installed::open(&disk_path).expect("open");
        assert_eq!(installed.esp, layout.esp());
        assert_eq!(
            installed.read_env().expect("env"),
            env(&[("berth_default", "A")])
        );

        let esp_bytes = |file: &File| {
            let mut data = vec![0u8; layout.esp().bytes as usize];
            let mut f = file;
            f.seek(SeekFrom::Start(layout.esp().start)).expect("seek");
            f.read_exact(&mut data).expect("read");
            data
        };
        let before = esp_bytes(&file);
        let at = before
            .windows(24)
            .position(|w| w == b"# GRUB Environment Block")
            .expect("grubenv on the volume");

        let armed = env(&[("berth_default", "A"), ("berth_try", "B")]);
        installed.write_env(&armed).expect("arm");
        assert_eq!(installed.read_env().expect("env"), armed);
        let after = esp_bytes(&file);
        assert_eq!(
            after
                .windows(24)
                .position(|w| w == b"# GRUB Environment Block"),
            Some(at),
            "the block stays where GRUB's block list points"
        );
        let refused = installed
            .write_boot_files('B', b"kernel B", b"initrd B", "0.2.0", Some("panic=1\"\nx"))
            .expect_err("arguments GRUB would run");
        assert!(
            refused.to_string().contains("cannot be booted"),
            "{refused}"
        );
        assert!(
            crate::esp::read_file(&file, &layout.esp(), "B/vmlinuz").is_err(),
            "nothing of a refused slot is written"
        );
        installed
            .write_boot_files(
                'B',
                b"kernel B",
                b"initrd B",
                "0.2.0\"$x",
                Some("console=ttyS0 panic=5"),
            )
            .expect("boot files");
        assert_eq!(
            crate::esp::read_file(&file, &layout.esp(), "B/vmlinuz").expect("read"),
            b"kernel B"
        );
        // The version as GRUB reads it, with what its quoting could run made harmless.
        assert_eq!(
            crate::esp::read_file(&file, &layout.esp(), "B/version.cfg").expect("read"),
            b"set berth_version=\"0.2.0__x\"\nset berth_os_args=\"console=ttyS0 panic=5\"\n"
        );
        assert_eq!(
            crate::esp::read_file(&file, &layout.esp(), "A/vmlinuz").expect("read"),
            b"vmlinuz",
            "the running slot's kernel is untouched"
        );
        assert_eq!(installed.read_env().expect("env"), armed);
    }
}
