//! Which console and which user engine run: `berth.console.name` and
//! `berth.engine.name` pick one of the OS's built-in choices (declared in the
//! defaults) or a file from its catalogue (`/usr/share/berth/consoles`,
//! `/usr/share/berth/engines`), as RancherOS's `ros console|engine switch` did.
//!
//! A catalogue file is a compose-style service file declaring one service:
//! `console` for a console (it takes the place of the built-in one, so a
//! switch recreates just that service), or the engine's own name for an engine
//! (the built-in `docker` service is then removed, and the engine's data
//! directory stays on the state partition for when it is chosen again).

use std::path::PathBuf;
use std::sync::Arc;

use crate::diag::{Diagnostic, Origin};
use crate::node::Node;
use crate::sources::{source_name, Layout};
use crate::{parse_compose, parse_document, Document};

/// Why a choice's catalogue file cannot be used. `slot` is the slot's key
/// (`console`, `engine`).
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error("`{name}` is not a {slot} name; there are: {known}")]
    BadName {
        slot: &'static str,
        name: String,
        known: String,
    },
    #[error("there is no {slot} `{name}`; there are: {known}")]
    Unknown {
        slot: &'static str,
        name: String,
        known: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is invalid: {first}", path.display())]
    Invalid { path: PathBuf, first: String },
    #[error("{} must declare exactly one service, `{want}` (it declares: {})", path.display(), declared.join(", "))]
    NotOneService {
        path: PathBuf,
        want: String,
        declared: Vec<String>,
    },
}

/// What is chosen: the console or the user engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Console,
    Engine,
}

impl Slot {
    /// The key under `berth` whose `name` says what is chosen.
    pub fn key(self) -> &'static str {
        match self {
            Slot::Console => "console",
            Slot::Engine => "engine",
        }
    }

    /// The choice the defaults declare (`configs/default.yml`).
    pub fn built_in(self) -> &'static str {
        match self {
            Slot::Console => "default",
            Slot::Engine => "docker",
        }
    }

    /// The service the choice runs as.
    pub fn service(self, name: &str) -> String {
        match self {
            Slot::Console => "console".into(),
            Slot::Engine => name.into(),
        }
    }

    fn catalogue_dir(self) -> &'static str {
        match self {
            Slot::Console => "usr/share/berth/consoles",
            Slot::Engine => "usr/share/berth/engines",
        }
    }
}

/// RancherOS named engines by version (`docker-20.10.24`); Berth has one
/// docker, Debian's, and runs it for any of them.
pub fn canonical(slot: Slot, name: &str) -> String {
    let name = name.trim();
    match slot {
        Slot::Engine if name.starts_with("docker-") => "docker".into(),
        _ => name.into(),
    }
}

impl Layout {
    /// Where the catalogue of `slot` choices is.
    pub fn choices_dir(&self, slot: Slot) -> PathBuf {
        self.root().join(slot.catalogue_dir())
    }

    /// Every choice for `slot`: the built-in one first, then the catalogue's.
    pub fn choices(&self, slot: Slot) -> Vec<String> {
        let mut names = crate::sources::catalogue_names(&self.choices_dir(slot));
        names.retain(|n| n != slot.built_in());
        names.insert(0, slot.built_in().to_string());
        names
    }

    /// The catalogue file of choice `name`, checked: it parses and declares
    /// exactly the one service the choice runs as. `Ok(None)` for the built-in.
    pub fn choice_document(&self, slot: Slot, name: &str) -> Result<Option<Document>, ChoiceError> {
        if name == slot.built_in() {
            return Ok(None);
        }
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        let known = || self.choices(slot).join(", ");
        if !valid {
            return Err(ChoiceError::BadName {
                slot: slot.key(),
                name: name.to_string(),
                known: known(),
            });
        }
        let path = self.choices_dir(slot).join(format!("{name}.yml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChoiceError::Unknown {
                    slot: slot.key(),
                    name: name.to_string(),
                    known: known(),
                })
            }
            Err(source) => return Err(ChoiceError::Read { path, source }),
        };
        let doc = parse_compose(&source_name(&path), &text);
        if !doc.is_valid() {
            let first = doc
                .diagnostics
                .iter()
                .find(|d| d.is_error())
                .map(|d| d.to_string())
                .unwrap_or_default();
            return Err(ChoiceError::Invalid { path, first });
        }
        let want = slot.service(name);
        let declared: Vec<String> = doc
            .tree
            .as_ref()
            .and_then(|t| t.get("berth"))
            .and_then(|b| b.get("services"))
            .and_then(Node::as_map)
            .unwrap_or_default()
            .iter()
            .map(|e| e.key.clone())
            .collect();
        if declared != [want.clone()] {
            return Err(ChoiceError::NotOneService {
                path,
                want,
                declared,
            });
        }
        Ok(Some(doc))
    }

    /// Splices the chosen console and engine into `docs` (the sources, defaults
    /// first): the choice's file right after the defaults, so that every other
    /// source can still adjust it, and the built-in service it replaces
    /// removed — before the file for the console (whose service keeps its
    /// name), at the very end for an engine (whose service goes away, however
    /// the sources had adjusted it). A choice that cannot be used leaves the
    /// built-in one running and says why: the machine keeps a console and an engine.
    pub(crate) fn splice_choices(&self, docs: &mut Vec<Document>, at: usize) {
        let mut early = Vec::new();
        let mut late = Vec::new();
        for slot in [Slot::Console, Slot::Engine] {
            let Some(name) = chosen(docs, slot) else {
                continue;
            };
            match self.choice_document(slot, &name) {
                Ok(None) => {}
                Ok(Some(doc)) => {
                    let removal = removal(slot, &name);
                    match slot {
                        Slot::Console => early.extend([removal, doc]),
                        Slot::Engine => {
                            early.push(doc);
                            late.push(removal);
                        }
                    }
                }
                Err(why) => early.push(Document {
                    source: Arc::from(format!("berth.{}.name", slot.key())),
                    tree: None,
                    diagnostics: vec![Diagnostic::error(
                        Some(Origin::new(
                            &Arc::from(format!("berth.{}.name", slot.key())),
                            1,
                            1,
                        )),
                        format!("berth.{}.name", slot.key()),
                        format!("{why}; the {} `{}` runs", slot.key(), slot.built_in()),
                    )],
                }),
            }
        }
        docs.splice(at..at, early);
        docs.extend(late);
    }
}

