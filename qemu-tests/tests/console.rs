//! The everyday use of Berth, end to end: boot the ISO with a NoCloud seed
//! carrying a key made for the test, log in with the real OpenSSH client,
//! see the cloud-config applied to the host, and run containers in the user
//! engine — which keep running across a reboot when they ask to, and across
//! switching the console and the engine. Along the way: a RancherOS-style
//! two-NIC network config reaches ready, every service stops on SIGTERM at
//! `berth poweroff`, the second boot goes through the formatted state disk's
//! MBR with the BIOS's own boot order, and the engine uses the machine's
//! hostname and resolver.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{
    boot_ready, busybox_archive, docker_load, expect, ok, refused, service_ready, Archive,
    BOOT_TIMEOUT,
};
use qemu_tests::{berth_lines, Artifacts, Boot, Config, Vm, READY_MARKER};

/// A second NIC, on an isolated user network of its own.
const SECOND_MAC: &str = "52:54:00:c0:00:02";

/// The image store `cargo xtask test` builds the system images into, or
/// `None` after recording why the test skips.
fn image_store() -> Option<PathBuf> {
    let store = std::env::var_os(STORE_ENV).map(PathBuf::from);
    if store.is_none() {
        berth_testkit::skip!(
            "{STORE_ENV} is not set (`cargo xtask test` builds the images and sets it)"
        );
    }
    store
}

const STORE_ENV: &str = "BERTH_IMAGE_STORE";

