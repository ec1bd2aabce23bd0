//! `berth os`: which OS version runs, both slots, upgrades and rollbacks
//! (ARCHITECTURE.md §7, docs/upgrade.md).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use berth_iso::kernel_args;
use berth_iso::slots::{self, Installed, Records, Status};

use crate::config::Format;

#[derive(Debug, clap::Subcommand)]
pub enum OsCommand {
    /// The running OS version, and the slot (A or B) or live medium it booted from.
    Version {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Both slots: version, which runs, which boots next, and what became of each.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Writes a new OS image into the other slot and boots it once, on trial:
    /// it becomes the default only if it comes up healthy.
    Upgrade {
        /// The OS image (default: `berth.upgrade.image`).
        reference: Option<String>,
        /// Read the image from an oci-archive instead of a registry.
        #[arg(long, conflicts_with = "reference")]
        file: Option<PathBuf>,
        /// Reach the registry over plain http.
        #[arg(long)]
        insecure: bool,
        /// Also the running version, or one that failed here before.
        #[arg(long)]
        force: bool,
        /// Arm the trial boot but do not reboot now.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Boots the other slot from now on, if its image was committed here before.
    Rollback {
        #[arg(long)]
        no_reboot: bool,
    },
}

/// Where an upgrade keeps the image it pulls, on the state partition.
const DOWNLOAD: &str = "/var/lib/berth/os/download";

/// `A`, `B`, or `live` from the kernel command line.
fn booted_from(cmdline: &str) -> String {
    slots::from_cmdline(cmdline)
        .map(|(s, _)| s.to_string())
        .unwrap_or_else(|| "live".into())
}

fn cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

pub(crate) fn running_version() -> String {
    slots::os_version(Path::new("/")).unwrap_or_else(|| "unknown".into())
}

pub fn run(cmd: OsCommand) -> Result<ExitCode> {
    match cmd {
        OsCommand::Version { output } => {
            let version = running_version();
            let slot = booted_from(&cmdline());
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"version": version, "booted_from": slot})
                ),
                Format::Text => println!(
                    "Berth {version} ({})",
                    if slot == "live" {
                        "live medium".to_string()
                    } else {
                        format!("slot {slot}")
                    }
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        OsCommand::List { output } => list(output),
        OsCommand::Upgrade {
            reference,
            file,
            insecure,
            force,
            no_reboot,
        } => upgrade(reference, file, insecure, force, no_reboot),
        OsCommand::Rollback { no_reboot } => rollback(no_reboot),
    }
}

/// The installed disk and the slot running now; refused on a live medium.
/// The installed disk, the slot running now, and whether that slot is on a
/// trial boot that has not committed yet (the kernel command line keeps
/// `berth.trial=1` after the commit; the records say when it is over).
fn installed() -> Result<(Installed, char, bool)> {
    let Some((running, trial)) = slots::from_cmdline(&cmdline()) else {
        bail!("this system runs from a live medium; `berth install` it to a disk first");
    };
    if !crate::image::is_root() {
        // The boot loader's state is on the raw disk, the records 0600 on state.
        bail!("the slots are read from the disk itself: run it as root (sudo berth os ...)");
    }
    let installed = Installed::find(Path::new("/sys/class/block"), Path::new("/dev"))?
        .context("no disk with the BERTH_EFI, BERTH_A and BERTH_B partitions was found")?;
    let committed = Records::load(Path::new("/"))?
        .slots
        .get(&running)
        .is_some_and(|r| r.status == Status::Committed);
    Ok((installed, running, trial && !committed))
}

/// `berth reboot --menu`: the next boot of the installed disk shows GRUB's
/// menu ([`berth_iso::bootloader::MENU_VAR`]).
pub fn ask_for_menu() -> Result<()> {
    if slots::from_cmdline(&cmdline()).is_none() {
        bail!(
            "this system runs from a live medium, whose boot menu opens with Esc (or F4) \
             within the first second of the boot"
        );
    }
    let (installed, _, _) = installed()?;
    if !installed.grub_cfg_reads(berth_iso::bootloader::MENU_VAR)? {
        bail!(
            "this disk's GRUB config was written by an installer from before `--menu`; \
             its menu opens with Esc (or F4) within the first second of the boot"
        );
    }
    let mut env = installed.read_env()?;
    berth_iso::bootloader::ask_for_menu(&mut env);
    installed.write_env(&env)?;
    println!(
        "the next boot shows the boot menu for {}s, on the serial console and the screen",
        berth_iso::bootloader::MENU_TIMEOUT_S
    );
    Ok(())
}

/// The slot GRUB boots next: the armed one, else the default.
fn next_boot(env: &std::collections::BTreeMap<String, String>) -> char {
    env.get("berth_try")
        .and_then(|s| slots::parse_slot(s))
        .or_else(|| env.get("berth_default").and_then(|s| slots::parse_slot(s)))
        .unwrap_or('A')
}

fn list(output: Format) -> Result<ExitCode> {
    let (installed, running, trial) = installed()?;
    let env = installed.read_env()?;
    let kargs = kernel_args::Env::read(&env);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let records = Records::load(Path::new("/"))?;
    let next = next_boot(&env);
    let default = env
        .get("berth_default")
        .and_then(|s| slots::parse_slot(s))
        .unwrap_or('A');
    match output {
        Format::Json => {
            let slots: Vec<serde_json::Value> = ['A', 'B']
                .iter()
                .map(|s| {
                    let r = records.slots.get(s);
                    serde_json::json!({
                        "slot": s.to_string(),
                        "version": r.map(|r| r.version.clone()),
                        "status": r.map(|r| r.status.as_str()),
                        "reason": r.and_then(|r| r.reason.clone()),
                        "at": r.map(|r| r.at),
                        "image": r.and_then(|r| r.image.clone()),
                        "running": *s == running,
                        "trial": *s == running && trial,
                        "default": *s == default,
                        "boots_next": *s == next,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "slots": slots,
                    "failed_versions": records.failed,
                    "kernel_args": {
                        "committed": kargs.committed,
                        "next": kargs.next,
                        "armed": kargs.armed,
                        "running_trial": kernel_args::on_trial(&cmdline),
                        "failed": records.kernel_args_failed,
                    },
                }))?
            );
        }
        Format::Text => {
            println!("SLOT  VERSION          STATUS     NOW      NEXT BOOT");
            for s in ['A', 'B'] {
                let r = records.slots.get(&s);
                let now = if s == running {
                    if trial {
                        "running (trial)"
                    } else {
                        "running"
                    }
                } else {
                    ""
                };
                let next_note = if s == next {
                    if env.get("berth_try").is_some_and(|t| t.starts_with(s)) {
                        "yes (once, on trial)"
                    } else {
                        "yes"
                    }
                } else {
                    ""
                };
                println!(
                    "{s}     {:<16} {:<10} {:<8} {next_note}",
                    r.map_or("-", |r| r.version.as_str()),
                    r.map_or("empty", |r| r.status.as_str()),
                    now
                );
                if let Some(reason) = r.and_then(|r| r.reason.as_deref()) {
                    println!("      {}: {reason}", when(r.map_or(0, |r| r.at)));
                }
            }
            print_kernel_args(&kargs, kernel_args::on_trial(&cmdline), &records);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `berth.kernel_args` part of `berth os list`.
fn print_kernel_args(kargs: &kernel_args::Env, on_trial: bool, records: &Records) {
    let shown = |a: &str| {
        if a.is_empty() {
            "none".to_string()
        } else {
            format!("`{a}`")
        }
    };
    println!();
    println!("kernel arguments (berth.kernel_args)");
    match (&kargs.next, on_trial) {
        (Some(next), true) => println!(
            "  on trial now:   {} (kept once every service is ready)",
            shown(next)
        ),
        _ => println!("  every boot:     {}", shown(&kargs.committed)),
    }
    if on_trial {
        println!("  before:         {}", shown(&kargs.committed));
    } else if let (Some(next), true) = (&kargs.next, kargs.armed) {
        println!("  next boot:      {} (once, on trial)", shown(next));
    }
    if let Some(f) = &records.kernel_args_failed {
        println!(
            "  failed:         `{}` at {}: {}",
            f.args,
            when(f.at),
            f.reason
        );
    }
}

fn when(secs: u64) -> String {
    berth_images::recipe::rfc3339(secs)
}

fn upgrade(
    reference: Option<String>,
    file: Option<PathBuf>,
    insecure: bool,
    force: bool,
    no_reboot: bool,
) -> Result<ExitCode> {
    let root = Path::new("/");
    let (installed, running, trial) = installed()?;
    if trial {
        bail!(
            "slot {running} is on its trial boot; wait until it commits (`berth os list`) or falls back"
        );
    }
    let env = installed.read_env()?;
    if let Some(armed) = env.get("berth_try").filter(|t| !t.is_empty()) {
        if !force {
            bail!("slot {armed} is armed for a trial on the next boot already; reboot, or --force");
        }
    }
    let target = slots::other(running);
    let mut records = Records::load(root)?;
    let config = berth_configs::Layout::new(root).load()?.config;

    // 1. The image. From a registry, its manifest and config go into a store
    // of their own on the state partition, and its one layer streams
    // straight into the slot (step 3), so an upgrade needs no room for it
    // there; from an archive, all of it is imported into that store first.
    let _ = std::fs::remove_dir_all(DOWNLOAD);
    let store =
        berth_images::Store::open(DOWNLOAD).with_context(|| format!("opening {DOWNLOAD}"))?;
    let (image, source, remote) = match file {
        Some(path) => {
            let imported = berth_images::archive::import(&store, &path, None)
                .with_context(|| format!("reading {}", path.display()))?;
            let reference = imported
                .references
                .first()
                .cloned()
                .with_context(|| format!("{} holds no named image", path.display()))?;
            let image = berth_images::os_image::inspect(&store, &reference)?;
            (image, path.display().to_string(), None)
        }
        None => {
            let reference = reference
                .or_else(|| config.berth.upgrade.image.clone())
                .context("no image named: give one, or set berth.upgrade.image")?;
            eprintln!("pulling {reference}");
            let options = crate::image::pull_options(&config, &reference, insecure)?;
            let pulling = || format!("pulling {reference}");
            // The slot's progress (step 3) follows the layer as it arrives.
            let remote = berth_images::pull::Remote::connect(
                &store,
                &berth_images::Reference::parse(&reference)?,
                &options,
                &berth_images::pull::Quiet,
            )
            .with_context(pulling)?;
            let pulled = remote.image().with_context(pulling)?;
            let image = berth_images::os_image::describe(&pulled)?;
            let layer = pulled.manifest.layers[0].clone();
            (image, reference, Some((remote, layer)))
        }
    };

    // 2. Checks, before anything on the disk changes.
    let running_version = running_version();
    if image.version == running_version && !force {
        bail!(
            "{source} is version {}, the one running now (--force to write it again)",
            image.version
        );
    }
    if let Some(why) = records.failed.get(&image.version) {
        if !force {
            bail!(
                "version {} failed here before ({why}); --force to try it again",
                image.version
            );
        }
    }
    println!(
        "upgrading from {running_version} (slot {running}) to {} (slot {target}) from {source}",
        image.version
    );

    // 3. The slot: marked as being written first, so that a power cut in
    // the middle never leaves a record that calls it bootable.
    records.set(target, &image.version, Status::Writing, None);
    if let Some(r) = records.slots.get_mut(&target) {
        r.image = Some(source.clone());
        r.rootfs_sha256 = None;
    }
    records.save(root)?;
    let disk_progress = crate::install::reporter();
    let slot_bytes = installed.slot(target).bytes;
    let mut kernel = Vec::new();
    let mut initrd = Vec::new();
    let mut rootfs_sha = None;
    let visit = |name: &str, size: u64, reader: &mut dyn Read| {
        match name {
            berth_images::os_image::ROOTFS => {
                if size > slot_bytes {
                    return Err(std::io::Error::other(format!(
                        "its rootfs is {} MiB; slot {target} holds {} MiB",
                        slots::mib(size),
                        slots::mib(slot_bytes)
                    )));
                }
                let sha = installed
                    .write_rootfs(target, reader, size, disk_progress.as_ref())
                    .map_err(std::io::Error::other)?;
                rootfs_sha = Some(sha);
            }
            berth_images::os_image::KERNEL => {
                reader.take(size).read_to_end(&mut kernel)?;
            }
            _ => {
                reader.take(size).read_to_end(&mut initrd)?;
            }
        }
        Ok(())
    };
    let writing = || format!("writing {} into slot {target}", image.version);
    match &remote {
        Some((remote, layer)) => {
            eprintln!(
                "streaming its layer ({} MiB) into slot {target}",
                slots::mib(layer.size)
            );
            let mut reader = remote.layer(layer);
            berth_images::os_image::extract_from(&mut reader, &image, visit)
                .with_context(writing)?;
            // What was written is the image's only once the whole layer has
            // its digest: until then the slot stays recorded as being written.
            reader.finish().with_context(writing)?;
        }
        None => berth_images::os_image::extract(&store, &image, visit).with_context(writing)?,
    }
    disk_progress.step(
        "writing the kernel, initrd, version and kernel arguments to the EFI system partition",
    );
    if image.kernel_args.is_none() {
        eprintln!(
            "{source} does not say which kernel arguments it boots with \
             (`{}`): slot {target} boots with those of this disk's boot menu",
            berth_images::os_image::KERNEL_ARGS_LABEL
        );
    }
    installed.write_boot_files(
        target,
        &kernel,
        &initrd,
        &image.version,
        image.kernel_args.as_deref(),
    )?;
    records.set(target, &image.version, Status::Written, None);
    if let Some(r) = records.slots.get_mut(&target) {
        r.image = Some(source.clone());
        r.rootfs_sha256 = rootfs_sha;
    }
    records.save(root)?;
    let _ = std::fs::remove_dir_all(DOWNLOAD);

    // 4. Arm one trial boot: grubenv first, then the record (a cut between
    // them still boots the trial, whose PID 1 records it).
    let mut env = installed.read_env()?;
    env.insert("berth_try".into(), target.to_string());
    installed.write_env(&env)?;
    records.set(target, &image.version, Status::Armed, None);
    records.save(root)?;
    if no_reboot {
        println!(
            "{} is in slot {target}; the next boot tries it once, and keeps it if it comes up healthy",
            image.version
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("rebooting into {} (slot {target}) on trial", image.version);
    berth_init::request(berth_init::Action::Reboot).context("cannot reboot")?;
    Ok(ExitCode::SUCCESS)
}

fn rollback(no_reboot: bool) -> Result<ExitCode> {
    let root = Path::new("/");
    let (installed, running, trial) = installed()?;
    let target = slots::other(running);
    let records = Records::load(root)?;
    let Some(record) = records.slots.get(&target) else {
        bail!("slot {target} holds nothing this machine ran; there is nothing to roll back to");
    };
    if record.status != Status::Committed {
        bail!(
            "slot {target} holds {} ({}), which was never committed here; rollback only returns to a version that ran healthy",
            record.version,
            record.status.as_str()
        );
    }
    let mut env = installed.read_env()?;
    env.insert("berth_default".into(), target.to_string());
    env.remove("berth_try");
    installed.write_env(&env)?;
    if trial {
        println!("(slot {running} was on trial; it will not be committed)");
    }
    if no_reboot {
        println!("the next boots use {} (slot {target})", record.version);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "rolling back to {} (slot {target}); rebooting",
        record.version
    );
    berth_init::request(berth_init::Action::Reboot).context("cannot reboot")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_slot() {
        let release = "NAME=\"Berth\"\nVERSION_ID=\"2.0\"\n";
        assert_eq!(
            slots::os_release_value(release, "VERSION_ID").as_deref(),
            Some("2.0")
        );
        assert_eq!(booted_from("console=ttyS0 berth.slot=b panic=10"), "B");
        assert_eq!(booted_from("console=ttyS0"), "live");
    }

    #[test]
    fn the_next_boot_is_the_armed_slot_else_the_default() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(next_boot(&env(&[("berth_default", "A")])), 'A');
        assert_eq!(
            next_boot(&env(&[("berth_default", "A"), ("berth_try", "B")])),
            'B'
        );
        assert_eq!(
            next_boot(&env(&[("berth_default", "B"), ("berth_try", "")])),
            'B'
        );
    }
}
