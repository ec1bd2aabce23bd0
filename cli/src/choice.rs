//! `berth console list|switch|enable` and `berth engine list|switch|enable`:
//! which console and which user engine run (`berth.console.name`,
//! `berth.engine.name`; the choices are the built-in one and the OS's
//! catalogue, see `berth_configs::choice`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_api::ServiceStatus;
use berth_configs::choice::{canonical, Slot};
use berth_configs::Layout;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ChoiceCommand {
    /// List the choices; `*` marks the one the config chooses.
    #[command(alias = "ls")]
    List(ChoiceArgs),
    /// Choose NAME and switch to it now (berthd stops the current one and starts it).
    Switch(NamedChoiceArgs),
    /// Choose NAME from the next boot on (or the next config reload), leaving
    /// the running one alone until then.
    Enable(NamedChoiceArgs),
}

#[derive(Debug, Args)]
pub struct ChoiceArgs {
    /// The system's root directory; the config and the catalogues are below it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// berthd's API socket.
    #[arg(long, default_value = crate::service::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct NamedChoiceArgs {
    #[command(flatten)]
    common: ChoiceArgs,
    name: String,
    /// With `switch`: how long to wait for it to be ready, in seconds (0: do not wait).
    #[arg(long, default_value_t = 300)]
    wait: u64,
}

pub fn run(slot: Slot, cmd: ChoiceCommand) -> Result<ExitCode> {
    match cmd {
        ChoiceCommand::List(args) => list(slot, &Layout::new(&args.root)),
        ChoiceCommand::Switch(args) => choose(slot, args, true),
        ChoiceCommand::Enable(args) => choose(slot, args, false),
    }
}

/// What the merged config chooses now.
fn chosen(slot: Slot, layout: &Layout) -> Result<String> {
    Ok(chosen_in(slot, layout.load()?))
}

fn chosen_in(slot: Slot, loaded: berth_configs::Loaded) -> String {
    let name = match slot {
        Slot::Console => loaded.config.berth.console.name,
        Slot::Engine => loaded.config.berth.engine.name,
    };
    name.map(|n| canonical(slot, &n))
        .unwrap_or_else(|| slot.built_in().to_string())
}

fn list(slot: Slot, layout: &Layout) -> Result<ExitCode> {
    // The config sources are root's (they can hold secrets): without sudo the
    // choices are listed, but which one is chosen cannot be said.
    let current = match layout.load() {
        Ok(loaded) => Some(chosen_in(slot, loaded)),
        Err(berth_configs::sources::Error::Read { path, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            eprintln!(
                "berth: {} is root's; run with sudo to see which is chosen",
                path.display()
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    let defaults = berth_configs::load(vec![berth_configs::defaults()]).config;
    let mut rows = vec![[
        String::new(),
        "NAME".to_string(),
        "SERVICE".to_string(),
        "IMAGE".to_string(),
    ]];
    for name in layout.choices(slot) {
        let service = slot.service(&name);
        let image = match layout.choice_document(slot, &name) {
            Ok(None) => defaults
                .berth
                .services
                .get(&service)
                .and_then(|s| s.image.clone())
                .unwrap_or_default(),
            Ok(Some(doc)) => doc
                .tree
                .as_ref()
                .and_then(|t| t.get("berth"))
                .and_then(|b| b.get("services"))
                .and_then(|s| s.get(&service))
                .and_then(|s| s.get("image"))
                .and_then(|i| i.as_scalar().map(str::to_string))
                .unwrap_or_default(),
            Err(why) => format!("(unusable: {why})"),
        };
        let mark = if current.as_deref() == Some(name.as_str()) {
            "*"
        } else {
            ""
        };
        rows.push([mark.to_string(), name, service, image]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn choose(slot: Slot, args: NamedChoiceArgs, now: bool) -> Result<ExitCode> {
    let layout = Layout::new(&args.common.root);
    let name = canonical(slot, &args.name);
    layout.choice_document(slot, &name)?;
    let key = format!("berth.{}.name", slot.key());
    let code = crate::config::set_key(&layout, &key, &name)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let effective = chosen(slot, &layout)?;
    if effective != name {
        bail!(
            "`{key}: {name}` is saved in {}, but a later source (the kernel command line?) \
             sets it to `{effective}`; see `berth config get --origin {key}`",
            layout.local().display()
        );
    }
    let what = slot.key();
    if !now {
        println!(
            "the {what} `{name}` runs from the next boot (or the next config reload); \
             `berth {what} switch {name}` switches now"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let service = slot.service(&name);
    if slot == Slot::Console {
        // The console this command runs in is the one being replaced: its
        // sessions end with it, and berthd finishes the switch regardless.
        println!(
            "switching the console to `{name}`: this session ends when the current console \
             stops; log in again once `{name}` is up"
        );
        let _ = std::io::stdout().flush();
    }
    crate::config::apply(&args.common.root, &args.common.socket)?;
    if args.wait > 0 && args.common.socket.exists() {
        wait_ready(
            &args.common.socket,
            &service,
            Duration::from_secs(args.wait),
        )?;
        println!("the {what} `{name}` is ready (service `{service}`)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for `service` to be ready, saying what it is doing now and then.
fn wait_ready(socket: &Path, service: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    let mut said = String::new();
    loop {
        let services: Vec<ServiceStatus> = crate::service::client(socket)
            .services()
            .context("asking berthd how the switch goes")?;
        let status = services.iter().find(|s| s.name == service);
        if status.is_some_and(|s| s.ready) {
            return Ok(());
        }
        let now = match status {
            None => "not created yet".to_string(),
            Some(s) => match &s.error {
                Some(e) => format!("{:?}: {e}", s.state),
                None => format!("{:?}", s.state),
            },
        };
        if now != said {
            eprintln!("  {service}: {now} ({:.0}s)", start.elapsed().as_secs_f64());
            said = now;
        }
        if start.elapsed() > limit {
            bail!(
                "`{service}` is not ready after {}s; see `berth logs {service}`",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
