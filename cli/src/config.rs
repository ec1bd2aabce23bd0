//! `berth config`: validate files, and read or change the config of a system.
//!
//! Exit codes scripts can rely on: 0 success; 1 invalid config, unset key or a
//! refused change; 2 bad usage.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_configs::diag::has_errors;
use berth_configs::local::Commit;
use berth_configs::node::{self, Limits, Node, Value};
use berth_configs::sources::FileLock;
use berth_configs::{keypath, merge, Diagnostic, Layout, Severity};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check cloud-config files (on top of the built-in defaults). `-` reads stdin.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print the value of KEY (e.g. `berth.network.interfaces.eth0.dhcp`) in the merged config.
    Get {
        key: String,
        /// Print which source, line and column set each value instead.
        #[arg(long)]
        origin: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        #[command(flatten)]
        root: Root,
    },
    /// Set KEY to VALUE (YAML: `true`, `[a, b]`, `{x: 1}`) in the local config; an empty VALUE unsets it.
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        root: Root,
    },
    /// Merge a cloud-config file into the local config.
    Merge {
        file: PathBuf,
        #[command(flatten)]
        root: Root,
    },
    /// Print the merged config as YAML.
    Export {
        /// Include the built-in defaults.
        #[arg(long)]
        full: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        #[command(flatten)]
        root: Root,
    },
    /// Print the JSON Schema of a cloud-config.
    Schema,
    /// Show this boot's datasource probe: which sources were tried, which
    /// answered, how long each took and what each set.
    Sources {
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        #[command(flatten)]
        root: Root,
    },
}

#[derive(Debug, Args)]
pub struct Root {
    /// The system's root directory; config files are found below it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people (YAML for values).
    Text,
    Json,
}

pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Validate {
            files,
            strict,
            output,
        } => validate(&files, strict, output),
        ConfigCommand::Get {
            key,
            origin,
            output,
            root,
        } => get(&Layout::new(root.root), &key, origin, output),
        ConfigCommand::Set { key, value, root } => {
            applied(&root.root, set_key(&Layout::new(&root.root), &key, &value)?)
        }
        ConfigCommand::Merge { file, root } => {
            applied(&root.root, merge_file(&Layout::new(&root.root), &file)?)
        }
        ConfigCommand::Export { full, output, root } => {
            export(&Layout::new(root.root), full, output)
        }
        ConfigCommand::Schema => {
            print!("{}", berth_configs::schema::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Sources { output, root } => sources(&Layout::new(root.root), output),
    }
}

