//! `berth ps`, `berth logs`, `berth service …` and `berth boot-time`: clients
//! of berthd's API (docs/api.md) on its unix socket.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berthd::supervisor::ServiceStatus;
use berthd::timeline::Timeline;
use clap::{Args, Subcommand, ValueEnum};

pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

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

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client over the unix socket.

pub(crate) struct Response {
    status: u16,
    chunked: bool,
    reader: BufReader<UnixStream>,
}

fn connect(socket: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: the berthd API is for root only; try sudo".to_string()
            }
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is berthd running?".to_string()
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot reach berthd at {}: {hint}", socket.display())
    })
}

pub(crate) fn send(socket: &Path, method: &str, path: &str) -> anyhow::Result<Response> {
    let mut stream = connect(socket)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: berthd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request to berthd")?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("reading berthd's answer")?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("berthd answered something that is not HTTP: {line:?}"))?;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            break;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    Ok(Response {
        status,
        chunked,
        reader,
    })
}

impl Response {
    /// The whole body; an error status becomes an error with berthd's message.
    pub(crate) fn body(mut self) -> anyhow::Result<String> {
        let mut body = String::new();
        if self.chunked {
            self.stream(|chunk| {
                body.push_str(chunk);
                Ok(())
            })?;
        } else {
            self.reader.read_to_string(&mut body)?;
        }
        if self.status >= 400 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or(body);
            bail!("{message}");
        }
        Ok(body)
    }

    /// Hands each chunk of a chunked body to `f` as it arrives.
    fn stream(&mut self, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
        loop {
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                return Ok(());
            }
            let n = usize::from_str_radix(size.trim(), 16)
                .with_context(|| format!("bad chunk size {size:?} from berthd"))?;
            if n == 0 {
                return Ok(());
            }
            let mut data = vec![0u8; n + 2];
            self.reader.read_exact(&mut data)?;
            data.truncate(n);
            f(&String::from_utf8_lossy(&data))?;
        }
    }
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    socket: &Path,
    path: &str,
) -> anyhow::Result<T> {
    let body = send(socket, "GET", path)?.body()?;
    serde_json::from_str(&body).with_context(|| format!("berthd's answer to {path}"))
}

/// Query-string escaping for the few characters that matter here.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
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
            (
                berthd::supervisor::Phase::Exited | berthd::supervisor::Phase::Restarting,
                Some(c),
            ) => {
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
    let socket = &args.socket.socket;
    match args.output {
        Format::Json => {
            let body = send(socket, "GET", "/v1/services")?.body()?;
            print!("{body}");
        }
        Format::Table => {
            let services: Vec<ServiceStatus> = get_json(socket, "/v1/services")?;
            print!("{}", ps_table(&services));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/services/{}/logs?", escape(&args.service));
    if let Some(n) = args.tail {
        let _ = write!(path, "tail={n}&");
    }
    if let Some(s) = &args.since {
        let _ = write!(path, "since={}&", escape(s));
    }
    if args.follow {
        path.push_str("follow=1");
    }
    let mut response = send(
        &args.socket.socket,
        "GET",
        path.trim_end_matches(['&', '?']),
    )?;
    let stdout = std::io::stdout();
    if response.status < 400 && response.chunked {
        response.stream(|chunk| {
            let mut out = stdout.lock();
            out.write_all(chunk.as_bytes())?;
            out.flush()?;
            Ok(())
        })?;
    } else {
        let body = response.body()?;
        stdout.lock().write_all(body.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn service(cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    let (args, action) = match cmd {
        ServiceCommand::Ls(args) => return ps(args),
        ServiceCommand::Enable(args) => return include(args, true),
        ServiceCommand::Disable(args) => return include(args, false),
        ServiceCommand::Inspect(args) => {
            let body = send(
                &args.socket.socket,
                "GET",
                &format!("/v1/services/{}", escape(&args.name)),
            )?
            .body()?;
            print!("{body}");
            return Ok(ExitCode::SUCCESS);
        }
        ServiceCommand::Start(a) => (a, "start"),
        ServiceCommand::Stop(a) => (a, "stop"),
        ServiceCommand::Restart(a) => (a, "restart"),
    };
    let body = send(
        &args.socket.socket,
        "POST",
        &format!("/v1/services/{}/{action}", escape(&args.name)),
    )?
    .body()?;
    let status: ServiceStatus = serde_json::from_str(&body).context("berthd's answer")?;
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

pub fn boot_time_table(t: &Timeline) -> String {
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
    out
}

/// A Gantt chart like `systemd-analyze plot`: a row per service, created →
/// started (light), started → ready (medium), then running until it exited
/// or the end of the chart (dark).
pub fn boot_time_svg(t: &Timeline) -> String {
    let end = t
        .services
        .iter()
        .flat_map(|e| [e.created, e.started, e.ready, e.exited])
        .flatten()
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
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn boot_time(args: BootTimeArgs) -> anyhow::Result<ExitCode> {
    let t: Timeline = get_json(&args.socket.socket, "/v1/timeline")?;
    print!("{}", boot_time_table(&t));
    if let Some(path) = &args.svg {
        std::fs::write(path, boot_time_svg(&t))
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
    use berthd::timeline::Entry;

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
        let text = boot_time_table(&t);
        assert!(
            text.contains("network  1.500s   1.600s   2.500s  -       1.000s"),
            "{text}"
        );
        assert!(text.contains("last service ready at 2.500s"));
        let svg = boot_time_svg(&t);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && svg.matches("<rect").count() >= 5);
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(5.2), "5s");
        assert_eq!(human_duration(125.0), "2m5s");
        assert_eq!(human_duration(7300.0), "2h1m");
        assert_eq!(escape("2026-11-23 08:40"), "2026-11-23%2008:40");
    }
}
