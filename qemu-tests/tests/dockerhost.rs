//! Berth as a docker host people can live on, tried as a new user does it over
//! SSH: `docker run -v` of the user's own directories, mounts that appear
//! after boot, a disk attached after boot, `write_files` landing where users
//! look (the console, the engine's `/etc/docker`, another service with
//! `container:`), the engine's
//! RancherOS keys, a private registry whose CA comes from `ca_certs`,
//! `/etc/rc.local`, compose and the usual tools in the console.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{boot_ready, eventually, ok, poweroff, refused, service_ready};
use qemu_tests::{Artifacts, Boot, Config};

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry on 127.0.0.1 (10.0.2.2 from the VM) behind TLS
/// with a certificate from a CA the test makes; stopped when dropped.
struct TlsRegistry {
    registry: berth_testkit::registry::Registry,
    ca: String,
}

impl TlsRegistry {
    fn start(dir: &Path) -> TlsRegistry {
        let path = |name: &str| dir.join(name).display().to_string();
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth-test-ca",
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("ca.pem"),
            ],
        );
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=10.0.2.2",
                "-keyout",
                &path("registry.key"),
                "-out",
                &path("registry.csr"),
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:10.0.2.2,IP:127.0.0.1\n",
        )
        .expect("san");
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &path("registry.csr"),
                "-CA",
                &path("ca.pem"),
                "-CAkey",
                &path("ca.key"),
                "-CAcreateserial",
                "-extfile",
                &path("san.ext"),
                "-out",
                &path("registry.pem"),
            ],
        );
        let registry = berth_testkit::registry::Registry::start_tls(
            dir,
            berth_testkit::registry::Tls {
                certificate: &dir.join("registry.pem"),
                key: &dir.join("registry.key"),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
        TlsRegistry { registry, ca }
    }

    /// Pushes the busybox test image (gzip layers and a Docker v2 manifest,
    /// which docker 20.10 reads) as `test/busybox:latest`.
    fn push_busybox(&self) {
        let store = std::env::var_os("BERTH_IMAGE_STORE")
            .expect("BERTH_IMAGE_STORE names the built image store (`cargo xtask test` sets it)");
        // Recompressed first (the store's layers are zstd), then converted.
        let gzipped =
            std::env::temp_dir().join(format!("berth-busybox-gzip-{}", self.registry.port));
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-compress-format",
                "gzip",
                &format!(
                    "oci:{}:berth/busybox:latest",
                    Path::new(&store).join("images").display()
                ),
                &format!("oci:{}:busybox", gzipped.display()),
            ],
        );
        run(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--format",
                "v2s2",
                &format!("oci:{}:busybox", gzipped.display()),
                &format!(
                    "docker://127.0.0.1:{}/test/busybox:latest",
                    self.registry.port
                ),
            ],
        );
        let _ = std::fs::remove_dir_all(&gzipped);
    }
}

/// The cloud-config: a `mounts:` tmpfs, files for the console, the engine
/// and ntp, rc.local, the engine's RancherOS keys and the registry's CA.
fn user_data(key: &str, ca: &str) -> String {
    let ca: String = ca.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        r#"#cloud-config
hostname: berth-dockerhost
ssh_authorized_keys:
  - {key}
mounts:
  - [tmpfs, /mnt/scratch, tmpfs, "size=16m"]
write_files:
  - path: /etc/motd
    content: |
      Welcome to the dockerhost test.
  - path: /etc/docker/daemon.json
    content: |
      {{"insecure-registries": ["daemon-json.example:5000"]}}
  - path: /etc/chrony/berth-test.conf
    container: ntp
    content: |
      # written into the ntp service
  - path: /tmp/berth-test/setup.sh
    content: |
      echo run from /tmp
  - path: /etc/rc.local
    permissions: "0755"
    content: |
      #!/bin/sh
      echo "rc.local ran" > /home/berth/rc-local.txt
ca_certs:
  trusted:
    - |
{ca}rancher:
  docker:
    insecure_registry: [rancher-key.example:5000]
berth:
  state:
    autoformat: [/dev/vda]
"#
    )
}

