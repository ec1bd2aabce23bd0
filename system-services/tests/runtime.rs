//! Real containers through the forker and libcontainer, as root: the busybox test
//! image is built with the recipe code, unpacked, and run under overlay roots.
//!
//! This test has its own `main` (`harness = false`): the forker must be forked
//! while the process is single-threaded, which libtest's threads would spoil.
//! The cases then run one after another; any failure fails the whole binary.

mod common;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_configs::forms::Command;
use berth_configs::model::{Service, WriteFile};
use berthd::runtime::{ContainerConfig, Exit, ImageLayers, Runtime, Signal, Status, Youki};

type Result<T = ()> = std::result::Result<T, String>;
type Case = (&'static str, fn(&Env) -> Result);

struct Env {
    runtime: Youki,
    image: ImageLayers,
    dir: PathBuf,
}

/// `BERTH_TEST_LOG=debug` shows berthd's and libcontainer's logs on stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() {
    if let Ok(level) = std::env::var("BERTH_TEST_LOG") {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(level.parse().unwrap_or(log::LevelFilter::Debug));
        }
    }
    if !rustix::process::geteuid().is_root() {
        berth_testkit::skip!("real containers need root (cargo xtask test runs as root)");
        return;
    }
    // As berthd was until issue 14: started by PID 1 with the signals PID 1
    // reads from its signalfd blocked (a blocked mask survives exec). The
    // forker, and through it every container, must not inherit that.
    // SAFETY: blocks signals in this thread only, on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // Before anything else: the forker must be forked while we are single-threaded.
    let dir = match tempfile::Builder::new().prefix("berthd-runtime-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let berth_binary = std::fs::canonicalize("/proc/self/exe").ok();
    let (runtime, image) = common::runtime_and_image(dir.path(), berth_binary);
    let env = Env {
        runtime,
        image,
        dir: dir.path().to_path_buf(),
    };

    let cases: &[Case] = &[
        (
            "echo_hello_is_captured_with_status_0",
            echo_hello_is_captured_with_status_0,
        ),
        (
            "exit_status_3_is_reaped_by_the_parent",
            exit_status_3_is_reaped_by_the_parent,
        ),
        (
            "sigterm_stops_a_sleep_and_the_cgroup_goes_with_delete",
            sigterm_stops_a_sleep_and_the_cgroup_goes_with_delete,
        ),
        (
            "what_outlives_a_host_pid_init_goes_with_delete",
            what_outlives_a_host_pid_init_goes_with_delete,
        ),
        (
            "pid_1_ignores_sigterm_without_a_handler",
            pid_1_ignores_sigterm_without_a_handler,
        ),
        (
            "pid_1_with_a_handler_stops_on_sigterm",
            pid_1_with_a_handler_stops_on_sigterm,
        ),
        (
            "read_only_root_refuses_writes_but_tmp_works",
            read_only_root_refuses_writes_but_tmp_works,
        ),
        (
            "read_only_root_takes_its_files",
            read_only_root_takes_its_files,
        ),
        ("volumes_are_visible_inside", volumes_are_visible_inside),
        (
            "host_network_sees_the_host_interfaces",
            host_network_sees_the_host_interfaces,
        ),
        (
            "berth_binary_environment_user_and_hostname",
            berth_binary_environment_user_and_hostname,
        ),
        (
            "a_missing_command_fails_create_and_leaves_nothing",
            a_missing_command_fails_create_and_leaves_nothing,
        ),
        (
            "output_survives_a_reader_that_goes_away",
            output_survives_a_reader_that_goes_away,
        ),
        (
            "default_seccomp_refuses_what_docker_refuses_unless_unconfined",
            default_seccomp_refuses_what_docker_refuses_unless_unconfined,
        ),
        (
            "a_privileged_container_has_the_hosts_device_nodes_before_it_starts",
            a_privileged_container_has_the_hosts_device_nodes_before_it_starts,
        ),
    ];
    let mut failed = Vec::new();
    for (name, case) in cases {
        let started = Instant::now();
        match case(&env) {
            Ok(()) => println!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed.push(*name);
            }
        }
    }
    let leftovers = env.runtime.reap_strays();
    let zombies = zombie_children();
    drop(env);
    drop(dir);
    if !zombies.is_empty() {
        println!(
            "zombie children left behind: {zombies:?} (strays reaped at the end: {leftovers})"
        );
        failed.push("no zombies");
    }
    if !failed.is_empty() {
        println!("\n{} failed: {failed:?}", failed.len());
        std::process::exit(1);
    }
    println!("\nall {} runtime cases passed", cases.len());
}

