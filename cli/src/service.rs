//! `berth ps`, `berth logs`, `berth service …` and `berth boot-time`: clients
//! of berthd's API (docs/api.md) on its unix socket.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_api::client::{Action, LogQuery};
use berth_api::{Client, ServiceStatus, Timeline};
use clap::{Args, Subcommand, ValueEnum};

pub const DEFAULT_SOCKET: &str = berth_api::SOCKET;

#[derive(Debug, Args)]
pub struct SocketArg {
    /// berthd's API socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    follow: bool,
    /// Only lines since a time (2026-11-23T08:40:00Z) or for a duration back (10m).
    #[arg(long)]
    since: Option<String>,
    /// Only the last N lines.
    #[arg(short = 'n', long = "tail")]
    tail: Option<usize>,
    /// The service (`berthd` for berthd's own log).
    service: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List the services (like `berth ps`).
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Start a stopped service.
    Start(NameArgs),
    /// Stop a service; it stays stopped until started.
    Stop(NameArgs),
    /// Stop and start a service.
    Restart(NameArgs),
    /// Everything berthd knows about a service, as JSON.
    Inspect(NameArgs),
    /// Switch on an optional service: a name from the catalogue
    /// (/usr/share/berth/services) or a compose-style file (`services:` at the top).
    Enable(IncludeArgs),
    /// Switch an optional service off again; berthd stops and removes it.
    Disable(IncludeArgs),
}

#[derive(Debug, Args)]
pub struct IncludeArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The system's root directory; the config and the catalogue are below it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// A catalogue name (`crond`), or the path of a service file.
    service: String,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    socket: SocketArg,
    name: String,
}

#[derive(Debug, Args)]
pub struct BootTimeArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Also draw the timeline as an SVG chart into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// berthd's API at `socket` (the one client, in `berth-api`).
pub(crate) fn client(socket: &Path) -> Client {
    Client::new(socket)
}

// ---------------------------------------------------------------------------
// Commands.

fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn ps_table(services: &[ServiceStatus]) -> String {
    let mut rows = vec![[
        "NAME", "IMAGE", "STATE", "HEALTH", "RESTARTS", "UPTIME", "PID",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for s in services {
        let state = match (s.state, s.exit_code) {
            (berth_api::Phase::Exited | berth_api::Phase::Restarting, Some(c)) => {
                format!("{} ({c})", s.state)
            }
            _ => s.state.to_string(),
        };
        rows.push(vec![
            s.name.clone(),
            s.image.clone().unwrap_or_else(|| "-".into()),
            state,
            s.health.map_or("-".into(), |h| h.to_string()),
            s.restarts.to_string(),
            s.uptime.map_or("-".into(), human_duration),
            s.pid.map_or("-".into(), |p| p.to_string()),
        ]);
    }
    let mut out = table(&rows);
    for s in services {
        if let Some(e) = &s.error {
            let _ = writeln!(out, "{}: {e}", s.name);
        }
    }
    out
}

pub fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.socket.socket);
    match args.output {
        // berthd's own JSON, as it wrote it.
        Format::Json => print!("{}", client.request("GET", "/v1/services")?.text()?),
        Format::Table => print!("{}", ps_table(&client.services()?)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let query = LogQuery {
        tail: args.tail,
        since: args.since,
        follow: args.follow,
    };
    let stdout = std::io::stdout();
    client(&args.socket.socket)
        .logs(&args.service, &query)?
        .chunks(|chunk| {
            let mut out = stdout.lock();
            out.write_all(chunk)?;
            out.flush()
        })?;
    Ok(ExitCode::SUCCESS)
}

pub fn service(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    let (args, action) = match cmd {
        ServiceCommand::Ls(args) => return ps(args),
        ServiceCommand::Enable(args) => return include(args, true),
        ServiceCommand::Disable(args) => return include(args, false),
        ServiceCommand::Inspect(args) => {
            let path = format!("/v1/services/{}", berth_api::client::escape(&args.name));
            print!(
                "{}",
                client(&args.socket.socket).request("GET", &path)?.text()?
            );
            return Ok(ExitCode::SUCCESS);
        }
        ServiceCommand::Start(a) => (a, Action::Start),
        ServiceCommand::Stop(a) => (a, Action::Stop),
        ServiceCommand::Restart(a) => (a, Action::Restart),
    };
    let status = client(&args.socket.socket).act(&args.name, action)?;
    let mut line = format!("{}: {}", status.name, status.state);
    if let Some(pid) = status.pid {
        let _ = write!(line, " (pid {pid})");
    }
    if let Some(e) = &status.error {
        let _ = write!(line, ": {e}");
    }
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// PID 1's milestones, `name seconds` lines that it appends to `init-times`
/// beside berthd's socket (stage 1 and 2, and the ready line); a line that does
/// not read as one is skipped, since a chart is never worth failing for.
pub fn init_milestones(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (name, secs) = l.split_once(' ')?;
            Some((name.to_string(), secs.trim().parse().ok()?))
        })
        .collect()
}

pub fn boot_time_table(t: &Timeline, milestones: &[(String, f64)]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.3}s"));
    let mut rows = vec![[
        "SERVICE",
        "CREATED",
        "STARTED",
        "READY",
        "EXITED",
        "CREATE→READY",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for e in &t.services {
        let took = match (e.created, e.ready) {
            (Some(c), Some(r)) => format!("{:.3}s", r - c),
            _ => "-".into(),
        };
        rows.push(vec![
            e.service.clone(),
            f(e.created),
            f(e.started),
            f(e.ready),
            f(e.exited),
            took,
        ]);
    }
    let mut out = format!(
        "times are since the kernel booted; berthd started at {:.3}s\n",
        t.berthd_started
    );
    out.push_str(&table(&rows));
    if let Some(last) = t.services.iter().filter_map(|e| e.ready).reduce(f64::max) {
        let _ = writeln!(out, "last service ready at {last:.3}s");
    }
    if !milestones.is_empty() {
        let marks: Vec<String> = milestones
            .iter()
            .map(|(name, at)| format!("{name} {at:.3}s"))
            .collect();
        let _ = writeln!(out, "PID 1: {}", marks.join(", "));
    }
    out
}

/// A Gantt chart like `systemd-analyze plot`: a row per service, created →
/// started (light), started → ready (medium), then running until it exited
/// or the end of the chart (dark).
pub fn boot_time_svg(t: &Timeline, milestones: &[(String, f64)]) -> String {
    let end = t
        .services
        .iter()
        .flat_map(|e| [e.created, e.started, e.ready, e.exited])
        .flatten()
        .chain(milestones.iter().map(|(_, at)| *at))
        .fold(t.berthd_started, f64::max)
        + 0.5;
    let (left, row, label) = (10.0, 22.0, 160.0);
    let width = 1000.0;
    let scale = (width - label - 2.0 * left) / end.max(0.001);
    let x = |s: f64| label + left + s * scale;
    let height = 40.0 + row * (t.services.len() as f64 + 1.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // A tick every second (every 10 s on long boots).
    let step = if end > 30.0 { 10.0 } else { 1.0 };
    let mut s = 0.0;
    while s <= end {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="20" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="14" text-anchor="middle">{2}s</text>"##,
            x(s),
            height - 10.0,
            s
        );
        s += step;
    }
    let bar = |svg: &mut String, y: f64, from: f64, to: f64, color: &str| {
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
            x(from),
            y,
            ((to - from) * scale).max(1.0),
            row - 6.0
        );
    };
    let mut y = 24.0;
    bar(&mut svg, y, 0.0, t.berthd_started, "#bbbbbb");
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{:.1}">kernel + init</text>"#,
        y + 12.0
    );
    for e in &t.services {
        y += row;
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="{:.1}">{}</text>"#,
            y + 12.0,
            xml_escape(&e.service)
        );
        let Some(created) = e.created else { continue };
        let started = e.started.unwrap_or(created);
        let stop = e.exited.unwrap_or(end);
        bar(&mut svg, y, created, started, "#f3c9a8");
        match e.ready {
            Some(ready) => {
                bar(&mut svg, y, started, ready, "#e8915a");
                bar(&mut svg, y, ready, stop.max(ready), "#b5502a");
            }
            None => bar(&mut svg, y, started, stop, "#e8915a"),
        }
    }
    // PID 1's milestones as labelled lines across the chart (the ready line
    // among them: where a boot ends for whoever waits for it).
    for (i, (name, at)) in milestones.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="20" x2="{0:.1}" y2="{1:.1}" stroke="#3a6ea5" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2:.1}" fill="#3a6ea5" font-size="10">{3}</text>"##,
            x(*at),
            height - 10.0,
            height - 12.0 - 10.0 * (i % 2) as f64,
            xml_escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn boot_time(args: BootTimeArgs) -> anyhow::Result<ExitCode> {
    let t: Timeline = client(&args.socket.socket).timeline()?;
    let milestones = args
        .socket
        .socket
        .parent()
        .and_then(|run| std::fs::read_to_string(run.join("init-times")).ok())
        .map(|text| init_milestones(&text))
        .unwrap_or_default();
    print!("{}", boot_time_table(&t, &milestones));
    if let Some(path) = &args.svg {
        std::fs::write(path, boot_time_svg(&t, &milestones))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("chart written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth service enable|disable`: sets `berth.services_include` in the local
/// config (validated like `berth config set`) and has berthd apply it.
fn include(args: IncludeArgs, on: bool) -> anyhow::Result<ExitCode> {
    let layout = berth_configs::Layout::new(&args.root);
    let key = if args.service.starts_with('/') || !args.service.contains('/') {
        args.service.clone()
    } else {
        let absolute = std::env::current_dir()?.join(&args.service);
        absolute.to_string_lossy().into_owned()
    };
    if on {
        let path = layout
            .service_file_path(&key)
            .context("service files are read from the catalogue or a local path, not URLs")?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !key.contains('/') => {
                let known = berth_configs::sources::catalogue_names(&layout.catalogue());
                bail!(
                    "there is no service `{key}` in the catalogue ({}); it has: {}",
                    layout.catalogue().display(),
                    if known.is_empty() {
                        "nothing".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let source = berth_configs::sources::source_name(&path);
        let doc = berth_configs::parse_compose(&source, &text);
        for d in &doc.diagnostics {
            eprintln!("{d}");
        }
        if !doc.is_valid() {
            eprintln!("berth service enable: {source} is invalid; nothing was changed");
            return Ok(ExitCode::from(1));
        }
    }
    let quoted = format!("berth.services_include.\"{key}\"");
    let code = crate::config::set_key(&layout, &quoted, if on { "true" } else { "false" })?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    println!("{} {key}", if on { "enabled" } else { "disabled" });
    crate::config::apply(&args.root, &args.socket.socket)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::Entry;

    #[test]
    fn boot_time_renders_as_table_and_chart() {
        let t = Timeline {
            berthd_started: 1.2,
            services: vec![
                Entry {
                    service: "network".into(),
                    created: Some(1.5),
                    started: Some(1.6),
                    ready: Some(2.5),
                    ..Default::default()
                },
                Entry {
                    service: "a<b".into(),
                    created: Some(2.6),
                    ..Default::default()
                },
            ],
        };
        let milestones = init_milestones("stage1_start 0.900\nbroken\nready 2.700\n");
        assert_eq!(
            milestones,
            vec![
                ("stage1_start".to_string(), 0.9),
                ("ready".to_string(), 2.7)
            ]
        );
        let text = boot_time_table(&t, &milestones);
        assert!(
            text.contains("network  1.500s   1.600s   2.500s  -       1.000s"),
            "{text}"
        );
        assert!(text.contains("last service ready at 2.500s"));
        assert!(
            text.contains("PID 1: stage1_start 0.900s, ready 2.700s"),
            "{text}"
        );
        let svg = boot_time_svg(&t, &milestones);
        assert!(svg.contains(">ready</text>"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.matches("<rect").count() >= 5);
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(5.2), "5s");
        assert_eq!(human_duration(125.0), "2m5s");
        assert_eq!(human_duration(7300.0), "2h1m");
    }
}
