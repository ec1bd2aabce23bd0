//! `berth.modules`: `"name"` or `"name param=value …"`, loaded with
//! finit_module(2) — no modprobe — dependencies first, through the same
//! `modules.dep` resolver and loader PID 1 uses (`berth_sys::modules`).
//! The parameters go to the named module only.

use std::path::{Path, PathBuf};

use super::{fingerprint, Applied, HostOps, HostPaths, Problem, Report};

/// `"bonding mode=1 miimon=100"` → (`bonding`, `mode=1 miimon=100`).
pub fn parse(entry: &str) -> (String, String) {
    let entry = entry.trim();
    match entry.split_once(char::is_whitespace) {
        Some((name, params)) => (
            name.to_string(),
            params.split_whitespace().collect::<Vec<_>>().join(" "),
        ),
        None => (entry.to_string(), String::new()),
    }
}

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    modules: &[String],
    before: &Applied,
    applied: &mut Applied,
    report: &mut Report,
) {
    let todo: Vec<(usize, &String)> = modules
        .iter()
        .enumerate()
        .filter(|(_, m)| !before.modules.contains(&fingerprint(m)))
        .collect();
    if todo.is_empty() {
        return;
    }
    let Some(dir) = &paths.modules else {
        for (i, _) in todo {
            report.problems.push(Problem::new(
                format!("berth.modules[{i}]"),
                "the running kernel's release is unknown, so are its modules",
            ));
        }
        return;
    };
    for (i, entry) in todo {
        let field = format!("berth.modules[{i}]");
        let (name, params) = parse(entry);
        if name.is_empty() {
            report
                .problems
                .push(Problem::new(field, "no module name".to_string()));
            continue;
        }
        match load(ops, dir, &paths.root, &name, &params) {
            Ok(line) => {
                report.done(format!("{field}: {line}"));
                applied.modules.push(fingerprint(entry));
            }
            Err(e) => report.problems.push(Problem::new(field, e.to_string())),
        }
    }
}

/// Why a `berth.modules` entry is not loaded; the text is the entry's problem.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{}: {source}", modules_dep.display())]
    ModulesDep {
        modules_dep: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `why` is what the loader reported for that file.
    #[error("loading {module}: {why}")]
    Load { module: String, why: String },
    #[error("no module `{name}` in {}", modules_dep.display())]
    Missing { name: String, modules_dep: PathBuf },
}

/// Loads one module and what it needs; what happened, or why not.
/// The entry's parameters come first and the kernel command line's after
/// them (`module.param=value`, which win), as modprobe orders modprobe.d's
/// and the command line's; a module named here is loaded whatever
/// `modprobe.blacklist=` says, as `modprobe NAME` does.
pub(crate) fn load(
    ops: &dyn HostOps,
    dir: &Path,
    root: &Path,
    name: &str,
    params: &str,
) -> Result<String, ModuleError> {
    let wanted = [name.to_string()];
    let options = berth_sys::modules::Options::default()
        .with_params(name, params)
        .then(berth_sys::modules::Options::kernel(root).named());
    let report = berth_sys::modules::load_with(dir, Some(&wanted), &options, |path, c, args| {
        ops.load_module(path, args, c)
    })
    .map_err(|source| ModuleError::ModulesDep {
        modules_dep: dir.join("modules.dep"),
        source,
    })?;
    if let Some((module, why)) = report.failed.first() {
        return Err(ModuleError::Load {
            module: module.clone(),
            why: why.clone(),
        });
    }
    if report
        .missing
        .iter()
        .any(|m| *m == berth_sys::modules::normalize(name))
    {
        return Err(ModuleError::Missing {
            name: name.to_string(),
            modules_dep: dir.join("modules.dep"),
        });
    }
    let total = report.loaded + report.already + report.absent;
    Ok(if total == 0 {
        format!(
            "{name} is built into the kernel{}",
            if params.is_empty() {
                ""
            } else {
                "; parameters of built-in modules go on the kernel command line"
            }
        )
    } else if report.loaded == 0 {
        format!("{name} already loaded")
    } else {
        format!(
            "loaded {name}{}{}",
            if params.is_empty() { "" } else { " " },
            params
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;

    #[test]
    fn names_and_parameters() {
        assert_eq!(parse("bonding"), ("bonding".into(), String::new()));
        assert_eq!(
            parse(" bonding  mode=1   miimon=100 "),
            ("bonding".into(), "mode=1 miimon=100".into())
        );
    }

    #[test]
    fn dependencies_first_parameters_to_the_module_and_problems_by_index() {
        let r = root();
        let dir = r.paths.modules.clone().expect("modules dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/drivers/net/bonding/bonding.ko.xz: kernel/net/tls/tls.ko.xz\n\
             kernel/net/tls/tls.ko.xz:\n\
             kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n\
             kernel/net/bridge/bridge.ko:\n",
        )
        .expect("dep");
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").expect("builtin");
        // The kernel command line's parameters come after the entry's (the
        // kernel keeps the last value), and its blacklist does not stop a
        // module named here.
        std::fs::create_dir_all(r.paths.root.join("proc")).expect("proc");
        std::fs::write(
            r.paths.root.join("proc/cmdline"),
            "console=ttyS0 bonding.miimon=100 tls.x=1 modprobe.blacklist=bonding\n",
        )
        .expect("cmdline");
        let ops = Recording::default();
        ops.fail("module", "br_netfilter", libc::EPERM);
        let mut report = Report::default();
        let mut applied = Applied::default();
        let modules = [
            "bonding mode=1".to_string(),
            "nosuch".into(),
            "br_netfilter".into(),
            "ext4".into(),
        ];
        apply(
            &ops,
            &r.paths,
            &modules,
            &Applied::default(),
            &mut applied,
            &mut report,
        );
        let calls: Vec<(String, String, bool)> = ops
            .calls()
            .into_iter()
            .map(|c| match c {
                Call::Module {
                    path,
                    params,
                    compressed,
                } => (berth_sys::modules::module_name(&path), params, compressed),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("tls".to_string(), "x=1".to_string(), true),
                ("bonding".into(), "mode=1 miimon=100".into(), true),
                ("bridge".into(), String::new(), false),
                ("br_netfilter".into(), String::new(), false),
            ]
        );
        let fields: Vec<&str> = report.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["berth.modules[1]", "berth.modules[2]"]);
        assert!(report.problems[0].message.contains("no module `nosuch`"));
        assert_eq!(applied.modules.len(), 2, "bonding and the built-in ext4");
    }
}
