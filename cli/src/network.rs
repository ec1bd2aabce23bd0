//! `berth netconf` (the `network` service's entrypoint) and `berth network status`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_network::{ConfigSource, Options, Signals};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct NetconfArgs {
    /// Read the config from every source of the system under this root.
    #[arg(long, default_value = "/", conflicts_with = "config")]
    root: PathBuf,
    /// Read the config from this one file instead (without the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where resolv.conf, hostname and hosts are written. Default: /host/etc
    /// when it exists (the network service sees the host's /etc there), else /etc.
    #[arg(long)]
    etc: Option<PathBuf>,
    /// Where the `ready` file and the state for `berth network status` go.
    #[arg(long, default_value = "/run/berth/network")]
    run_dir: PathBuf,
    /// Leave the kernel hostname alone.
    #[arg(long)]
    no_kernel_hostname: bool,
    /// Log DHCP details too.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Links, addresses, routes, DHCP leases and DNS.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[arg(long, default_value = "/run/berth/network")]
    run_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn netconf(args: NetconfArgs) -> Result<ExitCode> {
    // berthd keeps the service's stderr in its log.
    crate::stderr_log::install(
        "netconf",
        if args.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        },
    );
    let source = match args.config {
        Some(path) => ConfigSource::File(path),
        None => ConfigSource::Layout(args.root),
    };
    let etc = args.etc.unwrap_or_else(|| {
        let host = PathBuf::from("/host/etc");
        if host.is_dir() {
            host
        } else {
            PathBuf::from("/etc")
        }
    });
    let mut options = Options::new(source, &etc);
    options.run_dir = args.run_dir;
    options.set_kernel_hostname = !args.no_kernel_hostname;
    let signals = Signals::install()?;
    berth_network::run(&options, signals).context("netconf")?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: NetworkCommand) -> Result<ExitCode> {
    match cmd {
        NetworkCommand::Status(args) => {
            let status = berth_network::status::status(&args.run_dir)
                .context("cannot read the network status")?;
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Format::Text => print!("{}", berth_network::status::render(&status)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