fn config(env: &Env, id: &str, service: Service) -> ContainerConfig {
    ContainerConfig {
        id: id.into(),
        service_name: id.into(),
        service,
        image: env.image.clone(),
        environment: BTreeMap::new(),
        service_network: None,
        files: Vec::new(),
    }
}

fn exec(args: &[&str]) -> Option<Command> {
    Some(Command::Exec(args.iter().map(|s| s.to_string()).collect()))
}

/// Everything written to `fd` until every writer closes it (or `timeout`).
fn read_all(fd: &OwnedFd, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no EOF within {timeout:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            ));
        }
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(fd.as_fd(), &mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Runs a container to completion: (stdout, stderr, exit). Deletes it afterwards.
fn run(env: &Env, id: &str, service: Service) -> Result<(String, String, Exit)> {
    run_config(env, &config(env, id, service))
}

fn run_config(env: &Env, config: &ContainerConfig) -> Result<(String, String, Exit)> {
    let id = config.id.as_str();
    let created = env.runtime.create(config).map_err(|e| e.to_string())?;
    let result = (|| {
        env.runtime.start(id).map_err(|e| e.to_string())?;
        let out = read_all(&created.stdout, Duration::from_secs(30))?;
        let err = read_all(&created.stderr, Duration::from_secs(5))?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(30))
            .map_err(|e| e.to_string())?
            .ok_or("the container did not exit")?;
        Ok((out, err, exit))
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result
}

/// Waits until the process `pid` runs `program` (its exec has happened): the
/// event a signal test needs, instead of a guess at how long it takes.
fn wait_exec(pid: impl std::fmt::Display, program: &str) -> Result {
    let comm = format!("/proc/{pid}/comm");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(&comm).unwrap_or_default();
        if now.trim() == program {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{comm} is {now:?}, never {program:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    stat[i + 1..].split_whitespace().nth(1)?.parse().ok()
}

fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let mut f = stat[i + 1..].split_whitespace();
            let state = f.next();
            let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
            state == Some("Z") && ppid == Some(me)
        })
        .collect()
}

/// The container's cgroup directory on this host (v2, or v1's pids hierarchy).
fn cgroup_dir(service: &str) -> PathBuf {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from(format!("/sys/fs/cgroup/berth/{service}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/pids/berth/{service}"))
    }
}

/// A non-privileged container runs under the default seccomp profile: a new
/// user namespace (which needs no capability, so only seccomp stands in the
/// way) and a changed personality are refused, a new UTS namespace too, and
/// an ordinary fork still works; with `security_opt: [seccomp=unconfined]`
/// the same user namespace is made. The container runs as root, so it is the
/// filter, not the user, that refuses.
fn default_seccomp_refuses_what_docker_refuses_unless_unconfined(env: &Env) -> Result {
    let script = "unshare -U true 2>&1; echo userns=$?; \
                  unshare -u true 2>&1; echo uts=$?; \
                  (true); echo fork=$?; \
                  grep Seccomp: /proc/self/status; grep NoNewPrivs: /proc/self/status";
    let service = |opts: Vec<String>| Service {
        command: Some(Command::Shell(script.into())),
        security_opt: opts,
        ..Service::default()
    };
    let (out, err, exit) = run(env, "seccomp-default", service(Vec::new()))?;
    let got = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    check(exit == Exit::Code(0), || format!("{exit}: {out:?} {err:?}"))?;
    check(
        got("userns=") != "0" && out.contains("Operation not permitted"),
        || format!("a user namespace was made under the default profile: {out:?}"),
    )?;
    check(got("uts=") != "0", || format!("unshare -u: {out:?}"))?;
    check(got("fork=") == "0", || format!("fork: {out:?}"))?;
    // 2: filter mode.
    check(got("Seccomp:") == "2" && got("NoNewPrivs:") == "1", || {
        format!("the filter is not installed: {out:?}")
    })?;
    let (out, err, exit) = run(
        env,
        "seccomp-unconfined",
        service(vec!["seccomp=unconfined".into()]),
    )?;
    let got = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    check(exit == Exit::Code(0), || format!("{exit}: {out:?} {err:?}"))?;
    check(got("userns=") == "0", || {
        format!("seccomp=unconfined still refuses a user namespace: {out:?}")
    })?;
    check(got("Seccomp:") == "0" && got("NoNewPrivs:") == "0", || {
        format!("seccomp=unconfined: {out:?}")
    })
}

