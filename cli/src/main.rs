//! `berth`: the one binary of a Berth system.
//!
//! It is dispatched by its first argument (and, once PID 1 and berthd land, by
//! argv[0]). Each command lives in its own module and stays thin: the work is
//! done by the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod choice;
mod config;
mod console;
mod daemon;
mod image;
mod init;
mod install;
mod network;
mod os;
mod progress;
mod service;
mod stderr_log;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a minimal Linux that runs containers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate, read and change the cloud-config.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Manage container images: import, export, list, inspect, remove, prune.
    #[command(subcommand)]
    Image(image::ImageCommand),
    #[command(about = DAEMON_ABOUT)]
    Daemon(daemon::DaemonArgs),
    /// List the system services and their state.
    Ps(service::PsArgs),
    /// Show a service's log (`berthd` for berthd's own).
    Logs(service::LogsArgs),
    /// Start, stop, restart, list and inspect system services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// When each service was created, started and became ready since boot.
    BootTime(service::BootTimeArgs),
    /// Reboot: berthd stops the services in order, then filesystems are unmounted.
    Reboot(RebootArgs),
    /// Power off, in the same order as reboot.
    Poweroff,
    /// Halt (stop without powering off), in the same order as reboot.
    Halt,
    #[command(about = NETCONF_ABOUT)]
    Netconf(network::NetconfArgs),
    /// Network status: links, addresses, routes, DHCP leases, DNS.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    #[command(about = CONSOLE_INIT_ABOUT)]
    ConsoleInit(console::ConsoleInitArgs),
    /// Which console runs (`default`, `busybox`, …): list, switch, enable.
    #[command(subcommand)]
    Console(choice::ChoiceCommand),
    /// Which user container engine runs (`docker`, `podman`, …): list, switch, enable.
    #[command(subcommand)]
    Engine(choice::ChoiceCommand),
    /// Install the running live system onto a disk (BIOS and UEFI, A/B slots).
    Install(install::InstallArgs),
    /// The OS itself: which version runs, from which slot.
    #[command(subcommand)]
    Os(os::OsCommand),
}

#[derive(Debug, clap::Args)]
struct RebootArgs {
    /// Show the boot menu on the next boot (an installed disk: GRUB's entries,
    /// debug and rescue among them, for 10 s on the serial console and the
    /// screen), where the boot otherwise goes straight to the default entry.
    #[arg(long)]
    menu: bool,
}

// What the service entrypoints say of themselves, in the whole tree's help and
// in their own.
const DAEMON_ABOUT: &str = "Run berthd, the system container runtime and service manager";
const NETCONF_ABOUT: &str =
    "The network service's entrypoint: configure and keep the host's networking";
const CONSOLE_INIT_ABOUT: &str =
    "The console service's entrypoint: users, SSH keys, sudo, sshd and the login prompts";

/// One command's arguments, parsed without the rest of the command tree.
#[derive(Debug, Parser)]
struct Only<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

/// Parses `argv` (from its program name on) as one command's arguments alone,
/// answering `--help`, `--version` and mistakes as clap does for the whole tree.
fn parse_only<A: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    about: &'static str,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> A {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Only::<A>::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let matches = command
        .try_get_matches_from_mut(argv)
        .unwrap_or_else(|e| e.exit());
    match Only::<A>::from_arg_matches(&matches) {
        Ok(only) => only.args,
        Err(e) => e.format(&mut command).exit(),
    }
}

/// berthd and the services Berth's own images run parse only their own
/// arguments. Building clap's whole command tree is code each of them would
/// otherwise run for the first time on the boot's path (docs/benchmarks.md,
/// "The services parse only their own arguments").
fn run_service_entrypoint() -> Option<anyhow::Result<ExitCode>> {
    let mut args = std::env::args_os();
    let command = args.nth(1)?;
    let rest = args.collect::<Vec<_>>();
    let argv = |name: &str| std::iter::once(std::ffi::OsString::from(name)).chain(rest.clone());
    Some(match command.to_str()? {
        "daemon" => daemon::run(parse_only(
            "berth daemon",
            DAEMON_ABOUT,
            argv("berth daemon"),
        )),
        "netconf" => network::netconf(parse_only(
            "berth netconf",
            NETCONF_ABOUT,
            argv("berth netconf"),
        )),
        "console-init" => console::console_init(parse_only(
            "berth console-init",
            CONSOLE_INIT_ABOUT,
            argv("berth console-init"),
        )),
        _ => return None,
    })
}

#[global_allocator]
static ALLOCATOR: berth_sys::alloc::Allocator = berth_sys::alloc::Allocator;

fn main() -> ExitCode {
    // SAFETY: called first thing, before any other thread exists; SIG_DFL for
    // SIGPIPE makes `berth … | head` end quietly like other Unix tools instead of
    // panicking on the failed write (Rust ignores SIGPIPE by default).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // PID 1 (argv[0] `init`) never comes back from here.
    init::dispatch();
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0).file_name();
    if name == Some(std::ffi::OsStr::new("berthd")) {
        return finish(daemon::run(parse_only(
            "berthd",
            "berthd: Berth's system container runtime and service manager",
            std::env::args_os(),
        )));
    }
    // The kernel runs `/sbin/modprobe -q -- ALIAS` to load what a program
    // first uses (nftables for the user engine, filesystems, protocols).
    if name == Some(std::ffi::OsStr::new("modprobe")) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let dir = berth_init::modules::kernel_release()
            .map(|r| std::path::Path::new("/lib/modules").join(r))
            .unwrap_or_default();
        let conf = std::path::Path::new("/etc/modprobe.d");
        let kernel = berth_init::modules::Options::kernel(std::path::Path::new("/"));
        let code = berth_init::modules::modprobe(
            &dir,
            conf,
            &kernel,
            &args,
            |path, compressed, params| berth_init::sys::load_module_file(path, params, compressed),
        );
        return ExitCode::from(code as u8);
    }
    if let Some(result) = run_service_entrypoint() {
        return finish(result);
    }
    let cli = Cli::parse();
    // Services and berthd log their own way; a user's command shows what the
    // libraries warn of (a pull's retries, an install's skipped step).
    if !matches!(
        cli.command,
        Command::Daemon(_) | Command::Netconf(_) | Command::ConsoleInit(_)
    ) {
        stderr_log::install("berth", stderr_log::level_from_env());
    }
    let result = match cli.command {
        Command::Config(cmd) => config::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Daemon(args) => daemon::run(args),
        Command::Ps(args) => service::ps(args),
        Command::Logs(args) => service::logs(args),
        Command::Service(cmd) => service::service(cmd),
        Command::BootTime(args) => service::boot_time(args),
        Command::Reboot(args) => {
            if args.menu {
                if let Err(e) = os::ask_for_menu() {
                    return finish(Err(e));
                }
            }
            init::run(berth_init::Action::Reboot)
        }
        Command::Poweroff => init::run(berth_init::Action::PowerOff),
        Command::Halt => init::run(berth_init::Action::Halt),
        Command::Netconf(args) => network::netconf(args),
        Command::Network(cmd) => network::run(cmd),
        Command::ConsoleInit(args) => console::console_init(args),
        Command::Console(cmd) => choice::run(berth_configs::choice::Slot::Console, cmd),
        Command::Engine(cmd) => choice::run(berth_configs::choice::Slot::Engine, cmd),
        Command::Install(args) => install::run(args),
        Command::Os(cmd) => os::run(cmd),
    };
    finish(result)
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line. Library errors often already quote
/// their source in their own message; a cause said once is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
