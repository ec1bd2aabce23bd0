//! `berth image`: the image store, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_images::{archive, Store};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        #[command(flatten)]
        root: Root,
    },
    /// Import an OCI layout directory, an oci-archive tar or a `docker save` tar.
    Import {
        path: PathBuf,
        /// Name for the image (a bare tag in the source is kept as its tag).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        root: Root,
    },
    /// Write an image to FILE as an oci-archive tar.
    Export {
        reference: String,
        file: PathBuf,
        #[command(flatten)]
        root: Root,
    },
    /// Show an image's manifest and config.
    Inspect {
        reference: String,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        #[command(flatten)]
        root: Root,
    },
    /// Forget image names (data is freed by `prune`).
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        #[command(flatten)]
        root: Root,
    },
    /// Delete blobs and unpacked layers no image uses.
    Prune {
        #[command(flatten)]
        root: Root,
    },
}

#[derive(Debug, Args)]
pub struct Root {
    /// Where the store lives (`images/` and `layers/` below it).
    #[arg(long, default_value = "/var/lib/berth")]
    root: PathBuf,
}

impl Root {
    fn open(&self) -> Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("opening the image store at {}", self.root.display()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn run(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Ls { output, root } => {
            let images = root.open()?.list()?;
            match output {
                Format::Json => {
                    let list: Vec<_> = images
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "reference": i.reference,
                                "digest": i.manifest_digest.to_string(),
                                "size": i.size(),
                                "created": i.config.created,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Format::Text => {
                    println!("{:<48} {:<19} {:>10}", "REFERENCE", "DIGEST", "SIZE");
                    for i in &images {
                        let digest = i.manifest_digest.to_string();
                        println!(
                            "{:<48} {:<19} {:>10}",
                            i.reference,
                            &digest[..19.min(digest.len())],
                            human(i.size())
                        );
                    }
                }
            }
        }
        ImageCommand::Import { path, name, root } => {
            let store = root.open()?;
            let imported = archive::import(&store, &path, name.as_deref())
                .with_context(|| format!("importing {}", path.display()))?;
            for reference in imported.references {
                println!("imported {reference}");
            }
        }
        ImageCommand::Export {
            reference,
            file,
            root,
        } => {
            archive::export(&root.open()?, &reference, &file)
                .with_context(|| format!("exporting {reference}"))?;
            println!("wrote {}", file.display());
        }
        ImageCommand::Inspect {
            reference,
            output,
            root,
        } => {
            let image = root.open()?.resolve(&reference)?;
            let value = serde_json::json!({
                "reference": image.reference,
                "digest": image.manifest_digest.to_string(),
                "manifest": image.manifest,
                "config": image.config,
            });
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&value)?),
                Format::Text => print!("{}", serde_yaml::to_string(&value)?),
            }
        }
        ImageCommand::Rm { references, root } => {
            let store = root.open()?;
            for reference in references {
                store.remove(&reference)?;
                println!("removed {reference}");
            }
        }
        ImageCommand::Prune { root } => {
            let report = root.open()?.prune()?;
            println!(
                "removed {} blobs ({}) and {} unpacked layers",
                report.blobs_removed,
                human(report.bytes_freed),
                report.layers_removed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