fn echo_hello_is_captured_with_status_0(env: &Env) -> Result {
    let (out, err, exit) = run(
        env,
        "echo",
        Service {
            command: exec(&["echo", "hello"]),
            ..Service::default()
        },
    )?;
    check(out == "hello\n", || {
        format!("stdout {out:?}, stderr {err:?}")
    })?;
    check(exit == Exit::Code(0), || format!("{exit}"))
}

/// berthd dies (its read ends close) while the service writes: the writes
/// neither fail nor kill it, and a new reader gets what was written since.
fn output_survives_a_reader_that_goes_away(env: &Env) -> Result {
    let id = "orphan-output";
    let created = env
        .runtime
        .create(&config(
            env,
            id,
            Service {
                command: Some(Command::Shell(
                    "trap '' PIPE; i=0; while [ $i -lt 40 ]; do echo line $i || exit 9; \
                     echo err $i >&2 || exit 9; i=$((i+1)); sleep 0.01; done"
                        .into(),
                )),
                ..Service::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let fifo = env.dir.join("run/containers").join(id).join("stdout");
        let kind = std::fs::metadata(&fifo).map_err(|e| format!("{}: {e}", fifo.display()))?;
        check(
            std::os::unix::fs::FileTypeExt::is_fifo(&kind.file_type()),
            || format!("{} is not a FIFO", fifo.display()),
        )?;
        // The only readers go away before the service writes a byte.
        drop((created.stdout, created.stderr));
        env.runtime.start(id).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(150));
        let output = env
            .runtime
            .reattach(id)
            .map_err(|e| e.to_string())?
            .ok_or("no FIFOs to reattach to")?;
        let out = read_all(&output.stdout, Duration::from_secs(30))?;
        let err = read_all(&output.stderr, Duration::from_secs(5))?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(30))
            .map_err(|e| e.to_string())?
            .ok_or("the container did not exit")?;
        let expected: String = (0..40).map(|i| format!("line {i}\n")).collect();
        check(out == expected, || format!("stdout {out:?}"))?;
        check(err.lines().count() == 40, || format!("stderr {err:?}"))?;
        check(exit == Exit::Code(0), || {
            format!("{exit}: writes without a reader must not fail")
        })
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result
}

fn exit_status_3_is_reaped_by_the_parent(env: &Env) -> Result {
    let id = "exit3";
    let created = env
        .runtime
        .create(&config(
            env,
            id,
            Service {
                command: Some(Command::Shell("echo failing >&2; exit 3".into())),
                ..Service::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let me = std::process::id() as i32;
        let parent = parent_of(created.pid);
        check(parent == Some(me), || {
            format!(
                "init {} has parent {parent:?}, not this process {me}",
                created.pid
            )
        })?;
        check(created.pidfd.is_some(), || "no pidfd".into())?;
        let state = env.runtime.state(id).map_err(|e| e.to_string())?;
        check(state.status == Status::Created, || format!("{state:?}"))?;
        env.runtime.start(id).map_err(|e| e.to_string())?;
        let err = read_all(&created.stderr, Duration::from_secs(30))?;
        // (With BERTH_TEST_LOG set, the init's own log lines come first.)
        check(err.lines().last() == Some("failing"), || {
            format!("stderr {err:?}")
        })?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        check(exit == Some(Exit::Code(3)), || format!("{exit:?}"))?;
        // Reaped: the pid is gone, and the status is remembered.
        check(parent_of(created.pid).is_none(), || {
            "the init is still there".into()
        })?;
        let again = env.runtime.try_wait(id).map_err(|e| e.to_string())?;
        check(again == Some(Exit::Code(3)), || format!("{again:?}"))?;
        let state = env.runtime.state(id).map_err(|e| e.to_string())?;
        check(
            state.status == Status::Stopped && state.exit == Some(Exit::Code(3)),
            || format!("{state:?}"),
        )
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result
}

fn sigterm_stops_a_sleep_and_the_cgroup_goes_with_delete(env: &Env) -> Result {
    let id = "sleeper";
    let cgroup = cgroup_dir(id);
    let created = env
        .runtime
        .create(&config(
            env,
            id,
            Service {
                command: exec(&["sleep", "1000"]),
                // Not PID 1 of its own namespace, so SIGTERM's default action applies.
                pid: Some("host".into()),
                pids_limit: Some(64),
                cpu_shares: Some(128),
                ..Service::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        env.runtime.start(id).map_err(|e| e.to_string())?;
        wait_exec(created.pid, "sleep")?;
        let state = env.runtime.state(id).map_err(|e| e.to_string())?;
        check(state.status == Status::Running, || format!("{state:?}"))?;
        check(cgroup.is_dir(), || format!("{} missing", cgroup.display()))?;
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        check(
            procs
                .split_whitespace()
                .any(|p| p == created.pid.to_string()),
            || {
                format!(
                    "init {} not in {}: {procs:?}",
                    created.pid,
                    cgroup.display()
                )
            },
        )?;
        // pids.max is in the v1 pids hierarchy's directory and in v2's alike.
        let max = std::fs::read_to_string(cgroup.join("pids.max")).unwrap_or_default();
        check(max.trim() == "64", || format!("pids.max {max:?}"))?;
        // The CPU share: v1's cpu.shares, or the weight runc's mapping gives on v2.
        let (file, want) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (cgroup.join("cpu.weight"), "21")
        } else {
            (
                PathBuf::from(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.shares")),
                "128",
            )
        };
        let share = std::fs::read_to_string(&file).unwrap_or_default();
        check(share.trim() == want, || {
            format!("{}: {share:?}", file.display())
        })?;
        check(
            env.runtime
                .try_wait(id)
                .map_err(|e| e.to_string())?
                .is_none(),
            || "exited before the signal".into(),
        )?;
        env.runtime
            .kill(id, Signal::SIGTERM)
            .map_err(|e| e.to_string())?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        check(exit == Some(Exit::Signal(Signal::SIGTERM as i32)), || {
            format!("{exit:?}")
        })
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result?;
    check(!cgroup.exists(), || {
        format!("{} survived delete", cgroup.display())
    })?;
    check(!env.runtime.bundle_dir(id).exists(), || {
        "bundle survived delete".into()
    })?;
    check(!env.runtime.state_dir(id).exists(), || {
        "state survived delete".into()
    })?;
    bundles_removed(env)
}

/// The deleted containers' bundles, which `delete` moves aside and leaves to
/// threads, are gone once those end, their roots unmounted.
fn bundles_removed(env: &Env) -> Result {
    check(env.runtime.finish_removals(Duration::from_secs(10)), || {
        "the bundles' removals did not end".into()
    })?;
    let removing = env.dir.join("run/removing");
    let left: Vec<_> = std::fs::read_dir(&removing)
        .map_err(|e| format!("{}: {e}", removing.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    check(left.is_empty(), || format!("left in removing/: {left:?}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = env.dir.join("run").display().to_string();
    check(!mountinfo.contains(&format!("{root}/removing")), || {
        format!("a removed bundle's root is still mounted:\n{mountinfo}")
    })
}

/// A container sharing the host's pid namespace can leave processes behind
/// when its init exits; the delete of a container Berth saw stop (which does
/// not go through libcontainer) kills them and removes the cgroup.
fn what_outlives_a_host_pid_init_goes_with_delete(env: &Env) -> Result {
    let id = "orphans";
    let cgroup = cgroup_dir(id);
    // The sleep's output goes elsewhere, so the output ends with the init.
    let (out, _, exit) = run(
        env,
        id,
        Service {
            command: exec(&[
                "sh",
                "-c",
                "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
            ]),
            pid: Some("host".into()),
            ..Service::default()
        },
    )?;
    check(exit.success(), || format!("the init: {exit:?}"))?;
    let sleeper: i32 = out
        .trim()
        .parse()
        .map_err(|e| format!("the sleep's pid {out:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{sleeper}/stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .is_some_and(|i| !stat[i + 1..].trim_start().starts_with('Z'))
        })
    };
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    check(!alive(), || {
        format!("the orphaned sleep {sleeper} survived delete")
    })?;
    check(!cgroup.exists(), || {
        format!("{} survived delete", cgroup.display())
    })?;
    check(!env.runtime.state_dir(id).exists(), || {
        "state survived delete".into()
    })?;
    bundles_removed(env)
}

fn pid_1_ignores_sigterm_without_a_handler(env: &Env) -> Result {
    let id = "pid1";
    let created = env
        .runtime
        .create(&config(
            env,
            id,
            Service {
                command: exec(&["sleep", "1000"]),
                ..Service::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        env.runtime.start(id).map_err(|e| e.to_string())?;
        wait_exec(created.pid, "sleep")?;
        env.runtime
            .kill(id, Signal::SIGTERM)
            .map_err(|e| e.to_string())?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        check(exit.is_none(), || {
            format!("the kernel protects a namespace's init from unhandled signals, yet {exit:?}")
        })?;
        env.runtime
            .kill(id, Signal::SIGKILL)
            .map_err(|e| e.to_string())?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        check(exit == Some(Exit::Signal(9)), || format!("{exit:?}"))
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result
}

/// A container's init that handles SIGTERM (netconf, chronyd; here a shell
/// trap) stops on it, even though this process — like berthd started by
/// PID 1 — has SIGTERM blocked: the forker starts containers with an empty
/// signal mask.
fn pid_1_with_a_handler_stops_on_sigterm(env: &Env) -> Result {
    let id = "pid1trap";
    env.runtime
        .create(&config(
            env,
            id,
            Service {
                command: Some(Command::Shell(
                    "trap 'exit 7' TERM; while :; do sleep 0.1; done".into(),
                )),
                ..Service::default()
            },
        ))
        .map_err(|e| e.to_string())?;
    let result = (|| {
        env.runtime.start(id).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        env.runtime
            .kill(id, Signal::SIGTERM)
            .map_err(|e| e.to_string())?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if exit.is_none() {
            // Do not leave it running.
            let _ = env.runtime.kill(id, Signal::SIGKILL);
            let _ = env.runtime.wait_timeout(id, Duration::from_secs(10));
        }
        check(exit == Some(Exit::Code(7)), || {
            format!("SIGTERM did not reach the init's handler: {exit:?}")
        })
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result
}

fn read_only_root_refuses_writes_but_tmp_works(env: &Env) -> Result {
    let (out, err, exit) = run(
        env,
        "readonly",
        Service {
            read_only: true,
            command: Some(Command::Shell(
                "touch /x; echo root=$?; touch /tmp/y && echo tmp=$?; grep ' / ' /proc/mounts"
                    .into(),
            )),
            ..Service::default()
        },
    )?;
    check(out.contains("root=1"), || {
        format!("stdout {out:?} stderr {err:?}")
    })?;
    check(err.contains("Read-only file system"), || {
        format!("stderr {err:?}")
    })?;
    check(out.contains("tmp=0"), || format!("stdout {out:?}"))?;
    check(
        out.lines()
            .any(|l| l.contains(" ro,") || l.contains(" ro ")),
        || format!("root not mounted ro: {out:?}"),
    )?;
    check(exit == Exit::Code(0), || format!("{exit}"))
}

/// A read-only service still gets its `write_files` (the `ca_certs` bundle every
/// service gets, say), and its root stays read-only.
fn read_only_root_takes_its_files(env: &Env) -> Result {
    // A layer with every mount point, so that only the files can call for an
    // upper layer.
    let points = env.dir.join("mount-points-layer");
    for dir in ["proc", "dev", "sys", "run", "tmp", "usr/bin"] {
        std::fs::create_dir_all(points.join(dir)).map_err(|e| e.to_string())?;
    }
    std::fs::write(points.join("usr/bin/berth"), "").map_err(|e| e.to_string())?;
    let mut config = config(
        env,
        "readonly-files",
        Service {
            read_only: true,
            command: Some(Command::Shell(
                "cat /etc/berth-test/written; touch /x; echo root=$?".into(),
            )),
            ..Service::default()
        },
    );
    config.image.layers.push(points);
    config.files = vec![(
        "write_files[0]".into(),
        WriteFile {
            path: "/etc/berth-test/written".into(),
            content: "given\n".into(),
            ..WriteFile::default()
        },
    )];
    let (out, err, exit) = run_config(env, &config)?;
    check(out.starts_with("given\n"), || {
        format!("stdout {out:?} stderr {err:?}")
    })?;
    check(out.contains("root=1"), || {
        format!("the root took a write: {out:?}")
    })?;
    check(exit == Exit::Code(0), || format!("{exit}"))
}

fn volumes_are_visible_inside(env: &Env) -> Result {
    let host = env.dir.join("host-data");
    std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
    std::fs::write(host.join("marker"), "from the host").map_err(|e| e.to_string())?;
    let (out, err, exit) = run(
        env,
        "volumes",
        Service {
            volumes: vec![
                format!("{}:/data:ro", host.display())
                    .parse()
                    .expect("volume"),
                "shared:/named".parse().expect("volume"),
            ],
            command: Some(Command::Shell(
                "cat /data/marker; echo; touch /data/x 2>/dev/null; echo ro=$?; echo inside > /named/file".into(),
            )),
            ..Service::default()
        },
    )?;
    check(out.starts_with("from the host\n"), || {
        format!("stdout {out:?} stderr {err:?}")
    })?;
    check(out.contains("ro=1"), || {
        format!("a :ro volume took a write: {out:?}")
    })?;
    check(exit == Exit::Code(0), || format!("{exit}"))?;
    let named =
        std::fs::read_to_string(env.dir.join("volumes/shared/file")).map_err(|e| e.to_string())?;
    check(named == "inside\n", || {
        format!("named volume file {named:?}")
    })
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

fn host_network_sees_the_host_interfaces(env: &Env) -> Result {
    let host = interfaces(&std::fs::read_to_string("/proc/net/dev").map_err(|e| e.to_string())?);
    let (out, err, exit) = run(
        env,
        "hostnet",
        Service {
            network_mode: Some("host".into()),
            command: exec(&["cat", "/proc/net/dev"]),
            ..Service::default()
        },
    )?;
    check(exit == Exit::Code(0), || format!("{exit}: {err}"))?;
    let inside = interfaces(&out);
    check(inside == host, || {
        format!("host {host:?}, container {inside:?}")
    })?;
    check(host.len() > 1, || {
        format!("this host has only {host:?}; the check means little")
    })?;

    let (out, err, exit) = run(
        env,
        "privnet",
        Service {
            command: exec(&["cat", "/proc/net/dev"]),
            ..Service::default()
        },
    )?;
    check(exit == Exit::Code(0), || format!("{exit}: {err}"))?;
    let inside = interfaces(&out);
    check(inside == ["lo"], || {
        format!("a private network namespace shows {inside:?}")
    })
}

fn berth_binary_environment_user_and_hostname(env: &Env) -> Result {
    let mut service = Service {
        user: Some("1234:5678".into()),
        working_dir: Some("/tmp".into()),
        command: Some(Command::Shell(
            "test -f /usr/bin/berth && echo berth=yes; touch /usr/bin/berth 2>/dev/null || echo berth=ro; \
             echo id=$(id -u):$(id -g); echo host=$(hostname); echo cwd=$(pwd); echo greeting=$GREETING"
                .into(),
        )),
        ..Service::default()
    };
    service
        .environment
        .0
        .insert("GREETING".into(), Some("hi there".into()));
    let (out, err, exit) = run(env, "whoami", service)?;
    for want in [
        "berth=yes",
        "berth=ro",
        "id=1234:5678",
        "host=whoami",
        "cwd=/tmp",
        "greeting=hi there",
    ] {
        check(out.lines().any(|l| l == want), || {
            format!("{want:?} missing: stdout {out:?} stderr {err:?}")
        })?;
    }
    check(exit == Exit::Code(0), || format!("{exit}"))
}

fn a_missing_command_fails_create_and_leaves_nothing(env: &Env) -> Result {
    let id = "broken";
    let err = match env.runtime.create(&config(
        env,
        id,
        Service {
            command: exec(&["/no/such/program"]),
            ..Service::default()
        },
    )) {
        Ok(_) => {
            let _ = env.runtime.delete(id);
            return Err("a program that does not exist was created".into());
        }
        Err(e) => e.to_string(),
    };
    check(err.contains("broken"), || {
        format!("the error names no container: {err}")
    })?;
    check(!env.runtime.bundle_dir(id).exists(), || {
        "bundle left behind".into()
    })?;
    check(!env.runtime.state_dir(id).exists(), || {
        "state left behind".into()
    })?;
    check(!cgroup_dir(id).exists(), || "cgroup left behind".into())
}

/// A privileged container's `/dev` holds every device node of the host, the
/// same device with the same owner and permissions, once it is created and
/// before its process starts (the runtime makes them, not libcontainer); the
/// process sees them from its first instruction; a container that is not
/// privileged gets none of them beyond the standard few.
fn a_privileged_container_has_the_hosts_device_nodes_before_it_starts(env: &Env) -> Result {
    use std::os::unix::fs::MetadataExt;
    let host = berthd::host::devices::scan(Path::new("/dev"));
    let only_on_host: Vec<&PathBuf> = host
        .keys()
        .filter(|rel| {
            !["null", "zero", "full", "tty", "random", "urandom", "ptmx"]
                .iter()
                .any(|std| rel == &Path::new(std))
        })
        .collect();
    check(!only_on_host.is_empty(), || {
        "the host has no device nodes beyond the standard ones to check with".into()
    })?;
    let first = only_on_host[0].display().to_string();
    let mut service = Service {
        command: exec(&["test", "-e", &format!("/dev/{first}")]),
        ..Service::default()
    };
    service.privileged = true;
    let id = "dev-privileged";
    let created = env
        .runtime
        .create(&config(env, id, service))
        .map_err(|e| e.to_string())?;
    let inside = PathBuf::from(format!("/proc/{}/root/dev", created.pid));
    let mut wrong = Vec::new();
    for (rel, node) in &host {
        match std::fs::symlink_metadata(inside.join(rel)) {
            // The container's own ptmx (a link into its devpts) stays.
            Ok(_) if rel == Path::new("ptmx") => {}
            Ok(m)
                if m.rdev() == node.rdev
                    && m.mode() == node.mode
                    && m.uid() == node.uid
                    && m.gid() == node.gid => {}
            Ok(m) => wrong.push(format!(
                "{}: rdev {:#x} mode {:o} {}:{} against the host's {:#x} {:o} {}:{}",
                rel.display(),
                m.rdev(),
                m.mode(),
                m.uid(),
                m.gid(),
                node.rdev,
                node.mode,
                node.uid,
                node.gid
            )),
            Err(e) => wrong.push(format!("{}: {e}", rel.display())),
        }
    }
    let result = (|| {
        check(wrong.is_empty(), || {
            format!(
                "{} of {} host nodes wrong in the created container: {wrong:?}",
                wrong.len(),
                host.len()
            )
        })?;
        env.runtime.start(id).map_err(|e| e.to_string())?;
        let exit = env
            .runtime
            .wait_timeout(id, Duration::from_secs(30))
            .map_err(|e| e.to_string())?
            .ok_or("the container did not exit")?;
        check(exit == Exit::Code(0), || {
            format!("its process did not find /dev/{first}: {exit:?}")
        })
    })();
    env.runtime.delete(id).map_err(|e| e.to_string())?;
    result?;
    let (_, _, exit) = run(
        env,
        "dev-unprivileged",
        Service {
            command: exec(&["test", "-e", &format!("/dev/{first}")]),
            ..Service::default()
        },
    )?;
    check(exit == Exit::Code(1), || {
        format!("/dev/{first} in a container that is not privileged: {exit:?}")
    })
}
