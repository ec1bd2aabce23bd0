//! `berth install`: the running live system onto a disk (ARCHITECTURE.md §7).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use berth_iso::bootloader::Images;
use berth_iso::disk::Progress;
use berth_iso::install::{self, Host};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The whole disk to install to, e.g. /dev/vda (everything on it is lost).
    #[arg(long)]
    pub disk: PathBuf,
    /// The installed system's cloud-config: a file or an http(s) URL; without
    /// it, the live system's config sources (user-data and `berth config set`
    /// changes) carry over.
    #[arg(long)]
    pub config: Option<String>,
    /// Install over a disk that holds a partition table or a filesystem.
    #[arg(long)]
    pub force: bool,
    /// Do not reboot when done.
    #[arg(long)]
    pub no_reboot: bool,
    /// The medium the OS comes from (the live ISO's mount point).
    #[arg(long, default_value = install::LIVE_MEDIUM, hide = true)]
    pub from: PathBuf,
    /// The live system's config sources, carried over without --config.
    #[arg(long, default_value = "/var/lib/berth/config", hide = true)]
    pub config_root: PathBuf,
}

pub fn run(args: InstallArgs) -> Result<ExitCode> {
    let mut payload =
        install::payload_from(&args.from, Images::shipped(), crate::os::running_version())?;
    payload.config = install::config_files(args.config.as_deref(), &args.config_root)?;
    let progress = reporter();
    let start = Instant::now();
    let written = install::install(
        &Host::default(),
        &args.disk,
        args.force,
        &payload,
        &*progress,
    )?;
    println!(
        "installed Berth on {} in {:.0}s: slot A holds {:.1} MiB (sha256 {}, read back and checked); {} config file(s) for its first boot",
        args.disk.display(),
        start.elapsed().as_secs_f64(),
        written.rootfs_bytes as f64 / (1 << 20) as f64,
        &written.rootfs_sha256[..16],
        payload.config.len()
    );
    if args.no_reboot {
        println!("remove the live medium and reboot to start the installed system");
        return Ok(ExitCode::SUCCESS);
    }
    println!("rebooting into the installed system");
    berth_init::request(berth_init::Action::Reboot).context("cannot reboot")?;
    Ok(ExitCode::SUCCESS)
}

/// Bars on a terminal, a line per step and per tenth otherwise.
pub(crate) fn reporter() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar(Mutex::new(None)))
    } else {
        Box::new(Lines(crate::progress::Tenths::new()))
    }
}

struct Bar(Mutex<Option<indicatif::ProgressBar>>);

impl Progress for Bar {
    fn step(&self, what: &str) {
        if let Ok(mut bar) = self.0.lock() {
            if let Some(b) = bar.take() {
                b.finish();
            }
        }
        eprintln!("{what}");
    }

    fn bytes(&self, what: &str, done: u64, total: u64) {
        let Ok(mut bar) = self.0.lock() else { return };
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(what.to_string());
            crate::progress::drawing(crate::progress::Drawn::One(b.clone()));
            b
        });
        b.set_position(done);
    }
}

struct Lines(crate::progress::Tenths);

impl Progress for Lines {
    fn step(&self, what: &str) {
        eprintln!("{what}");
    }

    fn bytes(&self, what: &str, done: u64, total: u64) {
        if let Some(line) = self.0.line(what, done, total) {
            eprintln!("{line}");
        }
    }
}
