//! `cargo xtask`: everything that builds, tests or boots Berth.
//!
//! The README promises two commands, `cargo xtask run` and `cargo xtask test`,
//! that work on a fresh Debian/Ubuntu machine with only Rust installed, so each
//! command first makes sure the host has what it needs (see [`host`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod bench;
mod host;
mod os;
mod qemu;
mod run;
mod skips;

const USAGE: &str = "\
usage: cargo xtask <command>

  run [--fresh] [--kvm] [--config FILE]
                 build what is stale and boot berth.iso in QEMU (serial console
                 here, state disk target/berth/state.img, ssh on 127.0.0.1:2222)
  test           every check and test: fmt, clippy, unit and integration tests,
                 the static musl binary, then the QEMU boot tests
  build          build the OS into target/berth/: berth (static), vmlinuz,
                 initrd, rootfs.squashfs, berth.iso (skips what is up to date)
  test-qemu [FILE...]
                 build the OS and run those QEMU test files (all when none
                 is named) as `test` runs them: side by side, two VMs at most
  test-images    build the OS and the upgrade tests' OS images (target/berth/test-os)
  images [NAME]  build the system images from images/recipes (cached by recipe hash)
  schema         regenerate configs/schema.json from the Rust types
  fuzz [SECS] [TARGET]
                 fuzz each target for SECS (default 600 s): parse_and_validate
                 (cloud-config), layer_unpack, dhcp_packet, api_request, gpt, grubenv
  bench [NAME]   run benchmarks (config, images, runtime, network; boot, install, upgrade by name)
";

/// The musl target the `berth` binary is built for: one static binary, no libc on the image.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run::run(&args[1..]),
        Some("test") => test(),
        Some("build") => {
            match args.get(1..) {
                Some([flag, version]) if flag == "--os-version" => {
                    // Read by os::build; this process only.
                    std::env::set_var("BERTH_OS_VERSION", version);
                }
                Some([]) | None => {}
                Some(other) => {
                    eprintln!(
                        "xtask build: unknown arguments {other:?} (build takes --os-version V)"
                    );
                    return ExitCode::from(2);
                }
            }
            os::build().map(|_| ())
        }
        Some("test-qemu") => os::build().and_then(|a| qemu::run_tests(&a, &args[1..])),
        Some("test-images") => os::build()
            .and_then(|a| os::test_os_images(&a))
            .map(|dir| println!("test OS images in {}", dir.display())),
        Some("schema") => schema(),
        Some("images") => images(args.get(1).map(String::as_str)).map(|_| ()),
        Some("fuzz") => fuzz(
            args.get(1).map(String::as_str),
            args.get(2).map(String::as_str),
        ),
        Some("bench") => bench::run(args.get(1).map(String::as_str)),
        Some("help" | "-h" | "--help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs one named step, printing its name and how long it took.
pub fn step(name: &str, cmd: &mut Command) -> Result<()> {
    println!("==> {name}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{:?}`", cmd.get_program()))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    println!("==> {name}: ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn test() -> Result<()> {
    let start = Instant::now();
    // Every test that does not run records itself here (berth-testkit).
    let skip_log = skips::log_path();
    skips::reset(&skip_log)?;
    let result = test_steps();
    let counted = skips::report(&skip_log, skips::ci());
    result?;
    counted?;
    println!(
        "==> all tests passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn test_steps() -> Result<()> {
    host::ensure()?;
    host::report_free_space(&target_dir(), host::TEST_DISK_GIB)?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    // The system images must build from their recipes (from a clean cache in
    // CI), before the tests: the privileged tests that run a system image (the
    // podman engine's) need it. mmdebstrap spends much of its time waiting on
    // downloads and dpkg, so the images build while clippy and the test
    // binaries compile, on the same two cores.
    let built_images = std::thread::spawn(|| images(None).map(|_| ()));
    let compiled = step(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
    .and_then(|()| {
        step(
            "cargo test --no-run",
            cargo().args(["test", "--workspace", "--exclude", "qemu-tests", "--no-run"]),
        )
    });
    let built_images = built_images
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("building the system images panicked")));
    compiled?;
    built_images?;
    // The QEMU tests run last, once the OS is built (os::qemu_tests); here
    // they would only skip for want of the artifacts.
    step(
        "cargo test",
        cargo()
            .args(["test", "--workspace", "--exclude", "qemu-tests"])
            .env("BERTH_IMAGE_STORE", image_store_dir())
            .env(berth_testkit::LOG_ENV, skips::log_path()),
    )?;
    let berth = build_berth()?;
    step(
        "static berth validates the built-in defaults",
        Command::new(&berth)
            .args(["config", "validate", "--strict"])
            .arg(workspace_root().join("configs/default.yml")),
    )?;
    // The boot tests need the whole OS; they run last because they are the slowest.
    let artifacts = os::build()?;
    os::check_os_image()?;
    qemu::run_tests(&artifacts, &[])
}

/// The static binaries the OS is made of, under `target/berth/`.
#[derive(Debug)]
pub struct Binaries {
    /// `berth`: the CLI, berthd and PID 1 (stage 2) in one.
    pub berth: PathBuf,
    /// The initramfs's `/init`: stage 1 alone, a sixth of `berth`'s size, so
    /// the initramfs is smaller to load and to unpack into RAM.
    pub initramfs_init: PathBuf,
}

/// Builds the static `berth` binary and copies it to `target/berth/berth`.
fn build_berth() -> Result<PathBuf> {
    Ok(build_binaries()?.berth)
}

/// Builds the static binaries (musl) and copies them to `target/berth/`.
fn build_binaries() -> Result<Binaries> {
    host::ensure()?;
    step(
        "build static berth and the initramfs's init (musl)",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "berth-cli",
            "-p",
            "berth-init",
            "--bins",
            "--target",
            MUSL_TARGET,
        ]),
    )?;
    Ok(Binaries {
        berth: place_static("berth")?,
        initramfs_init: place_static("berth-initramfs")?,
    })
}