fn sources(layout: &Layout, output: Format) -> Result<ExitCode> {
    let path = layout.datasource_report();
    let Some(report) = berth_configs::datasource::Report::read(layout) else {
        bail!(
            "{}: no datasource report (berthd writes it at boot, before it applies the config)",
            path.display()
        );
    };
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", report.render()),
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(path: &Path) -> Result<(Arc<str>, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok((Arc::from("<stdin>"), text));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((Arc::from(path.display().to_string()), text))
}

fn validate(files: &[PathBuf], strict: bool, output: Format) -> Result<ExitCode> {
    let mut failed = false;
    let mut report = Vec::new();
    for file in files {
        let (source, text) = read_input(file)?;
        let doc = berth_configs::parse_document(&source, &text);
        let mut diagnostics = berth_configs::check(vec![berth_configs::defaults(), doc]);
        diagnostics.sort_by_key(|d| d.origin.as_ref().map(|o| (o.line, o.column)));
        // Only what concerns this file.
        let diagnostics: Vec<Diagnostic> = diagnostics
            .into_iter()
            .filter(|d| d.origin.as_ref().is_some_and(|o| o.source == source))
            .collect();
        let errors = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        let ok = errors == 0 && !(strict && warnings > 0);
        failed |= !ok;
        match output {
            Format::Text => {
                for d in &diagnostics {
                    println!("{d}");
                }
                println!(
                    "{source}: {} ({errors} error{}, {warnings} warning{})",
                    if ok { "valid" } else { "invalid" },
                    plural(errors),
                    plural(warnings)
                );
            }
            Format::Json => report.push(serde_json::json!({
                "file": &*source,
                "valid": ok,
                "diagnostics": diagnostics,
            })),
        }
    }
    if output == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Loads the system's config, telling stderr about sources that were left out.
fn load_system(layout: &Layout) -> Result<berth_configs::Loaded> {
    let loaded = layout.load()?;
    print_errors(&loaded.diagnostics);
    for source in &loaded.rejected {
        eprintln!("note: `{source}` has errors and is left out of the config");
    }
    Ok(loaded)
}

fn get(layout: &Layout, key: &str, origin: bool, output: Format) -> Result<ExitCode> {
    let path = keypath::split(key)?;
    let loaded = load_system(layout)?;
    let Some(node) = keypath::lookup(&loaded.tree, &path) else {
        eprintln!("berth config get: `{key}` is not set");
        return Ok(ExitCode::from(1));
    };
    if origin {
        let mut leaves = Vec::new();
        keypath::leaves(node, key, &mut leaves);
        match output {
            Format::Json => {
                let list: Vec<_> = leaves
                    .iter()
                    .map(|(k, n)| serde_json::json!({"key": k, "value": n.to_json(), "origin": n.origin}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            }
            Format::Text
                if leaves.len() == 1
                    && matches!(node.value, Value::Scalar { .. } | Value::Null) =>
            {
                println!("{}", node.origin);
            }
            Format::Text => {
                for (k, n) in leaves {
                    println!("{k}\t{}", n.origin);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match (output, &node.value) {
        (Format::Json, _) => println!("{}", serde_json::to_string_pretty(&node.to_json())?),
        (Format::Text, Value::Scalar { text, .. }) => println!("{text}"),
        (Format::Text, Value::Null) => println!("null"),
        (Format::Text, _) => print!("{}", berth_configs::emit::to_yaml(node)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth config set`, also used by `berth service enable|disable`.
pub(crate) fn set_key(layout: &Layout, key: &str, value: &str) -> Result<ExitCode> {
    let path = keypath::split(key)?;
    let source: Arc<str> = Arc::from("<value>");
    let value_node = match node::parse(&source, value, &Limits::default()) {
        Ok(n) if value.trim().is_empty() => Node::null(n.origin),
        Ok(n) => n,
        Err(d) => bail!("VALUE is not valid YAML: {d}"),
    };
    // Held from reading local.yml to writing it back: a concurrent change waits.
    let lock = layout.lock_local()?;
    let mut local = local_tree(layout)?;
    keypath::set(&mut local, &path, value_node)?;
    commit_local(layout, &local, &lock)
}

/// After a successful change of the running system's config, berthd applies it.
fn applied(root: &Path, code: ExitCode) -> Result<ExitCode> {
    if code == ExitCode::SUCCESS {
        apply(root, Path::new(crate::service::DEFAULT_SOCKET))?;
    }
    Ok(code)
}

/// Asks berthd to reload its config when it runs; it recreates only what
/// changed. (A change under another `--root` reloads nothing new: harmless.)
pub(crate) fn apply(root: &Path, socket: &Path) -> Result<()> {
    if !socket.exists() {
        if root == Path::new("/") {
            println!("berthd is not running; the change applies when it starts");
        }
        return Ok(());
    }
    let report = crate::service::client(socket).reload()?;
    for (names, what) in [
        (&report.added, "started"),
        (&report.recreated, "recreated"),
        (&report.removed, "stopped"),
    ] {
        if !names.is_empty() {
            println!("berthd: {what} {}", names.join(", "));
        }
    }
    Ok(())
}

fn merge_file(layout: &Layout, file: &Path) -> Result<ExitCode> {
    let (source, text) = read_input(file)?;
    let doc = berth_configs::parse_document(&source, &text);
    if !doc.is_valid() {
        print_errors(&doc.diagnostics);
        eprintln!("berth config merge: {source} is invalid; nothing was changed");
        return Ok(ExitCode::from(1));
    }
    // Held from reading local.yml to writing it back: a concurrent change waits.
    let lock = layout.lock_local()?;
    let mut local = local_tree(layout)?;
    if let Some(tree) = doc.tree {
        merge::merge(&mut local, tree);
    }
    commit_local(layout, &local, &lock)
}

fn local_tree(layout: &Layout) -> Result<Node> {
    let doc = layout.local_document()?;
    match doc.tree {
        Some(tree) if !has_errors(&doc.diagnostics) => Ok(tree),
        _ => {
            print_errors(&doc.diagnostics);
            bail!(
                "the local config {} is invalid; fix or remove it first",
                layout.local().display()
            )
        }
    }
}

/// Writes the new local config if the whole system config stays valid with
/// it ([`berth_configs::local::commit_local`]), and says why not otherwise.
fn commit_local(layout: &Layout, local: &Node, lock: &FileLock) -> Result<ExitCode> {
    match berth_configs::local::commit_local(layout, local, lock)? {
        Commit::Written { warnings } => {
            for d in &warnings {
                eprintln!("{d}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Commit::Rejected { errors } => {
            print_errors(&errors);
            eprintln!(
                "berth config: the change would make the config invalid; nothing was changed"
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn print_errors(diagnostics: &[Diagnostic]) {
    for d in diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
}

fn export(layout: &Layout, full: bool, output: Format) -> Result<ExitCode> {
    let loaded = load_system(layout)?;
    let tree = if full {
        loaded.tree
    } else {
        let mut tree: Option<Node> = None;
        for doc in layout.documents()? {
            let skip = &*doc.source == berth_configs::DEFAULTS_SOURCE
                || loaded.rejected.contains(&doc.source);
            if let (false, Some(t)) = (skip, doc.tree) {
                match &mut tree {
                    None => tree = Some(t),
                    Some(base) => merge::merge(base, t),
                }
            }
        }
        tree.unwrap_or_else(|| Node::empty_map(loaded.tree.origin.clone()))
    };
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&tree.to_json())?),
        Format::Text => print!("{}", berth_configs::sources::render(&tree)),
    }
    Ok(ExitCode::SUCCESS)
}
