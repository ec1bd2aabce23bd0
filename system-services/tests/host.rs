//! Host settings applied for real, as root, in a temporary root: write_files
//! (owner, permissions, append, a refused path), a sysctl, a tmpfs mount and a
//! loop-backed ext4 found by `LABEL=`, the hostname, bootcmd; then a reload.
//!
//! The process first unshares its own network, UTS and mount namespaces, so
//! `net.ipv4.ip_forward`, the hostname and the mounts change only here. That
//! needs a single-threaded process, hence its own `main` (`harness = false`).
//! Without root (or namespaces) it says why and passes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berthd::host::{self, HostPaths, Stage};

fn skip(why: &str) {
    berth_testkit::skip!("{why}");
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn settings(yaml: &str) -> host::Settings {
    let doc = berth_configs::parse_document(&"host-test.yml".into(), yaml);
    let loaded = berth_configs::load(vec![doc]);
    let errors = loaded.error_messages();
    assert!(errors.is_empty(), "{errors:?}");
    host::Settings::from_config(&loaded.config)
}

fn mounted(target: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let t = target.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(t.as_ref()))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is live and its length passed.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A loop device holding a fresh ext4 labelled `label`, if the tools are there.
struct Loop {
    device: String,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn ext4_loop(dir: &Path, label: &str) -> Result<Loop, String> {
    let image = dir.join("ext4.img");
    let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
    f.set_len(16 << 20).map_err(|e| e.to_string())?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label])
        .arg(&image))?;
    let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
    Ok(Loop { device })
}