/// The name the sources choose for `slot` (the latest source that sets it wins).
fn chosen(docs: &[Document], slot: Slot) -> Option<String> {
    let path = [
        "berth".to_string(),
        slot.key().to_string(),
        "name".to_string(),
    ];
    docs.iter()
        .rev()
        .filter(|d| d.is_valid())
        .filter_map(|d| d.tree.as_ref())
        .filter_map(|t| crate::keypath::lookup(t, &path))
        .find_map(|n| n.as_scalar().map(str::to_string))
        .map(|n| canonical(slot, &n))
}

/// A document removing the built-in service that choice `name` replaces.
fn removal(slot: Slot, name: &str) -> Document {
    let source: Arc<str> = Arc::from(format!("berth.{}.name: {name}", slot.key()));
    let service = slot.service(slot.built_in());
    parse_document(
        &source,
        &format!("#cloud-config\nberth:\n  services:\n    {service}: null\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX_CONSOLE: &str =
        "services:\n  console:\n    image: berth/console-busybox:latest\n    restart: always\n";
    const PODMAN: &str = "services:\n  podman:\n    image: berth/podman:latest\n    volumes: [/var/lib/containers:/var/lib/containers]\n";

    fn layout(files: &[(&str, &str)]) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    fn services(layout: &Layout) -> Vec<(String, Option<String>)> {
        let loaded = layout.load().expect("load");
        loaded
            .config
            .berth
            .services
            .iter()
            .map(|(k, s)| (k.clone(), s.image.clone()))
            .collect()
    }

    #[test]
    fn a_console_from_the_catalogue_takes_the_place_of_the_default() {
        let (_d, layout) = layout(&[
            ("usr/share/berth/consoles/busybox.yml", BUSYBOX_CONSOLE),
            (
                "var/lib/berth/config/local.yml",
                "#cloud-config\nberth:\n  console: busybox\n",
            ),
        ]);
        assert_eq!(layout.choices(Slot::Console), ["default", "busybox"]);
        let loaded = layout.load().expect("load");
        let console = &loaded.config.berth.services["console"];
        assert_eq!(
            console.image.as_deref(),
            Some("berth/console-busybox:latest")
        );
        // Replaced, not merged: nothing of the default console's is left.
        assert!(console.volumes.is_empty(), "{:?}", console.volumes);
        assert!(console.entrypoint.is_none());
        assert!(loaded.config.berth.services.contains_key("docker"));
    }

    #[test]
    fn an_engine_from_the_catalogue_replaces_docker_even_when_docker_was_adjusted() {
        let (_d, layout) = layout(&[
            ("usr/share/berth/engines/podman.yml", PODMAN),
            (
                "var/lib/berth/config/user-data.yml",
                "#cloud-config\nberth:\n  services:\n    docker:\n      environment: {A: b}\n",
            ),
            (
                "var/lib/berth/config/local.yml",
                "#cloud-config\nberth:\n  engine: {name: podman}\n",
            ),
        ]);
        let names: Vec<String> = services(&layout).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"podman".to_string()), "{names:?}");
        assert!(!names.contains(&"docker".to_string()), "{names:?}");
        assert_eq!(layout.choices(Slot::Engine), ["docker", "podman"]);
    }

    #[test]
    fn switching_back_to_the_built_in_choice_restores_it() {
        let (_d, layout) = layout(&[
            ("usr/share/berth/engines/podman.yml", PODMAN),
            (
                "var/lib/berth/config/user-data.yml",
                "#cloud-config\nberth:\n  engine: podman\n",
            ),
            (
                "var/lib/berth/config/local.yml",
                "#cloud-config\nberth:\n  engine: docker-20.10.24\n",
            ),
        ]);
        let names: Vec<String> = services(&layout).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"docker".to_string()) && !names.contains(&"podman".to_string()));
    }

    #[test]
    fn an_unknown_or_broken_choice_keeps_the_built_in_one_and_says_why() {
        let (_d, layout) = layout(&[
            (
                "usr/share/berth/engines/podman.yml",
                "services:\n  notpodman:\n    image: x\n",
            ),
            (
                "var/lib/berth/config/local.yml",
                "#cloud-config\nberth:\n  console: alpine\n  engine: podman\n",
            ),
        ]);
        let loaded = layout.load().expect("load");
        let services = &loaded.config.berth.services;
        assert_eq!(
            services["console"].image.as_deref(),
            Some("berth/console:latest")
        );
        assert!(services.contains_key("docker") && !services.contains_key("notpodman"));
        let text: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            text.iter().any(
                |t| t.contains("there is no console `alpine`; there are: default")
                    && t.contains("the console `default` runs")
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("must declare exactly one service, `podman`")),
            "{text:?}"
        );
    }
}
