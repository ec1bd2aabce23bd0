//! `cargo xtask bench runtime` (root): berthd's container runtime against
//! Debian's `runc`, the supervisor starting 50 services, and the real berthd's
//! memory with 10 services running.
//!
//! 1. create → start → wait → delete of a `/bin/true` container of the busybox
//!    test image: Berth's runtime (forker + libcontainer, overlay root per
//!    container) vs `runc run` on a bundle made from the same spec and layers
//!    (its root mounted once, in runc's favour), 100 iterations each,
//!    alternating so both see the same machine load. Medians, and
//!    `RESULT runtime_vs_runc` = Berth / runc (goal ≤ 0.5).
//! 2. `RESULT start_50_services`: from `Supervisor::start` until 50 independent
//!    services run; `stop_50_services` for the orderly stop after.
//! 3. `RESULT berthd_rss_10_services`: VmRSS of a real `berth daemon`
//!    (`BERTH_BINARY`, else target/berth/berth — the shipped static binary —,
//!    else target/release/berth) running 10 services, and of its forker
//!    separately.
//!
//! Its own `main` (`harness = false`): the forker is forked before any thread.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_configs::forms::Command as Cmd;
use berth_configs::model::{RestartPolicy, Service};
use berth_images::rootfs::RootfsPlan;
use berthd::logs::{LogConfig, LogDir};
use berthd::runtime::spec::{self, ImageInfo, SpecContext};
use berthd::runtime::{ContainerConfig, ImageLayers, Runtime, Youki, YoukiConfig};
use berthd::supervisor::{FixedImages, Options, Phase, Supervisor};

const ITERATIONS: usize = 100;
const WARMUP: usize = 3;

/// A bench step's failure, printed once by `main`: no caller tells kinds apart.
type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: containers need root (run `cargo xtask bench runtime` as root)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("runtime bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-runtime-")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    // Before any thread: the forker.
    let runtime = Arc::new(Youki::new(YoukiConfig {
        root: dir.path().join("run"),
        volumes_dir: dir.path().join("volumes"),
        berth_binary: None,
    })?);
    let (store_dir, reference, image) = common::busybox()?;

    runtime_vs_runc(&runtime, &image, dir.path())?;
    if std::env::var_os("BERTH_BENCH_QUICK").is_some() {
        return Ok(());
    }
    start_50_services(&runtime, &image, dir.path())?;
    drop(runtime);
    berthd_rss(&store_dir, &reference, dir.path())?;
    Ok(())
}