#[test]
fn the_console_and_the_engine_share_the_users_paths_config_and_trust() {
    const TEST: &str = "the_console_and_the_engine_share_the_users_paths_config_and_trust";
    let Some(iso) = Artifacts::get(Artifacts::ISO, TEST) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = TlsRegistry::start(dir.path());
    registry.push_busybox();
    let image = format!("10.0.2.2:{}/test/busybox:latest", registry.registry.port);

    let port = qemu_tests::free_port().expect("port");
    let ssh = Ssh::new(dir.path(), port, "berth").expect("ssh key");
    let state = dir.path().join("state.img");
    qemu_tests::blank_disk(&state, 4 << 30).expect("state disk");
    let seed = dir.path().join("seed.iso");
    qemu_tests::nocloud_seed(
        &seed,
        &user_data(ssh.public_key(), &registry.ca),
        "instance-id: berth-dockerhost-1\n",
    )
    .expect("seed");
    let config = |name: &str| {
        Config::new(name, Boot::Cdrom(iso.clone()))
            .drive(&state, false)
            .drive(&seed, true)
            .forward(port, 22)
    };
    let mut vm = boot_ready(&config("dockerhost"), &ssh);

    // The console is Berth's, with the tools people reach for.
    assert!(ok(&vm, &ssh, "cat /etc/os-release").contains("Berth"));
    ok(
        &vm,
        &ssh,
        "for t in docker docker-compose curl wget mount umount less vi ip ping ps top tar gzip ss; do command -v $t >/dev/null || { echo missing $t; exit 1; }; done",
    );
    assert!(ok(&vm, &ssh, "docker compose version").contains("1.29"));

    // write_files: the motd in the console, a file inside the ntp service
    // (which starts after the ready line).
    service_ready(&vm, &ssh, "ntp");
    assert_eq!(
        ok(&vm, &ssh, "cat /etc/motd").trim(),
        "Welcome to the dockerhost test."
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "sudo cat /proc/$(pgrep -x chronyd | head -1)/root/etc/chrony/berth-test.conf"
        )
        .trim(),
        "# written into the ntp service"
    );
    // rc.local ran in the console at the end of boot.
    assert_eq!(
        eventually(
            &vm,
            &ssh,
            "cat /home/berth/rc-local.txt",
            Duration::from_secs(120)
        )
        .trim(),
        "rc.local ran"
    );

    // The engine: daemon.json from write_files, with the RancherOS key merged in.
    let info = ok(&vm, &ssh, "docker info 2>/dev/null");
    for registry in ["daemon-json.example:5000", "rancher-key.example:5000"] {
        assert!(
            info.contains(registry),
            "{registry} in docker info:\n{info}"
        );
    }

    // The private registry's CA, from ca_certs: docker pull and berth image pull.
    let pulled = ok(&vm, &ssh, &format!("docker pull {image}"));
    assert!(pulled.contains("Downloaded newer image") || pulled.contains("up to date"));
    ok(&vm, &ssh, &format!("sudo berth image pull {image}"));
    ok(&vm, &ssh, &format!("docker tag {image} busybox:latest"));

    // Containers run under crun by default; runc is there when asked for.
    assert!(
        info.contains("Default Runtime: crun"),
        "crun is the default runtime:\n{info}"
    );
    ok(&vm, &ssh, "docker run --rm busybox true");
    ok(&vm, &ssh, "docker run --rm --runtime runc busybox true");

    // The engine's socket handed to a container the way Portainer, Traefik and CI
    // runners are given it: a socket there, not a directory dockerd made up.
    for path in ["/var/run/docker.sock", "/run/docker.sock"] {
        ok(
            &vm,
            &ssh,
            &format!("docker run --rm -v {path}:/var/run/docker.sock busybox test -S /var/run/docker.sock"),
        );
    }

    // docker run -v of the user's own directories, both ways (/tmp is emptied at
    // each boot, so the check after the reboot leaves it out).
    for base in ["/home/berth", "/opt", "/srv", "/tmp"] {
        ok(
            &vm,
            &ssh,
            &format!(
                "sudo mkdir -p {base}/site && echo 'hi from {base}' | sudo tee {base}/site/index.html >/dev/null"
            ),
        );
        assert_eq!(
            ok(
                &vm,
                &ssh,
                &format!("docker run --rm -v {base}/site:/s busybox cat /s/index.html")
            )
            .trim(),
            format!("hi from {base}")
        );
        ok(
            &vm,
            &ssh,
            &format!("docker run --rm -v {base}/site:/s busybox sh -c 'echo back > /s/written'"),
        );
        assert_eq!(
            ok(&vm, &ssh, &format!("cat {base}/site/written")).trim(),
            "back"
        );
    }

    // The time zone files compose files bind from the host are there, UTC as in
    // the console.
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /etc/localtime:/etc/localtime:ro -v /etc/timezone:/etc/timezone:ro busybox sh -c 'cat /etc/timezone; date +%Z'"
        ),
        ok(&vm, &ssh, "cat /etc/timezone; date +%Z")
    );

    // The machine's id: one for the console and the engine, kept across the
    // reboot below.
    let machine_id = ok(&vm, &ssh, "cat /etc/machine-id").trim().to_string();
    assert!(
        machine_id.len() == 32 && machine_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{machine_id:?}"
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /etc/machine-id:/etc/machine-id:ro busybox cat /etc/machine-id"
        )
        .trim(),
        machine_id
    );

    // The host's OS and name, for the engine and for agents given them.
    assert!(
        info.contains("Operating System: Berth"),
        "the engine names Berth:\n{info}"
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /etc/os-release:/host/etc/os-release:ro -v /etc/hostname:/h:ro busybox sh -c 'grep ^NAME= /host/etc/os-release; cat /h'"
        ),
        "NAME=\"Berth\"\nberth-dockerhost\n"
    );

    // Berth's own logs, for a log shipper given /var/log (or /var/log/berth),
    // and in the console.
    ok(
        &vm,
        &ssh,
        "sudo grep -q berthd::daemon /var/log/berth/berthd.log",
    );
    ok(
        &vm,
        &ssh,
        "docker run --rm -v /var/log:/var/log:ro busybox grep -q berthd::daemon /var/log/berth/berthd.log",
    );

    // A host path outside the user's paths is refused, not kept in the engine's
    // own layer (memory, gone at the next boot).
    for path in ["/data", "/var/lib/mysql"] {
        let said = refused(
            &vm,
            &ssh,
            &format!("docker run --rm -v {path}:/d busybox true"),
        );
        assert!(
            said.contains(&format!("mkdir {path}: read-only file system")),
            "{said}"
        );
    }

    // A write_files entry in /tmp, as cloud-init users write a script there: it is
    // in the console and in the engine's /tmp alike.
    assert_eq!(
        ok(&vm, &ssh, "sh /tmp/berth-test/setup.sh").trim(),
        "run from /tmp"
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /tmp/berth-test:/t busybox sh /t/setup.sh"
        )
        .trim(),
        "run from /tmp"
    );

    // Mounts made after the engine started: the `mounts:` tmpfs, and an ext4
    // image loop-mounted by hand in the console.
    ok(
        &vm,
        &ssh,
        "echo scratch | sudo tee /mnt/scratch/file >/dev/null",
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /mnt/scratch:/m busybox cat /m/file"
        )
        .trim(),
        "scratch"
    );
    let content = dir.path().join("disk-content");
    std::fs::create_dir_all(&content).expect("mkdir");
    std::fs::write(content.join("file"), "on-disk\n").expect("file");
    let disk = dir.path().join("disk.img");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-d",
            &content.display().to_string(),
            &disk.display().to_string(),
            "4M",
        ],
    );
    let copied = ssh
        .run_with_input("cat > /home/berth/disk.img", Some(&disk))
        .expect("ssh");
    assert!(
        copied.status.success(),
        "copying the disk image: {copied:?}"
    );
    ok(
        &vm,
        &ssh,
        "sudo mkdir -p /mnt/disk && sudo mount -o loop /home/berth/disk.img /mnt/disk",
    );
    assert_eq!(
        ok(
            &vm,
            &ssh,
            "docker run --rm -v /mnt/disk:/d busybox cat /d/file"
        )
        .trim(),
        "on-disk"
    );
    ok(&vm, &ssh, "sudo umount /mnt/disk");

    // A disk attached while the engine runs (a cloud volume, a USB stick)
    // reaches the engine's /dev: `docker run --device` and privileged
    // containers see it and read what is on it. It holds a labelled ext4
    // (whose first KiB is not its own: the marker goes there), and its label
    // reaches the console's /dev/disk/by-label as the kernel announces the
    // disk: console-init's own scan, without the announcement, is five
    // minutes apart, longer than this test waits.
    let hot = dir.path().join("hot.img");
    std::fs::write(&hot, vec![0u8; 4 << 20]).expect("hot.img");
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "BERTHHOT"])
        .arg(&hot)
        .output()
        .expect("mkfs.ext4");
    assert!(mkfs.status.success(), "mkfs.ext4: {mkfs:?}");
    {
        use std::io::Write as _;
        let mut image = std::fs::OpenOptions::new()
            .write(true)
            .open(&hot)
            .expect("hot.img");
        image.write_all(b"BERTHHOT").expect("marker");
    }
    vm.monitor(&format!(
        "drive_add 0 if=none,id=hot0,format=raw,file={}",
        hot.display()
    ))
    .expect("drive_add");
    vm.monitor("device_add virtio-blk-pci,drive=hot0,id=hotdisk,serial=berthhot")
        .expect("device_add");
    let name = eventually(
        &vm,
        &ssh,
        "for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = berthhot ] && basename $d; done | grep .",
        Duration::from_secs(60),
    );
    let node = format!("/dev/{}", name.trim());
    eventually(
        &vm,
        &ssh,
        &format!("docker run --rm --device {node} busybox head -c 8 {node} | grep -x BERTHHOT"),
        Duration::from_secs(60),
    );
    ok(
        &vm,
        &ssh,
        &format!("docker run --rm --privileged busybox test -b {node}"),
    );
    let linked = eventually(
        &vm,
        &ssh,
        "readlink /dev/disk/by-label/BERTHHOT",
        Duration::from_secs(60),
    );
    assert_eq!(
        linked.trim().rsplit('/').next(),
        Some(name.trim()),
        "{linked}"
    );

    // Compose: two services up, then down.
    ok(
        &vm,
        &ssh,
        "mkdir -p ~/app && printf 'version: \"3\"\\nservices:\\n  one:\\n    image: busybox:latest\\n    command: sleep 600\\n  two:\\n    image: busybox:latest\\n    command: sleep 600\\n' > ~/app/docker-compose.yml",
    );
    ok(&vm, &ssh, "cd ~/app && docker compose up -d");
    let running = ok(&vm, &ssh, "docker ps --format '{{.Names}}'");
    assert!(
        running.contains("app_one_1") && running.contains("app_two_1"),
        "compose started both:\n{running}"
    );
    ok(&vm, &ssh, "cd ~/app && docker compose down");
    assert!(!ok(&vm, &ssh, "docker ps -a --format '{{.Names}}'").contains("app_"));

    // A daemon.json that names its own default runtime wins over crun (dockerd
    // would refuse the setting given both ways).
    ok(
        &vm,
        &ssh,
        r#"echo '{"insecure-registries": ["daemon-json.example:5000"], "default-runtime": "runc"}' | sudo tee /etc/docker/daemon.json >/dev/null && sudo berth service restart docker"#,
    );
    eventually(
        &vm,
        &ssh,
        "docker info 2>/dev/null | grep -q 'Default Runtime: runc'",
        Duration::from_secs(180),
    );
    ok(&vm, &ssh, "docker run --rm busybox true");

    // The data survives a reboot (the same disk, the ISO again).
    poweroff(vm, &ssh);
    let vm = boot_ready(&config("dockerhost-again"), &ssh);
    // write_files put the config's daemon.json back: crun again.
    assert!(eventually(
        &vm,
        &ssh,
        "docker info 2>/dev/null",
        Duration::from_secs(180)
    )
    .contains("Default Runtime: crun"));
    assert_eq!(ok(&vm, &ssh, "cat /etc/machine-id").trim(), machine_id);
    // /tmp is in memory: what the user left there is gone, write_files' file is back.
    ok(
        &vm,
        &ssh,
        "test ! -e /tmp/site && test -f /tmp/berth-test/setup.sh",
    );
    for base in ["/home/berth", "/opt", "/srv"] {
        assert_eq!(
            ok(
                &vm,
                &ssh,
                &format!("docker run --rm -v {base}/site:/s busybox cat /s/written")
            )
            .trim(),
            "back"
        );
    }
}