#[test]
fn ssh_in_see_the_config_applied_and_run_containers_across_a_reboot() {
    const TEST: &str = "ssh_in_see_the_config_applied_and_run_containers_across_a_reboot";
    let (Some(iso), Some(_)) = (Artifacts::get(Artifacts::ISO, TEST), image_store()) else {
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
  # Exact keys for both NICs next to the built-in `eth*` glob, which then
  # configures none: readiness must wait on eth0's lease, not on the glob.
  network:
    interfaces:
      eth0:
        dhcp: true
      eth1:
        address: 10.0.3.15/24
        mtu: 1400
  services:
    ntp:
      mem_limit: 96m
      pids_limit: 40
"#,
        key = ssh.public_key()
    );
    qemu_tests::nocloud_seed(&seed, &user_data, "instance-id: berth-ssh-1\n").expect("seed");
    let config = Config::new("ssh", Boot::Cdrom(iso.clone()))
        .drive(&state, false)
        .drive(&seed, true)
        .forward(port, 22)
        .nic(SECOND_MAC, "10.0.3.0/24");
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
    assert_eq!(
        ok(&vm, &ssh, "ip -4 -o addr show dev eth1 | awk '{print $4}'").trim(),
        "10.0.3.15/24"
    );
    assert_eq!(ok(&vm, &ssh, "cat /sys/class/net/eth1/mtu").trim(), "1400");
    // A service's limits are in its cgroup (v2 here; the hosts that run the
    // other tests have v1).
    let cgroup = "/proc/1/root/sys/fs/cgroup/berth/ntp";
    service_ready(&vm, &ssh, "ntp");
    assert_eq!(
        ok(&vm, &ssh, &format!("sudo cat {cgroup}/memory.max")).trim(),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        ok(&vm, &ssh, &format!("sudo cat {cgroup}/pids.max")).trim(),
        "40"
    );
    // The built-in `cpu_shares: 128` (merged under this config's limits),
    // as cgroup v2's weight: runc's mapping puts 128 shares at 21, the
    // default 1024 at 100.
    assert_eq!(
        ok(&vm, &ssh, &format!("sudo cat {cgroup}/cpu.weight")).trim(),
        "21"
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "sudo cat /proc/1/root/sys/fs/cgroup/berth/console/cpu.weight"
        )
        .trim(),
        "100"
    );
    // The system images' identical files are one inode in the root
    // (iso/src/hardlink.rs): libc is in the console, console-busybox,
    // docker, podman and ntp images, and every container maps the same pages.
    let libc = ok(
        &vm,
        &ssh,
        "sudo sh -c 'stat -c \"%i %h\" /proc/1/root/usr/share/berth/layers/*/lib/x86_64-linux-gnu/libc.so.6'",
    );
    let copies: Vec<&str> = libc.lines().collect();
    assert_eq!(copies.len(), 5, "libc in the system images:\n{libc}");
    assert!(
        copies.iter().all(|line| *line == copies[0]) && copies[0].ends_with(" 5"),
        "libc is not one inode with five names across the system images:\n{libc}"
    );
    // The modules ship without Debian's signatures (iso::modules::unsigned;
    // docs/security.md): the kernel marks each loaded one `(E)`, from the
    // initramfs (virtio_blk) and from the root (virtio_net, overlay) alike.
    let modules = ok(&vm, &ssh, "cat /proc/modules");
    for module in ["virtio_blk", "virtio_net", "overlay"] {
        assert!(
            modules
                .lines()
                .any(|l| l.starts_with(&format!("{module} "))),
            "{module} is not loaded:\n{modules}"
        );
    }
    let signed: Vec<&str> = modules.lines().filter(|l| !l.ends_with("(E)")).collect();
    assert!(signed.is_empty(), "modules loaded signed: {signed:?}");
    // What can hold secrets is root's: an unprivileged shell in the console
    // cannot read the cached user-data or what berthd applied, and the
    // applied state holds hashes, not the files' contents.
    for path in [
        "/var/lib/berth/config/user-data.yml",
        "/run/berth/host/applied.json",
    ] {
        let out = ssh.run(&format!("cat {path}")).expect("ssh");
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{path} is readable without sudo: {out:?}"
        );
        assert_eq!(
            ok(&vm, &ssh, &format!("sudo stat -c %a {path}")).trim(),
            "600",
            "{path}"
        );
    }
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "sudo stat -c %a /var/lib/berth/config /run/berth/host"
        ),
        "700\n700\n"
    );
    let applied = ok(&vm, &ssh, "sudo cat /run/berth/host/applied.json");
    assert!(
        applied.contains("sha256:") && !applied.contains("written by write_files"),
        "{applied}"
    );
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
    {
        let archive = busybox_archive(
            dir.path(),
            Archive::Docker {
                tag: "busybox:latest",
            },
        );
        docker_load(&vm, &ssh, &archive);
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
        let before = started_at(&vm, &ssh, "keeper");
        ok(
            &vm,
            &ssh,
            "sudo sh -c 'nohup berth service restart console >/dev/null 2>&1 &'",
        );
        expect(&mut vm, "console: started", BOOT_TIMEOUT);
        ssh.wait(BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", berth_lines(&vm.transcript())));
        assert_eq!(
            started_at(&vm, &ssh, "keeper"),
            before,
            "the user container was restarted with the console"
        );
    }
    // An archive dropped into the engine's preload directory on the host is
    // loaded at the next boot.
    let preload = busybox_archive(
        dir.path(),
        Archive::Docker {
            tag: "preloaded/busybox:1",
        },
    );
    let out = ssh
        .run_with_input(
            "sudo sh -c 'cat > /proc/1/root/var/lib/berth/preload/docker/preloaded.tar'",
            Some(&preload),
        )
        .expect("ssh");
    assert!(out.status.success(), "copying the preload archive: {out:?}");
    // And one elsewhere on the state partition, listed in the config (set from
    // the console, as a person would).
    let listed = busybox_archive(
        dir.path(),
        Archive::Docker {
            tag: "listed/busybox:1",
        },
    );
    let out = ssh
        .run_with_input("sudo sh -c 'cat > /opt/listed.tar'", Some(&listed))
        .expect("ssh");
    assert!(out.status.success(), "copying the listed archive: {out:?}");
    ok(
        &vm,
        &ssh,
        "sudo berth config set berth.engine.preload '[/opt/listed.tar]'",
    );
    // The session may end with the machine before ssh hears the exit code
    // (as in steps::poweroff, which this cannot use: the transcript is read after).
    let _ = ssh.run("sudo berth poweroff");
    vm.wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    // Every service, the engine included, stops on SIGTERM; none is killed
    // after its grace period.
    let transcript = vm.transcript();
    assert!(
        !transcript.contains("still running after its grace period"),
        "a service had to be killed at shutdown:\n{}",
        berth_lines(&transcript)
    );
    drop(vm);

    // Same disk, no seed: the cached config and the engine's data are on state.
    // The firmware's own boot order tries that disk first: the boot code of
    // the protective MBR Berth wrote hands over to the CD (int 18h) rather
    // than hang SeaBIOS.
    let config = Config::new("ssh-again", Boot::Cdrom(iso))
        .drive(&state, false)
        .forward(port, 22)
        .firmware_boot_order();
    let mut vm = boot_ready(&config, &ssh);
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
    ssh.wait_for(
        "docker image inspect preloaded/busybox:1 listed/busybox:1 >/dev/null",
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| {
        panic!(
            "the preloaded archives were not loaded: {e}\n{}",
            berth_lines(&vm.transcript())
        )
    });

    switch_consoles_and_back(&mut vm, &ssh);
    switch_engines_and_back(&vm, &ssh, dir.path());
    engine_uses_the_machines_name_and_resolver(&vm, &ssh);
    scp_and_a_password_login(&vm, &ssh, dir.path());
}