fn true_service() -> Service {
    Service {
        command: Some(Cmd::Exec(vec!["/bin/true".into()])),
        ..Service::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One create → start → wait → delete through Berth's runtime.
/// Per phase: create, start, wait, delete; and, not counted in the total, how
/// long after the delete returned its bundle was unmounted and removed.
fn berth_once(runtime: &Youki, config: &ContainerConfig) -> Result<([Duration; 4], Duration)> {
    let id = config.id.as_str();
    let t = Instant::now();
    let created = runtime.create(config)?;
    let t_create = t.elapsed();
    // Nobody reads /bin/true's (empty) output; the FIFOs never need a reader.
    drop((created.stdout, created.stderr));
    runtime.start(id)?;
    let t_start = t.elapsed();
    let exit = runtime
        .wait_timeout(id, Duration::from_secs(30))?
        .ok_or("/bin/true did not exit")?;
    let t_wait = t.elapsed();
    runtime.delete(id)?;
    let t_delete = t.elapsed();
    // The bundle's removal goes on off the delete's path; it ends here, so
    // that it never runs beside the next measurement (runc's or Berth's).
    if !runtime.finish_removals(Duration::from_secs(30)) {
        return Err("berth: the bundle was not removed within 30 s".into());
    }
    let removed = t.elapsed() - t_delete;
    if !exit.success() {
        return Err(format!("berth: /bin/true: {exit}").into());
    }
    Ok((
        [
            t_create,
            t_start - t_create,
            t_wait - t_start,
            t_delete - t_wait,
        ],
        removed,
    ))
}

/// One `runc run` (create, start, wait and delete in one command).
fn runc_once(runc_root: &Path, bundle: &Path, id: &str) -> Result<Duration> {
    let t = Instant::now();
    let status = Command::new("runc")
        .arg("--root")
        .arg(runc_root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("runc: {e} (install Debian's runc package)"))?;
    let elapsed = t.elapsed();
    if !status.success() {
        return Err(format!("runc run: {status}").into());
    }
    Ok(elapsed)
}

/// A runc bundle from the same spec generator and layers Berth uses.
fn runc_bundle(image: &ImageLayers, dir: &Path) -> Result<PathBuf> {
    let bundle = dir.join("runc-bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    RootfsPlan::new(&image.layers, &bundle, false)
        .and_then(|plan| plan.mount(&rootfs))
        .map_err(|e| format!("runc bundle root: {e}"))?;
    let info = ImageInfo {
        config: image.config.clone(),
        passwd: std::fs::read_to_string(rootfs.join("etc/passwd")).ok(),
        group: std::fs::read_to_string(rootfs.join("etc/group")).ok(),
    };
    let ctx = SpecContext {
        rootfs: PathBuf::from("rootfs"),
        volumes_dir: dir.join("volumes"),
        cgroup_namespace: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        ..SpecContext::default()
    };
    let spec = spec::generate("bench-runc", &true_service(), &info, &ctx)?;
    let text = serde_json::to_vec_pretty(&spec)?;
    std::fs::write(bundle.join("config.json"), text)?;
    Ok(bundle)
}

fn runtime_vs_runc(runtime: &Youki, image: &ImageLayers, dir: &Path) -> Result {
    let config = ContainerConfig {
        id: "bench-true".into(),
        service_name: "bench-true".into(),
        service: true_service(),
        image: image.clone(),
        environment: BTreeMap::new(),
        service_network: None,
        files: Vec::new(),
    };
    let bundle = runc_bundle(image, dir)?;
    let runc_root = dir.join("runc-state");
    let result = (|| {
        let (mut berth, mut runc) = (Vec::new(), Vec::new());
        let mut phases: [Vec<Duration>; 4] = Default::default();
        let mut removals = Vec::new();
        // BERTH_BENCH_QUICK: a quick look while working on the runtime.
        let iterations = if std::env::var_os("BERTH_BENCH_QUICK").is_some() {
            20
        } else {
            ITERATIONS
        };
        for i in 0..WARMUP + iterations {
            // Alternate which goes first, so neither always follows the other.
            let ((b, removed), r) = if i % 2 == 0 {
                let b = berth_once(runtime, &config)?;
                (b, runc_once(&runc_root, &bundle, "bench-runc")?)
            } else {
                let r = runc_once(&runc_root, &bundle, "bench-runc")?;
                (berth_once(runtime, &config)?, r)
            };
            if i >= WARMUP {
                berth.push(b.iter().sum());
                runc.push(r);
                for (all, one) in phases.iter_mut().zip(b) {
                    all.push(one);
                }
                removals.push(removed);
            }
        }
        let [c, s, w, d] = phases.map(median);
        println!(
            "berth phases (medians): create {:.1} ms, start {:.1} ms, wait {:.1} ms, delete {:.1} ms; \
             the bundle removed {:.1} ms after the delete returned (not counted)",
            ms(c),
            ms(s),
            ms(w),
            ms(d),
            ms(median(removals))
        );
        Ok::<_, Box<dyn std::error::Error>>((median(berth), median(runc), iterations))
    })();
    let _ = rustix::mount::unmount(bundle.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
    let (berth, runc, iterations) = result?;
    println!(
        "create→start→wait→delete of /bin/true, median of {iterations}: berth {:.1} ms, runc run {:.1} ms",
        ms(berth),
        ms(runc)
    );
    println!("RESULT berth_container_ms {:.2} ms", ms(berth));
    println!("RESULT runc_container_ms {:.2} ms", ms(runc));
    println!(
        "RESULT runtime_vs_runc {:.3} ratio",
        berth.as_secs_f64() / runc.as_secs_f64()
    );
    Ok(())
}

/// A service that runs until stopped; SIGKILL as its stop signal so the stop
/// measures berthd, not a shell's reaction time.
fn idle_service() -> Service {
    Service {
        image: Some("busybox".into()),
        command: Some(Cmd::Exec(vec!["sleep".into(), "100000".into()])),
        restart: Some(RestartPolicy::Always),
        stop_signal: Some(berth_configs::compose::StopSignal::parse("SIGKILL").expect("signal")),
        ..Service::default()
    }
}

fn start_50_services(runtime: &Arc<Youki>, image: &ImageLayers, dir: &Path) -> Result {
    let services: BTreeMap<String, Service> = (0..50)
        .map(|i| (format!("bench-svc-{i:02}"), idle_service()))
        .collect();
    let logs = Arc::new(LogDir::new(LogConfig::new(dir.join("log"))));
    let t = Instant::now();
    let supervisor = Supervisor::start(
        Arc::clone(runtime) as Arc<dyn Runtime>,
        Arc::new(FixedImages(image.clone())),
        logs,
        Options::new(dir.join("run")),
        services,
    )?;
    let up = supervisor.wait_for(Duration::from_secs(300), |s| {
        s.services.len() == 50 && s.services.iter().all(|x| x.state == Phase::Running)
    });
    let started = t.elapsed();
    if !up {
        let _ = supervisor.shutdown();
        return Err(format!(
            "50 services did not all start: {:?}",
            supervisor
                .services()
                .iter()
                .filter(|s| s.state != Phase::Running)
                .map(|s| format!("{} {} {:?}", s.name, s.state, s.error))
                .collect::<Vec<_>>()
        )
        .into());
    }
    let t = Instant::now();
    supervisor.shutdown()?;
    let stopped = t.elapsed();
    println!(
        "50 independent services: running after {:.2} s, stopped in {:.2} s",
        started.as_secs_f64(),
        stopped.as_secs_f64()
    );
    println!("RESULT start_50_services {:.3} s", started.as_secs_f64());
    println!("RESULT stop_50_services {:.3} s", stopped.as_secs_f64());
    Ok(())
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Children of `pid` whose `comm` is `name`.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == name)
        })
        .collect()
}

/// `GET /v1/services` on berthd's socket: how many services run.
fn running_services(socket: &Path) -> usize {
    berth_api::Client::new(socket)
        .services()
        .map(|v| v.iter().filter(|s| s.state == Phase::Running).count())
        .unwrap_or(0)
}

fn berth_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_BINARY") {
        return Some(PathBuf::from(p));
    }
    // The shipped static binary (`cargo xtask build`), else a host build.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    [target.join("berth/berth"), target.join("release/berth")]
        .into_iter()
        .find(|p| p.exists())
}

