//! The [`Sys`] of tests: it writes down what would have happened.

use super::*;

/// A [`Sys`] that records calls instead of making them, for tests.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Vec<String>,
    /// What `mounts()` returns.
    pub mount_table: Vec<MountEntry>,
    /// Children `wait_any` reaps, in order; then `NoChildren`.
    pub children: Vec<i32>,
    /// `umount` fails with EBUSY for these.
    pub busy: Vec<PathBuf>,
    /// `mount` fails with this errno for these targets.
    pub mount_fails: Vec<(PathBuf, i32)>,
    /// `load_module` fails with this errno for paths ending like this.
    pub module_fails: Vec<(String, i32)>,
    /// Exit code of chrooted commands.
    pub chroot_exit: i32,
    /// Number of the next loop device `attach_loop` hands out.
    pub next_loop: u32,
}

impl Recording {
    fn record(&mut self, call: String) {
        self.calls.push(call);
    }
}

impl Sys for Recording {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()> {
        let mut f = Vec::new();
        for (bit, name) in [
            (libc::MS_RDONLY, "ro"),
            (libc::MS_BIND, "bind"),
            (libc::MS_MOVE, "move"),
            (libc::MS_REC, "rec"),
            (libc::MS_SHARED, "shared"),
            (libc::MS_REMOUNT, "remount"),
            (libc::MS_NOSUID, "nosuid"),
            (libc::MS_NODEV, "nodev"),
            (libc::MS_NOEXEC, "noexec"),
        ] {
            if flags & bit != 0 {
                f.push(name);
            }
        }
        self.record(format!(
            "mount {source} {} {fstype} [{}] {data}",
            target.display(),
            f.join(",")
        ));
        match self.mount_fails.iter().find(|(t, _)| t == target) {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }

    fn umount(&mut self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let detach = if flags & libc::MNT_DETACH != 0 {
            " detach"
        } else {
            ""
        };
        self.record(format!("umount {}{detach}", target.display()));
        if self.busy.iter().any(|b| b == target) {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            Ok(())
        }
    }

    fn load_module(&mut self, path: &Path, compressed: bool, params: &str) -> io::Result<()> {
        let c = if compressed { " compressed" } else { "" };
        let p = if params.is_empty() {
            String::new()
        } else {
            format!(" [{params}]")
        };
        self.record(format!("load {}{c}{p}", path.display()));
        let p = path.to_string_lossy();
        match self.module_fails.iter().find(|(end, _)| p.ends_with(end)) {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }

    fn attach_loop(&mut self, file: &Path, dev_dir: &Path) -> io::Result<LoopDevice> {
        self.record(format!("loop {}", file.display()));
        let node = dev_dir.join(format!("loop{}", self.next_loop));
        self.next_loop += 1;
        Ok(LoopDevice { node, fd: None })
    }

    fn reread_partitions(&mut self, disk: &Path) -> io::Result<()> {
        self.record(format!("rereadpt {}", disk.display()));
        Ok(())
    }

    fn resize_partition(
        &mut self,
        disk: &Path,
        number: u32,
        start: u64,
        bytes: u64,
    ) -> io::Result<()> {
        self.record(format!(
            "resizepart {} {number} {start} {bytes}",
            disk.display()
        ));
        Ok(())
    }

    fn resize_ext4(&mut self, mountpoint: &Path, blocks: u64) -> io::Result<()> {
        self.record(format!("resize_ext4 {} {blocks}", mountpoint.display()));
        Ok(())
    }

    fn run_chrooted(&mut self, root: &Path, argv: &[&str]) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.record(format!("chroot-run {} {}", root.display(), argv.join(" ")));
        Ok(ExitStatus::from_raw(self.chroot_exit << 8))
    }

    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", dir.display()));
        Ok(())
    }

    fn chroot(&mut self, dir: &Path) -> io::Result<()> {
        self.record(format!("chroot {}", dir.display()));
        Ok(())
    }

    fn kill(&mut self, pid: i32, sig: i32) -> io::Result<()> {
        let name = match sig {
            libc::SIGTERM => "TERM".to_string(),
            libc::SIGKILL => "KILL".to_string(),
            other => other.to_string(),
        };
        self.record(format!("kill {pid} {name}"));
        Ok(())
    }

    fn wait_any(&mut self, _timeout: Duration) -> Wait {
        if self.children.is_empty() {
            self.record("wait -> none".into());
            Wait::NoChildren
        } else {
            let pid = self.children.remove(0);
            self.record(format!("wait -> {pid}"));
            Wait::Reaped(pid)
        }
    }

    fn sync(&mut self) {
        self.record("sync".into());
    }

    fn mounts(&mut self) -> io::Result<Vec<MountEntry>> {
        Ok(self.mount_table.clone())
    }

    fn reboot(&mut self, action: Action) -> io::Result<()> {
        self.record(format!("reboot {}", action.name()));
        Ok(())
    }
}