/// `openssl passwd -6 -salt berthtestsalt open-sesame-42`.
const CAROL_HASH: &str =
    "$6$berthtestsalt$LYhhzcChFVLxRm3gWaavl619ZDxfVCcl.DoiTaGdRNc3TAk5yOsrix5G.FH5shbHS.UqlyGqRcGzHN4YqRTf/1";

/// What users do with OpenSSH besides a shell: `scp` (the SFTP protocol, so
/// the console's sftp-server), and a password login once the config allows
/// it, for a user the config gives a password hash (the session runs
/// `sshd-session` and `sshd-auth`, which check it against /etc/shadow).
fn scp_and_a_password_login(vm: &Vm, ssh: &Ssh, dir: &Path) {
    let local = dir.join("scp-payload.txt");
    let payload = "copied with scp\n".repeat(2000);
    std::fs::write(&local, &payload).expect("payload");
    ssh.copy_to(&local, "/home/berth/scp-payload.txt")
        .unwrap_or_else(|e| panic!("scp: {e}\n{}", berth_lines(&vm.transcript())));
    assert_eq!(ok(vm, ssh, "cat /home/berth/scp-payload.txt"), payload);

    ok(
        vm,
        ssh,
        "sudo berth config set berth.ssh.password_authentication true",
    );
    ok(
        vm,
        ssh,
        &format!(
            "sudo berth config set users '[default, {{name: carol, lock_passwd: false, hashed_passwd: \"{CAROL_HASH}\"}}]'"
        ),
    );
    // console-init reads the config when it starts. The session ends with
    // the console it runs in.
    let _ = ssh.run("sudo berth service restart console");
    ssh.wait_for("id -un carol", Duration::from_secs(180))
        .unwrap_or_else(|e| {
            panic!(
                "the console did not come back with carol: {e}\n{}",
                berth_lines(&vm.transcript())
            )
        });
    let carol = ssh.as_user("carol");
    let wrong = carol
        .run_with_password("not-her-password", "id -un")
        .expect("ssh");
    assert!(
        !wrong.status.success(),
        "a wrong password logged in: {wrong:?}"
    );
    let out = carol
        .run_with_password("open-sesame-42", "id -un")
        .expect("ssh");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "carol",
        "carol's password login: {out:?}\n{}",
        berth_lines(&vm.transcript())
    );
}

