//! The everyday use of Berth, end to end: boot the ISO with a NoCloud seed
//! carrying a key made for the test, log in with the real OpenSSH client,
//! see the cloud-config applied to the host, and run containers in the user
//! engine — which keep running across a reboot when they ask to.

use std::path::Path;
use std::time::Duration;

use qemu_tests::ssh::Ssh;
use qemu_tests::{berth_lines, Artifacts, Boot, Config, Vm, READY_MARKER};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn expect(vm: &mut Vm, pattern: &str, timeout: Duration) {
    let at = vm
        .expect(pattern, timeout)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}: `{pattern}` at {:.1}s", vm.name(), at.as_secs_f64());
}

fn ok(vm: &Vm, ssh: &Ssh, remote: &str) -> String {
    ssh.check(remote)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())))
}

/// The busybox image the images crate builds, as a `docker load` archive.
/// Docker 20.10 reads neither zstd layers nor OCI archives, so skopeo
/// recompresses the layer with gzip on the way.
fn busybox_archive(dir: &Path, tag: &str) -> Option<std::path::PathBuf> {
    let store = std::env::var_os("BERTH_IMAGE_STORE")?;
    let gzipped = dir.join("busybox-gzip");
    let out = dir.join(format!("{}.tar", tag.replace(['/', ':'], "-")));
    let skopeo = |args: &[String]| {
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet"])
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let copied = skopeo(&[
        "--dest-compress-format".into(),
        "gzip".into(),
        format!(
            "oci:{}:berth/busybox:latest",
            Path::new(&store).join("images").display()
        ),
        format!("oci:{}:busybox", gzipped.display()),
    ]) && skopeo(&[
        format!("oci:{}:busybox", gzipped.display()),
        format!("docker-archive:{}:{tag}", out.display()),
    ]);
    copied.then_some(out)
}

#[test]
fn ssh_in_see_the_config_applied_and_run_containers_across_a_reboot() {
    const TEST: &str = "ssh_in_see_the_config_applied_and_run_containers_across_a_reboot";
    let Some(iso) = Artifacts::get(Artifacts::ISO, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let state = dir.path().join("state.img");
    qemu_tests::blank_disk(&state, 4 << 30).expect("state disk");
    let seed = dir.path().join("seed.iso");
    let user_data = format!(
        r#"#cloud-config
hostname: berth-ssh-test
ssh_authorized_keys:
  - {key}
  - ssh-ed25519 this-is-not-base64 broken@example
write_files:
  - path: /etc/berth-test/hello.conf
    permissions: "0640"
    content: |
      written by write_files
runcmd:
  - echo runcmd ran as $(id -un) > /home/berth/runcmd.txt
berth:
  state:
    autoformat: [/dev/vda]
  sysctl:
    vm.swappiness: 13
"#,
        key = ssh.public_key()
    );
    qemu_tests::nocloud_seed(&seed, &user_data, "instance-id: berth-ssh-1\n").expect("seed");
    let config = Config::new("ssh", Boot::Cdrom(iso.clone()))
        .drive(&state, false)
        .drive(&seed, true)
        .forward(port, 22);
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    let waited = ssh
        .wait(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    eprintln!("ssh: logged in {:.1}s after ready", waited.as_secs_f64());

    assert_eq!(ok(&vm, &ssh, "id -un").trim(), "berth");
    ok(&vm, &ssh, "sudo -n true");
    let refused = ssh.try_password().expect("ssh");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("Permission denied (publickey)"),
        "password login was not refused: {refused:?}"
    );
    assert_eq!(ok(&vm, &ssh, "hostname").trim(), "berth-ssh-test");
    // write_files writes the host's files; the console sees the host's /etc
    // at /host/etc.
    assert_eq!(
        ok(&vm, &ssh, "sudo cat /host/etc/berth-test/hello.conf").trim(),
        "written by write_files"
    );
    assert_eq!(
        ok(&vm, &ssh, "sudo stat -c %a /host/etc/berth-test/hello.conf").trim(),
        "640"
    );
    assert_eq!(ok(&vm, &ssh, "cat /proc/sys/vm/swappiness").trim(), "13");
    // runcmd runs once the console is up; its file is the sign it ran.
    let runcmd = (0..30)
        .find_map(|_| {
            let out = ssh.run("cat /home/berth/runcmd.txt").ok()?;
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            std::thread::sleep(Duration::from_secs(2));
            None
        })
        .unwrap_or_else(|| panic!("runcmd never ran\n{}", berth_lines(&vm.transcript())));
    assert_eq!(runcmd.trim(), "runcmd ran as root");

    // The user engine: load the busybox image and run it.
    if let Some(archive) = busybox_archive(dir.path(), "busybox:latest") {
        let out = ssh
            .run_with_input("docker load", Some(&archive))
            .expect("ssh");
        assert!(out.status.success(), "docker load: {out:?}");
        assert_eq!(
            ok(&vm, &ssh, "docker run --rm busybox:latest echo hi").trim(),
            "hi"
        );
        ok(
            &vm,
            &ssh,
            "docker run -d --name keeper --restart=always busybox:latest sleep 100000",
        );
        // Restarting the console (where this very SSH session lives) leaves
        // user containers alone: the engine is a service of its own.
        let started_at = |ssh: &Ssh| {
            ssh.check("docker inspect --format '{{.State.StartedAt}}' keeper")
                .map(|s| s.trim().to_string())
        };
        let before = started_at(&ssh).expect("inspect keeper");
        ok(
            &vm,
            &ssh,
            "sudo sh -c 'nohup berth service restart console >/dev/null 2>&1 &'",
        );
        expect(&mut vm, "console: started", BOOT_TIMEOUT);
        ssh.wait(BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
        assert_eq!(
            started_at(&ssh).expect("inspect keeper"),
            before,
            "the user container was restarted with the console"
        );
    } else {
        eprintln!("{TEST}: BERTH_IMAGE_STORE not set; the engine part is skipped");
        return;
    }
    // An archive dropped into the engine's preload directory on the host is
    // loaded at the next boot.
    let preload = busybox_archive(dir.path(), "preloaded/busybox:1").expect("archive");
    let out = ssh
        .run_with_input(
            "sudo sh -c 'cat > /proc/1/root/var/lib/berth/preload/docker/preloaded.tar'",
            Some(&preload),
        )
        .expect("ssh");
    assert!(out.status.success(), "copying the preload archive: {out:?}");
    ok(&vm, &ssh, "sudo berth poweroff");
    vm.wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(vm);

    // Same disk, no seed: the cached config and the engine's data are on state.
    let config = Config::new("ssh-again", Boot::Cdrom(iso))
        .drive(&state, false)
        .forward(port, 22);
    let mut vm = Vm::start(&config).expect("start qemu");
    expect(&mut vm, READY_MARKER, BOOT_TIMEOUT);
    ssh.wait(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
    let running = (0..30)
        .find_map(|_| {
            let out = ssh
                .run("docker ps --filter name=keeper --format '{{.Status}}'")
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.starts_with("Up") {
                return Some(text);
            }
            std::thread::sleep(Duration::from_secs(2));
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "the --restart=always container is not running after the reboot\n{}",
                berth_lines(&vm.transcript())
            )
        });
    eprintln!("keeper after reboot: {}", running.trim());
    let preloaded = (0..60)
        .find_map(|_| {
            let out = ssh
                .run("docker image ls --format '{{.Repository}}:{{.Tag}}' preloaded/busybox")
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !text.is_empty() {
                return Some(text);
            }
            std::thread::sleep(Duration::from_secs(2));
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "the preloaded archive was not loaded\n{}",
                berth_lines(&vm.transcript())
            )
        });
    assert_eq!(preloaded, "preloaded/busybox:1");
}
