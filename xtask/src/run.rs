//! `cargo xtask run`: builds what is stale and boots Berth in QEMU with the
//! serial console on the terminal and SSH on 127.0.0.1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::os::{build, out_dir};

/// `cargo xtask run [--fresh] [--kvm] [--config FILE]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut fresh = false;
    let mut kvm = false;
    let mut disk = false;
    let mut config: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fresh" => fresh = true,
            "--kvm" => kvm = true,
            "--disk" => disk = true,
            "--config" => {
                config = Some(
                    it.next()
                        .context("--config needs a cloud-config file")?
                        .into(),
                )
            }
            other => {
                bail!("unknown option `{other}` (run takes --disk, --fresh, --kvm, --config FILE)")
            }
        }
    }
    let artifacts = build()?;
    let out = out_dir();

    let seed = out.join("seed.img");
    let user_data = run_user_data(config.as_deref())?;
    let (mut vm, booted) = if disk {
        // A copy-on-write disk over the qcow2 image (the build output stays
        // pristine), 8 GiB: the image grows into it on its first boot.
        let vm_disk = out.join("run-disk.qcow2");
        if fresh || !vm_disk.exists() {
            let _ = std::fs::remove_file(&vm_disk);
            qemu_tests::overlay(&artifacts.qcow2, &vm_disk, 8 << 30)?;
            println!("==> new 8 GiB disk over {}", artifacts.qcow2.display());
        }
        (
            qemu_tests::Config::new("berth", qemu_tests::Boot::Disk).drive(&vm_disk, false),
            vm_disk,
        )
    } else {
        let state = out.join("state.img");
        if fresh || !state.exists() {
            // Blank (all zeros, sparse) so stage 1's autoformat may take it.
            qemu_tests::blank_disk(&state, 4 << 30)?;
            println!("==> blank 4 GiB state disk {}", state.display());
        }
        (
            qemu_tests::Config::new("berth", qemu_tests::Boot::Cdrom(artifacts.iso.clone()))
                .drive(&state, false),
            artifacts.iso.clone(),
        )
    };
    vm = vm.forward(2222, 22);
    vm.kvm = kvm;
    vm.cpus = 2;
    qemu_tests::nocloud_seed(
        &seed,
        &user_data,
        "instance-id: berth-dev\nlocal-hostname: berth\n",
    )?;
    vm = vm.drive(&seed, true);
    println!("==> NoCloud seed {}", seed.display());
    let scratch = tempfile_dir()?;
    let mut cmd = vm.command(&scratch)?;
    // The serial console on this terminal; Ctrl-A X quits QEMU.
    cmd.arg("-nographic");
    println!(
        "==> booting {} ({}; Ctrl-A X quits; ssh -p 2222 berth@127.0.0.1 once the console service runs)",
        booted.display(),
        if kvm { "KVM" } else { "TCG" }
    );
    let status = cmd
        .status()
        .context("starting qemu-system-x86_64 (the qemu-system-x86 package)")?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    let dir = out_dir().join("qemu-scratch");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

/// `#cloud-config` with the user's `~/.ssh/id_*.pub`, if there are any.
/// The user-data `cargo xtask run` boots with: autoformat of its blank state
/// disk (`/dev/vda`), the user's SSH public keys, and `--config FILE` merged
/// over both (the file wins, as a later source does).
fn run_user_data(config: Option<&Path>) -> Result<String> {
    let mut text = String::from(
        "#cloud-config\n# From `cargo xtask run`: its state disk is /dev/vda.\n\
         berth:\n  state:\n    autoformat: [/dev/vda]\n",
    );
    let keys = ssh_public_keys()?;
    if !keys.is_empty() {
        text.push_str("ssh_authorized_keys:\n");
        for key in keys {
            // JSON strings are valid YAML scalars and quote whatever a comment holds.
            text.push_str(&format!("  - {}\n", json_string(&key)));
        }
    }
    let Some(file) = config else {
        return Ok(text);
    };
    let user_text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let user = berth_configs::parse_document(
        &std::sync::Arc::from(file.display().to_string()),
        &user_text,
    );
    for d in &user.diagnostics {
        eprintln!("{d}");
    }
    let valid = user.is_valid();
    let (Some(user_tree), true) = (user.tree, valid) else {
        println!(
            "==> {} has errors: booting with it unchanged (the console shows them; the state disk is not autoformatted)",
            file.display()
        );
        return Ok(user_text);
    };
    let mut tree = berth_configs::parse_document(&std::sync::Arc::from("xtask run"), &text)
        .tree
        .context("the built-in run config does not parse")?;
    berth_configs::merge::merge(&mut tree, user_tree);
    Ok(berth_configs::sources::render(&tree))
}

/// `~/.ssh/id_*.pub`, sorted.
fn ssh_public_keys() -> Result<Vec<String>> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        return Ok(Vec::new());
    };
    let Ok(entries) = std::fs::read_dir(home.join(".ssh")) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("id_") && name.ends_with(".pub") {
            let key = std::fs::read_to_string(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            keys.push(key.trim().to_string());
        }
    }
    keys.sort();
    Ok(keys)
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