/// Copies the static binary `name` of the musl build to `target/berth/name`.
fn place_static(name: &str) -> Result<PathBuf> {
    let built = target_dir().join(MUSL_TARGET).join("release").join(name);
    let out_dir = target_dir().join("berth");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(name);
    // The OS artifacts are fingerprinted by their inputs' mtimes: copy only a
    // binary that changed, or every build would rebuild the whole OS.
    let unchanged = match (std::fs::read(&built), std::fs::read(&out)) {
        (Ok(new), Ok(old)) => new == old,
        _ => false,
    };
    if !unchanged {
        std::fs::copy(&built, &out)
            .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    }
    let size = std::fs::metadata(&out)?.len();
    host::check_static(&out)?;
    println!(
        "    {} ({:.2} MiB, static)",
        out.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(out)
}

/// The image store the build writes system images into.
pub fn image_store_dir() -> PathBuf {
    target_dir().join("berth/image-store")
}

/// Builds the system images (all, or the one named) into `target/berth/image-store`.
fn images(only: Option<&str>) -> Result<Vec<berth_images::recipe::Built>> {
    host::ensure()?;
    let recipes = berth_images::recipe::load_all(&workspace_root().join("images/recipes"))?;
    let store = berth_images::Store::open(image_store_dir())?;
    // Reproducible: every timestamp is the last commit's (or a fixed) time.
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_700_000_000);
    let mut built = Vec::new();
    for recipe in recipes
        .iter()
        .filter(|r| only.is_none_or(|n| n == r.recipe.name))
    {
        let start = Instant::now();
        let result = berth_images::recipe::build(&store, recipe, epoch)?;
        if result.cached {
            println!(
                "    {:<24} cached ({:.1} MiB)",
                result.reference,
                mib(result.compressed)
            );
        } else {
            println!(
                "    {:<24} built in {:.0}s: {:.1} MiB compressed, {:.1} MiB unpacked",
                result.reference,
                start.elapsed().as_secs_f64(),
                mib(result.compressed),
                mib(result.unpacked)
            );
        }
        built.push(result);
    }
    if built.is_empty() {
        bail!("no recipe named `{}`", only.unwrap_or_default());
    }
    Ok(built)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn schema() -> Result<()> {
    let path = workspace_root().join("configs/schema.json");
    std::fs::write(&path, berth_configs::schema::schema_json())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The fuzz targets: (the fuzz crate's directory under the workspace, target).
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("configs", "parse_and_validate"),
    (".", "layer_unpack"),
    (".", "dhcp_packet"),
    (".", "api_request"),
    (".", "gpt"),
    (".", "grubenv"),
];

fn fuzz(seconds: Option<&str>, only: Option<&str>) -> Result<()> {
    let seconds: u64 = seconds
        .unwrap_or("600")
        .parse()
        .context("SECS must be a number")?;
    let targets: Vec<&(&str, &str)> = FUZZ_TARGETS
        .iter()
        .filter(|(_, t)| only.is_none_or(|o| o == *t))
        .collect();
    if targets.is_empty() {
        bail!(
            "no fuzz target {}; there are {}",
            only.unwrap_or_default(),
            FUZZ_TARGETS
                .iter()
                .map(|(_, t)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    host::ensure_cargo_tool("cargo-fuzz", "cargo-fuzz")?;
    for (dir, target) in targets {
        let dir = workspace_root().join(dir);
        let corpus = dir.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let mut cmd = cargo();
        cmd.current_dir(&dir)
            // cargo-fuzz needs -Z flags; this lets the stable toolchain accept them.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            .arg(&corpus);
        // Seed inputs: the config parser's in fuzz/seeds, the others' in
        // fuzz/seeds/TARGET (a tar header's checksum is out of a mutator's reach).
        for seeds in [dir.join("fuzz/seeds"), dir.join("fuzz/seeds").join(target)] {
            let holds_files = std::fs::read_dir(&seeds)
                .map(|d| d.flatten().any(|e| e.path().is_file()))
                .unwrap_or(false);
            if holds_files && (*target == "parse_and_validate" || seeds.ends_with(target)) {
                cmd.arg(&seeds);
            }
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"]);
        step(&format!("cargo fuzz run {target} ({seconds} s)"), &mut cmd)?;
    }
    Ok(())
}
