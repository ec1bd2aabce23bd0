//! Cgroups a service made below its own: an engine (dockerd, podman) puts its
//! containers in child cgroups of the engine service's cgroup. libcontainer's
//! delete kills the processes of the service's own cgroup and removes it, but
//! a cgroup with children cannot be removed, so an engine that died with
//! containers running — or left empty parents behind — would leave a service
//! that can never be created again. These are cleared first: every process in
//! them killed, then the cgroups removed, deepest first.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted (v2, and each v1 controller), from
/// `/proc/self/mountinfo`.
pub fn hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_hierarchies(&text)
}

fn parse_hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .collect()
}

/// The child cgroups of `dir`, deepest first.
fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let child = entry.path();
            out.extend(descendants(&child));
            out.push(child);
        }
    }
    out
}

/// Kills every process in the cgroup `relative` itself (every hierarchy) and
/// waits up to `timeout` for them to be gone; an error says what is left.
pub fn empty(relative: &Path, timeout: Duration) -> io::Result<()> {
    empty_in(&hierarchies(), relative, timeout)
}

fn empty_in(hierarchies: &[PathBuf], relative: &Path, timeout: Duration) -> io::Result<()> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let deadline = Instant::now() + timeout;
    for root in hierarchies {
        let cgroup = root.join(relative);
        loop {
            let procs = match std::fs::read_to_string(cgroup.join("cgroup.procs")) {
                Ok(procs) => procs,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            if procs.trim().is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{}: processes {} still there after {} s",
                    cgroup.display(),
                    procs.split_whitespace().collect::<Vec<_>>().join(" "),
                    timeout.as_secs()
                )));
            }
            kill_all(&cgroup);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn kill_all(cgroup: &Path) {
    // cgroup v2 (Linux 5.14+) kills the whole cgroup at once, forks included.
    // (Opened, never created: outside cgroupfs that would add a file.)
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.kill"))
        .and_then(|mut f| io::Write::write_all(&mut f, b"1"));
    if killed.is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Kills everything in the cgroups below `relative` (the service's cgroup
/// path, `/berth/NAME`) in every hierarchy and removes them. Returns how many
/// were removed; what could not be removed in a few seconds is an error.
pub fn clear_descendants(relative: &Path) -> io::Result<usize> {
    clear_descendants_in(&hierarchies(), relative)
}

fn clear_descendants_in(hierarchies: &[PathBuf], relative: &Path) -> io::Result<usize> {
    remove_in(hierarchies, relative, false)
}

/// Kills everything in the cgroup `relative` and below it, in every
/// hierarchy, and removes them all, deepest first: what libcontainer's delete
/// does for a container's cgroup, for a container Berth has seen stop. Returns
/// how many were removed.
pub fn remove(relative: &Path) -> io::Result<usize> {
    remove_in(&hierarchies(), relative, true)
}

fn remove_in(hierarchies: &[PathBuf], relative: &Path, itself: bool) -> io::Result<usize> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let mut removed = 0;
    for root in hierarchies {
        let top = root.join(relative);
        let mut cgroups = descendants(&top);
        if itself {
            cgroups.push(top);
        }
        for cgroup in cgroups {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                kill_all(&cgroup);
                match std::fs::remove_dir(&cgroup) {
                    Ok(()) => {
                        removed += 1;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // Busy until the killed processes are gone.
                    Err(e) if Instant::now() >= deadline => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove cgroup {}: {e}", cgroup.display()),
                        ))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_are_found_in_mountinfo() {
        let mountinfo = "\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
40 35 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            parse_hierarchies(mountinfo),
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ]
        );
    }

    #[test]
    fn emptying_waits_for_the_processes_and_names_those_that_stay() {
        // Plain files stand in for cgroupfs: an empty `cgroup.procs` is done
        // at once, a missing cgroup too, and a pid that never goes (no such
        // process: the file never changes) is named after the timeout.
        let dir = tempfile::tempdir().expect("tempdir");
        let service = dir.path().join("berth/docker");
        std::fs::create_dir_all(&service).expect("mkdir");
        std::fs::write(service.join("cgroup.procs"), "").expect("procs");
        let roots = [dir.path().to_path_buf()];
        let short = Duration::from_millis(200);
        assert!(empty_in(&roots, Path::new("/berth/docker"), short).is_ok());
        assert!(empty_in(&roots, Path::new("/berth/absent"), short).is_ok());
        std::fs::write(service.join("cgroup.procs"), "2147483646\n").expect("procs");
        let err = empty_in(&roots, Path::new("/berth/docker"), short).expect_err("stays");
        assert!(
            err.to_string().contains("processes 2147483646 still there"),
            "{err}"
        );
    }

    #[test]
    fn descendants_come_deepest_first_and_plain_directories_are_removed() {
        // A plain directory tree stands in for a cgroup hierarchy: the order
        // and the removal are what is checked (kill_all finds no processes).
        let dir = tempfile::tempdir().expect("tempdir");
        let service = dir.path().join("berth/docker");
        std::fs::create_dir_all(service.join("docker/abc")).expect("mkdir");
        std::fs::create_dir_all(service.join("libpod_parent")).expect("mkdir");
        let order = descendants(&service);
        let pos = |p: &str| order.iter().position(|d| d.ends_with(p)).expect(p);
        assert!(pos("docker/abc") < pos("docker"));
        let removed = clear_descendants_in(&[dir.path().to_path_buf()], Path::new("/berth/docker"))
            .expect("clear");
        assert_eq!(removed, 3);
        assert!(
            service.exists(),
            "the service's own cgroup is libcontainer's to remove"
        );
        assert!(descendants(&service).is_empty());
    }

    #[test]
    fn removing_a_cgroup_takes_it_and_its_descendants_in_every_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (v1, v2) = (dir.path().join("cpu"), dir.path().join("unified"));
        std::fs::create_dir_all(v1.join("berth/web/child")).expect("mkdir");
        std::fs::create_dir_all(v2.join("berth/web")).expect("mkdir");
        let removed =
            remove_in(&[v1.clone(), v2.clone()], Path::new("/berth/web"), true).expect("remove");
        assert_eq!(removed, 3);
        assert!(!v1.join("berth/web").exists() && !v2.join("berth/web").exists());
        assert!(v1.join("berth").exists(), "the parent stays");
        // A hierarchy without the cgroup is no error.
        assert_eq!(
            remove_in(&[v1], Path::new("/berth/web"), true).expect("again"),
            0
        );
    }
}