fn main() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root (namespaces, mounts, sysctl, chown)");
    }
    // SAFETY: unshare has no memory arguments; this process is single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWNS) } != 0 {
        return skip(&format!(
            "cannot unshare namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: NUL-terminated literals; makes every mount here private to this namespace.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "making / private: {}",
        std::io::Error::last_os_error()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for d in ["etc", "var/log", "home/berth", "usr/bin", "run/berth"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nberth:x:1100:1100::/home/berth:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nberth:x:1100:\ndocker:x:999:berth\n",
    )
    .expect("group");
    std::fs::write(root.join("var/log/app.log"), "first\n").expect("log");
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").expect("hosts");

    let ext4 = match ext4_loop(dir.path(), "BERTHHOSTT") {
        Ok(l) => Some(l),
        Err(e) => {
            println!("host: no loop-backed ext4 case: {e}");
            None
        }
    };

    let marker = root.join("var/booted");
    let mut yaml = format!(
        "#cloud-config
hostname: host-test.example
bootcmd:
  - echo booted > {marker}
  - [/bin/sh, -c, 'exit 4']
write_files:
  - path: /home/berth/.ssh/note
    content: secret
    permissions: '0600'
    owner: berth:docker
  - path: /var/log/app.log
    content: \"second\\n\"
    append: true
  - path: /etc/b64
    encoding: b64
    content: aGVsbG8=
  - path: /usr/bin/evil
    content: nope
mounts:
  - [tmpfs, /mnt/scratch, tmpfs, 'size=1m,mode=0700', '0', '0']
  - [/dev/berth-no-such-disk, /mnt/missing, ext4]
berth:
  sysctl:
    net.ipv4.ip_forward: 1
    net.ipv4.no_such_key: 1
",
        marker = marker.display()
    );
    if ext4.is_some() {
        yaml.push_str("  modules: []\n");
        yaml = yaml.replace(
            "mounts:\n",
            "mounts:\n  - [LABEL=BERTHHOSTT, /mnt/data, ext4, 'defaults,noatime', '0', '2']\n",
        );
    }
    let settings = settings(&yaml);
    let paths = HostPaths {
        proc_sys: PathBuf::from("/proc/sys"),
        modules: None,
        dev: PathBuf::from("/dev"),
        sys_block: PathBuf::from("/sys/class/block"),
        ..HostPaths::new(&root, &root.join("run/berth"))
    };

    let report = host::apply(&host::Linux, &paths, &settings, Stage::Boot);
    for line in &report.done {
        println!("done: {line}");
    }
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    for p in &problems {
        println!("problem: {p}");
    }
    let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
    let shift = usize::from(ext4.is_some());
    let missing_mount = format!("mounts[{}]", 1 + shift);
    assert_eq!(
        fields,
        [
            "bootcmd[1]",
            "berth.sysctl.net.ipv4.no_such_key",
            missing_mount.as_str(),
            "write_files[3].path"
        ],
        "{problems:?}"
    );
    assert!(problems[3].contains("/usr/bin/evil") && problems[3].contains("read-only"));

    // write_files
    let note = root.join("home/berth/.ssh/note");
    let meta = std::fs::metadata(&note).expect("note");
    assert_eq!(std::fs::read_to_string(&note).expect("read"), "secret");
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (1100, 999));
    assert_eq!(
        std::fs::read_to_string(root.join("var/log/app.log")).expect("read"),
        "first\nsecond\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/b64")).expect("read"),
        "hello"
    );
    assert!(!root.join("usr/bin/evil").exists());
    // sysctl, in this process's own network namespace
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .expect("read")
            .trim(),
        "1"
    );
    // hostname, in this process's own UTS namespace
    assert_eq!(hostname(), "host-test.example");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).expect("read"),
        "host-test.example\n"
    );
    assert!(std::fs::read_to_string(root.join("etc/hosts"))
        .expect("read")
        .contains("host-test.example host-test"));
    // bootcmd
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("bootcmd ran")
            .trim(),
        "booted"
    );
    // mounts
    let scratch = root.join("mnt/scratch");
    assert!(mounted(&scratch), "tmpfs on {}", scratch.display());
    assert_eq!(
        std::fs::metadata(&scratch).expect("scratch").mode() & 0o777,
        0o700
    );
    let data = root.join("mnt/data");
    if ext4.is_some() {
        assert!(mounted(&data), "ext4 by label on {}", data.display());
        std::fs::write(data.join("x"), "on ext4").expect("write on ext4");
    }

    // A berthd restart in the same boot: nothing again (no second append, no bootcmd).
    std::fs::remove_file(&marker).expect("rm marker");
    let again = host::apply(&host::Linux, &paths, &settings, Stage::Boot);
    assert!(!marker.exists(), "bootcmd ran twice");
    assert_eq!(
        std::fs::read_to_string(root.join("var/log/app.log")).expect("read"),
        "first\nsecond\n"
    );
    assert!(
        again.done.is_empty(),
        "only the failed entries are retried: {:?}",
        again.done
    );

    // A reload that changes a file, the sysctl and the hostname.
    let changed = yaml
        .replace("content: secret", "content: changed")
        .replace("net.ipv4.ip_forward: 1", "net.ipv4.ip_forward: 0")
        .replace("hostname: host-test.example", "hostname: reloaded");
    let report = host::apply(
        &host::Linux,
        &paths,
        &self::settings(&changed),
        Stage::Reload,
    );
    println!("reload: {:?}", report.done);
    assert_eq!(std::fs::read_to_string(&note).expect("read"), "changed");
    assert_eq!(std::fs::metadata(&note).expect("note").uid(), 1100);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .expect("read")
            .trim(),
        "0"
    );
    assert_eq!(hostname(), "reloaded");
    assert!(!marker.exists(), "bootcmd does not run on reload");

    // Clean up the mounts (the namespace goes with the process anyway).
    for m in [&data, &scratch] {
        if mounted(m) {
            let c = std::ffi::CString::new(m.as_os_str().to_string_lossy().as_bytes())
                .expect("cstring");
            // SAFETY: a NUL-terminated path alive for the call.
            let r = unsafe { libc::umount2(c.as_ptr(), 0) };
            assert_eq!(
                r,
                0,
                "umount {}: {}",
                m.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    drop(ext4);
    println!("host: ok");
}
