//! `berth console-init`: the `console` service's entrypoint.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_console::supervise::Report;
use berth_console::Options;
use clap::Args;

#[derive(Debug, Args)]
pub struct ConsoleInitArgs {
    /// The console's root: its accounts, homes, sshd config and the config sources.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Apply the config (users, keys, sudo, sshd settings, host keys) and exit
    /// instead of running sshd and the login prompts.
    #[arg(long)]
    setup_only: bool,
}

/// berthd captures the service's stderr into `berth logs console`.
struct Stderr;

impl Report for Stderr {
    fn line(&mut self, text: String) {
        eprintln!("console-init: {text}");
    }
}

pub fn console_init(args: ConsoleInitArgs) -> Result<ExitCode> {
    let options = Options::new(args.root);
    let mut report = Stderr;
    if args.setup_only {
        let config = berth_console::load_config(&options.root, &mut report)?;
        let setup = berth_console::setup(&config, &options).context("console-init")?;
        for warning in &setup.warnings.0 {
            report.line(format!("warning: {warning}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    berth_console::run(&options, &mut report).context("console-init")?;
    Ok(ExitCode::SUCCESS)
}