/// The user engine is the machine's: `docker info` names the machine (swarm
/// node names come from it) and follows a change of the hostname; dockerd
/// resolves names with the host's resolv.conf, not a copy baked into its
/// image.
fn engine_uses_the_machines_name_and_resolver(vm: &Vm, ssh: &Ssh) {
    let info_name = "docker info --format '{{.Name}}'";
    let hostname = ok(vm, ssh, "hostname");
    assert_eq!(ok(vm, ssh, info_name).trim(), hostname.trim());
    let host = ok(vm, ssh, "cat /host/etc/resolv.conf");
    let dockerd = ok(
        vm,
        ssh,
        "sudo sh -c 'cat /proc/$(pidof dockerd)/root/etc/resolv.conf'",
    );
    assert_eq!(dockerd, host, "dockerd's resolv.conf is not the host's");
    assert!(host.contains("nameserver 10.0.2.3"), "{host}");
    ok(
        vm,
        ssh,
        "sudo berth config set hostname renamed-by-the-test",
    );
    ssh.wait_for(
        &format!("test \"$({info_name})\" = renamed-by-the-test"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| {
        panic!(
            "docker info does not follow the hostname: {e}\n{}",
            berth_lines(&vm.transcript())
        )
    });
}

fn started_at(vm: &Vm, ssh: &Ssh, container: &str) -> String {
    ok(
        vm,
        ssh,
        &format!("docker inspect --format '{{{{.State.StartedAt}}}}' {container}"),
    )
    .trim()
    .to_string()
}

/// `berth console switch NAME` as a person types it, in a session of the
/// console being replaced: berthd has the request before that console stops,
/// and the session ends with it (so the exit status says nothing).
fn switch_console(ssh: &Ssh, name: &str) {
    let out = ssh
        .run(&format!("sudo berth console switch {name}"))
        .expect("ssh");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("switching the console to `{name}`")),
        "berth console switch {name}: {out:?}"
    );
}

/// Two scans of host keys (`TYPE BASE64` lines) show the same machine: they
/// share at least one key type, and every type both offer has the same key.
/// (ssh-keyscan under emulation sometimes misses a type; that is no change.)
fn same_identity(a: &[String], b: &[String]) -> bool {
    let key_of = |keys: &[String], kind: &str| {
        keys.iter()
            .find(|k| k.split(' ').next() == Some(kind))
            .cloned()
    };
    let mut common = 0;
    for key in a {
        let kind = key.split(' ').next().unwrap_or_default();
        if let Some(other) = key_of(b, kind) {
            if &other != key {
                return false;
            }
            common += 1;
        }
    }
    common > 0
}

/// `berth console switch` typed in the console it replaces: the session ends,
/// the busybox+dropbear console comes up with the same users, keys, host
/// identity and /home, and a user container never notices.
fn switch_consoles_and_back(vm: &mut Vm, ssh: &Ssh) {
    const WAIT: Duration = Duration::from_secs(180);
    let keeper = started_at(vm, ssh, "keeper");
    let identity = ssh.host_keys().expect("ssh-keyscan");
    assert!(!identity.is_empty(), "no host keys offered");
    ok(vm, ssh, "echo kept across consoles > /home/berth/kept.txt");
    ok(vm, ssh, "berth console list | grep -q busybox");
    switch_console(ssh, "busybox");
    ssh.wait_for(
        "test -x /usr/sbin/dropbear && ! test -e /usr/sbin/sshd",
        WAIT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "no login on the busybox console: {e}\n{}",
            berth_lines(&vm.transcript())
        )
    });
    assert_eq!(ok(vm, ssh, "id -un").trim(), "berth");
    ok(vm, ssh, "sudo -n true");
    assert_eq!(ok(vm, ssh, "hostname").trim(), "berth-ssh-test");
    assert_eq!(
        ok(vm, ssh, "cat /home/berth/kept.txt").trim(),
        "kept across consoles"
    );
    // The host's processes are visible (host pid namespace): the user container runs on.
    ok(vm, ssh, "ps | grep -q '[s]leep 100000'");
    // Berth's own logs, read-only, as in the default console.
    ok(
        vm,
        ssh,
        "sudo grep -q berthd::daemon /var/log/berth/berthd.log",
    );
    let refused = ssh.try_password().expect("ssh");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("Permission denied (publickey)"),
        "dropbear took a password login: {refused:?}"
    );
    let dropbear_keys = ssh.host_keys().expect("ssh-keyscan");
    assert!(
        same_identity(&identity, &dropbear_keys),
        "the machine's SSH identity changed with the console:\nOpenSSH {identity:#?}\ndropbear {dropbear_keys:#?}"
    );

    switch_console(ssh, "default");
    ssh.wait_for("test -x /usr/sbin/sshd", WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "no login on the default console: {e}\n{}",
                berth_lines(&vm.transcript())
            )
        });
    let again = ssh.host_keys().expect("ssh-keyscan");
    assert!(
        same_identity(&identity, &again),
        "the SSH identity changed after switching back:\n{identity:#?}\n{again:#?}"
    );
    assert_eq!(
        started_at(vm, ssh, "keeper"),
        keeper,
        "the user container was restarted by the console switches"
    );
}

