//! `berth os`: which OS version runs, from which slot.

use std::process::ExitCode;

use anyhow::Result;

use crate::config::Format;

#[derive(Debug, clap::Subcommand)]
pub enum OsCommand {
    /// The running OS version, and the slot (A or B) or live medium it booted from.
    Version {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
}

/// A value of `/etc/os-release`, unquoted.
fn os_release(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

/// `A`, `B`, or `live` from the kernel command line.
fn booted_from(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("berth.slot="))
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| "live".into())
}

pub fn run(cmd: OsCommand) -> Result<ExitCode> {
    match cmd {
        OsCommand::Version { output } => {
            let release = std::fs::read_to_string("/etc/os-release")
                .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
                .unwrap_or_default();
            let version = os_release(&release, "VERSION_ID").unwrap_or_else(|| "unknown".into());
            let slot = booted_from(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"version": version, "booted_from": slot})
                ),
                Format::Text => println!(
                    "Berth {version} ({})",
                    if slot == "live" {
                        "live medium".to_string()
                    } else {
                        format!("slot {slot}")
                    }
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_slot() {
        let release = "NAME=\"Berth\"\nVERSION_ID=\"2.0\"\n";
        assert_eq!(os_release(release, "VERSION_ID").as_deref(), Some("2.0"));
        assert_eq!(booted_from("console=ttyS0 berth.slot=b panic=10"), "B");
        assert_eq!(booted_from("console=ttyS0"), "live");
    }
}
