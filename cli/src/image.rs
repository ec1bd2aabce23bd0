//! `berth image`: the image store, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use berth_images::pull::{self, PullOptions};
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
    /// Pull an image from a registry (https; http only for insecure registries).
    Pull {
        reference: String,
        /// Reach this image's registry over plain http (else `berth.registries.insecure` decides).
        #[arg(long)]
        insecure: bool,
        /// Read the config (`berth.registries`) under this root directory.
        #[arg(long, default_value = "/")]
        config_root: PathBuf,
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

pub(crate) fn human(bytes: u64) -> String {
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
            let progress = crate::progress::reporter();
            for reference in imported.references {
                unpack(&store, &reference, progress.as_ref())?;
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
                Format::Text => print!("{}", berth_configs::emit::json_to_yaml(&value)),
            }
        }
        ImageCommand::Rm { references, root } => {
            let store = root.open()?;
            for reference in references {
                store.remove(&reference)?;
                println!("removed {reference}");
            }
        }
        ImageCommand::Pull {
            reference,
            insecure,
            config_root,
            root,
        } => {
            let store = root.open()?;
            let config = berth_configs::Layout::new(&config_root).load()?.config;
            let options = pull_options(&config, &reference, insecure)?;
            let progress = crate::progress::reporter();
            let name = pull::pull(&store, &reference, &options, progress.as_ref())
                .with_context(|| format!("pulling {reference}"))?;
            unpack(&store, &name, progress.as_ref())?;
            println!("pulled {name}");
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

/// Unpacks a newly stored image's layers so it is ready to run. Unpacking
/// needs root (whiteouts are device nodes); as another user, e.g. on a build
/// host, the image is stored and its layers are unpacked on first use.
fn unpack(
    store: &Store,
    reference: &str,
    progress: &dyn berth_images::progress::Progress,
) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let image = store.resolve(reference)?;
    store
        .unpack_image(&image, &berth_images::unpack::Limits::default(), progress)
        .with_context(|| format!("unpacking {reference}"))?;
    Ok(())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Basic credentials from `berth.registries.auth`: username/password, or Docker's `auth`.
/// How to reach `reference`'s registry under `config` (plain http when
/// `insecure` or listed in `berth.registries.insecure`, its credentials).
pub(crate) fn pull_options(
    config: &berth_configs::model::CloudConfig,
    reference: &str,
    insecure: bool,
) -> Result<PullOptions> {
    let parsed = berth_images::Reference::parse(reference)?;
    let registry = parsed.registry_host().to_string();
    let mut options = PullOptions {
        insecure: config.berth.registries.insecure.clone(),
        credentials: None,
        attempts: 4,
        ca_certs: config.ca_certs.trusted.clone(),
        stall_timeout: None,
    };
    if insecure {
        options.insecure.push(registry.clone());
    }
    if let Some(auth) = config.berth.registries.auth.get(&registry) {
        options.credentials = credentials(auth);
    }
    Ok(options)
}

fn credentials(auth: &berth_configs::model::RegistryAuth) -> Option<(String, String)> {
    use base64::Engine as _;
    if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
        return Some((u.clone(), p.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.auth.as_deref()?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}