/// `berth engine switch podman` and back: each engine keeps its own images,
/// and the docker CLI in the console drives whichever runs.
fn switch_engines_and_back(vm: &Vm, ssh: &Ssh, dir: &Path) {
    let images = |ssh: &Ssh| {
        ok(
            vm,
            ssh,
            "docker image ls --format '{{.Repository}}:{{.Tag}}'",
        )
    };
    let docker_images = images(ssh);
    assert!(docker_images.contains("busybox:latest"), "{docker_images}");

    let out = ok(vm, ssh, "sudo berth engine switch podman");
    assert!(out.contains("`podman` is ready"), "{out}");
    // podman too names itself after the machine.
    assert_eq!(
        ok(vm, ssh, "docker info --format '{{.Name}}'").trim(),
        ok(vm, ssh, "hostname").trim()
    );
    let podman_images = images(ssh);
    assert!(
        !podman_images.contains("busybox:latest"),
        "podman sees docker's images: {podman_images}"
    );
    let archive = busybox_archive(
        dir,
        Archive::Docker {
            tag: "podman-only/busybox:1",
        },
    );
    docker_load(vm, ssh, &archive);
    assert!(images(ssh).contains("podman-only/busybox:1"));
    assert_eq!(
        ok(
            vm,
            ssh,
            "docker run --rm podman-only/busybox:1 echo hi from podman"
        )
        .trim(),
        "hi from podman"
    );
    ok(
        vm,
        ssh,
        "docker run --rm -v /var/run/docker.sock:/var/run/docker.sock podman-only/busybox:1 test -S /var/run/docker.sock",
    );
    // Berth's logs, for a log shipper given /var/log, as under docker.
    ok(
        vm,
        ssh,
        "docker run --rm -v /var/log:/var/log:ro podman-only/busybox:1 grep -q berthd::daemon /var/log/berth/berthd.log",
    );
    // podman's own filesystem is read-only: a host path outside the user's paths
    // is refused; a network it makes is kept with its images (checked below,
    // after a switch away and back recreates the engine's container).
    let said = refused(
        vm,
        ssh,
        "docker run --rm -v /data:/d podman-only/busybox:1 true",
    );
    assert!(
        said.contains("mkdir /data: read-only file system"),
        "{said}"
    );
    ok(vm, ssh, "docker network create podnet");

    let out = ok(vm, ssh, "sudo berth engine switch docker");
    assert!(out.contains("`docker` is ready"), "{out}");
    let back = images(ssh);
    assert!(
        back.contains("busybox:latest") && !back.contains("podman-only"),
        "docker's images after the switch back: {back}"
    );
    ok(vm, ssh, "sudo berth engine switch podman");
    assert!(
        images(ssh).contains("podman-only/busybox:1"),
        "podman's images were not kept"
    );
    let networks = ok(vm, ssh, "docker network ls --format '{{.Name}}'");
    assert!(
        networks.lines().any(|n| n == "podnet"),
        "podman's network was not kept: {networks}"
    );
    ok(vm, ssh, "sudo berth engine switch docker");
}