fn berthd_rss(store: &Path, reference: &str, dir: &Path) -> Result {
    let Some(berth) = berth_binary() else {
        println!(
            "berthd RSS: skipped (no BERTH_BINARY, target/berth/berth or target/release/berth)"
        );
        return Ok(());
    };
    let mut config = String::from("#cloud-config\nberth:\n  services:\n");
    for i in 0..10 {
        config.push_str(&format!(
            "    rss-{i}:\n      image: {reference}\n      command: [\"sleep\", \"100000\"]\n      restart: always\n      stop_signal: SIGKILL\n"
        ));
    }
    let daemon_dir = dir.join("daemon");
    std::fs::create_dir_all(&daemon_dir)?;
    let config_path = daemon_dir.join("config.yml");
    std::fs::write(&config_path, config)?;
    let socket = berth_testkit::daemon_socket(&daemon_dir);
    let mut child = berth_testkit::daemon_command(&berth, &daemon_dir, store)
        .arg("--config")
        .arg(&config_path)
        .spawn()
        .map_err(|e| format!("{}: {e}", berth.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut up = false;
    while Instant::now() < deadline {
        if running_services(&socket) == 10 {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let start-up buffers settle: the figure is for a steady state.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(pid);
    let forker: Vec<(u32, Option<u64>)> = children_named(pid, "berth")
        .into_iter()
        .map(|p| (p, rss_kib(p)))
        .collect();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).ok_or("bad pid")?,
        rustix::process::Signal::TERM,
    )?;
    let _ = child.wait();
    if !up {
        return Err("berthd did not run 10 services within 2 minutes".into());
    }
    let rss = rss.ok_or("no VmRSS for berthd")?;
    let forker_rss = forker.first().and_then(|f| f.1).unwrap_or(0);
    println!(
        "berthd with 10 services: VmRSS {rss} KiB ({threads} threads); forker {forker_rss} KiB ({} binary)",
        berth.display()
    );
    println!("RESULT berthd_rss_10_services {rss} KiB");
    println!("RESULT forker_rss {forker_rss} KiB");
    Ok(())
}
