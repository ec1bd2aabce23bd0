//! Rewrites a freshly parsed document into the one canonical shape the model reads:
//! the `rancher:` section becomes `berth:`, and shorthands that hold structures
//! (`users: [default]`, `depends_on: [a, b]`, `console: debian`, `vlans: "100,200:x"`)
//! become their long forms. Doing this on the tree keeps positions, so errors in
//! shorthand still point at what the user wrote.

use crate::diag::Diagnostic;
use crate::merge::merge;
use crate::node::{Entry, Node, Value};

/// RancherOS keys Berth knows and deliberately does not implement.
pub const RANCHER_UNSUPPORTED: &[&str] = &[
    "autoformat",
    "bootstrap",
    "bootstrap_docker",
    "cloud_init_services",
    "debug",
    "defaults",
    "disable",
    "force_console_rebuild",
    "http_load_retries",
    "hypervisor_service",
    "no_sharedroot",
    "password",
    "preload_wait",
    "recovery",
    "repositories",
    "resize_device",
    "restart_services",
    "rm_usr",
    "shutdown_timeout",
    "system_docker",
    "user_docker",
];

/// RancherOS state keys with no Berth equivalent.
const RANCHER_STATE_UNSUPPORTED: &[&str] = &[
    "boot_dev",
    "boot_fstype",
    "cryptsetup",
    "directory",
    "formatzero",
    "lvm_scan",
    "mdadm_scan",
    "oem_dev",
    "oem_fstype",
    "rngd",
    "script",
];

pub fn normalize(doc: &mut Node, diagnostics: &mut Vec<Diagnostic>) {
    translate_rancher(doc, diagnostics);
    if let Some(users) = doc.get_mut("users") {
        for_each_item(users, |user| scalar_to_map(user, "name"));
        normalize_users(users, diagnostics);
    }
    if let Some(Value::Seq(files)) = doc.get_mut("write_files").map(|f| &mut f.value) {
        for file in files {
            binary_content_is_base64(file);
        }
    }
    if let Some(berth) = doc.get_mut("berth") {
        // `console: busybox` and `engine: podman` name the choice.
        for key in ["console", "engine"] {
            if let Some(choice) = berth.get_mut(key) {
                scalar_to_map(choice, "name");
            }
        }
        if let Some(services) = berth.get_mut("services").and_then(Node::as_map_mut) {
            for service in services {
                if let Some(deps) = service.value.get_mut("depends_on") {
                    list_to_map(deps);
                }
            }
        }
        let interfaces = berth
            .get_mut("network")
            .and_then(|n| n.get_mut("interfaces"))
            .and_then(Node::as_map_mut);
        for iface in interfaces.into_iter().flatten() {
            if let Some(vlans) = iface.value.get_mut("vlans") {
                expand_vlans(vlans);
            }
        }
    }
}

/// cloud-init still accepts its old hyphenated user keys (`lock-passwd`); so does Berth,
/// with a note. An entry with no `name` that only configures a snap user is dropped.
fn normalize_users(users: &mut Node, diagnostics: &mut Vec<Diagnostic>) {
    let Value::Seq(items) = &mut users.value else {
        return;
    };
    items.retain(|user| {
        let snap_only = user.get("name").is_none() && user.get("snapuser").is_some();
        if snap_only {
            diagnostics.push(Diagnostic::warning(
                Some(user.origin.clone()),
                "users",
                "a `snapuser` entry has no Berth equivalent; it is ignored",
            ));
        }
        !snap_only
    });
    for user in items.iter_mut() {
        for entry in user.as_map_mut().into_iter().flatten() {
            if entry.key.contains('-') {
                let modern = entry.key.replace('-', "_");
                diagnostics.push(Diagnostic::note(
                    Some(entry.key_origin.clone()),
                    "users",
                    format!("`{}` is cloud-init's old spelling of `{modern}`", entry.key),
                ));
                entry.written_as = Some(entry.key.clone());
                entry.key = modern;
            }
        }
    }
}

/// `content: !!binary …` without an `encoding` means base64, as in cloud-init.
fn binary_content_is_base64(file: &mut Node) {
    let binary = file.get("content").is_some_and(|c| c.binary);
    if binary && file.get("encoding").is_none() {
        let origin = file
            .get("content")
            .map(|c| c.origin.clone())
            .unwrap_or(file.origin.clone());
        if let Some(entries) = file.as_map_mut() {
            entries.push(Entry::new(
                "encoding",
                origin.clone(),
                Node::string("b64", origin),
            ));
        }
    }
}

fn for_each_item(node: &mut Node, f: impl Fn(&mut Node)) {
    if let Value::Seq(items) = &mut node.value {
        items.iter_mut().for_each(f);
    }
}

/// `x` → `{key: x}`.
fn scalar_to_map(node: &mut Node, key: &str) {
    if matches!(node.value, Value::Scalar { .. }) {
        let scalar = node.clone();
        node.value = Value::Map(vec![Entry::new(key, scalar.origin.clone(), scalar)]);
    }
}

/// `[a, b]` → `{a: {}, b: {}}` (compose's short `depends_on`).
fn list_to_map(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    if !items
        .iter()
        .all(|i| matches!(i.value, Value::Scalar { .. }))
    {
        return;
    }
    let entries = items
        .iter()
        .map(|item| {
            let name = item.as_scalar().unwrap_or_default().to_string();
            Entry::new(
                name,
                item.origin.clone(),
                Node::empty_map(item.origin.clone()),
            )
        })
        .collect();
    node.value = Value::Map(entries);
}

/// `[a=b, c]` → `{a: b, c: null}` (compose's list form), so labels can be read by key.
fn list_labels_to_map(node: &mut Node) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    let mut entries = Vec::new();
    for item in items {
        let Some(text) = item.as_scalar() else {
            return;
        };
        let (key, value) = match text.split_once('=') {
            Some((k, v)) => (k, Node::string(v, item.origin.clone())),
            None => (text, Node::null(item.origin.clone())),
        };
        entries.push(Entry::new(key, item.origin.clone(), value));
    }
    node.value = Value::Map(entries);
}

/// RancherOS's `vlans: "100,200:name"` → `[{id: 100}, {id: 200, name: name}]`.
fn expand_vlans(node: &mut Node) {
    let Some(text) = node.as_scalar().map(str::to_string) else {
        return;
    };
    let origin = node.origin.clone();
    let items = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|spec| {
            let (id, name) = match spec.split_once(':') {
                Some((id, name)) => (id, Some(name)),
                None => (spec, None),
            };
            let mut entries = vec![Entry::new(
                "id",
                origin.clone(),
                Node::new(
                    Value::Scalar {
                        text: id.to_string(),
                        quoted: false,
                    },
                    origin.clone(),
                ),
            )];
            if let Some(name) = name {
                entries.push(Entry::new(
                    "name",
                    origin.clone(),
                    Node::string(name, origin.clone()),
                ));
            }
            Node::new(Value::Map(entries), origin.clone())
        })
        .collect();
    node.value = Value::Seq(items);
}

fn translate_rancher(doc: &mut Node, diagnostics: &mut Vec<Diagnostic>) {
    let Some(rancher) = doc.remove("rancher") else {
        return;
    };
    let key_origin = rancher.key_origin.clone();
    diagnostics.push(Diagnostic::note(
        Some(key_origin.clone()),
        "rancher",
        "the RancherOS `rancher:` section was translated to `berth:`",
    ));
    let mut section = rancher.value;
    // `rancher:` with nothing under it is common in RancherOS docs; it means nothing.
    if matches!(section.value, Value::Null) {
        section.value = Value::Map(Vec::new());
    }
    let Value::Map(entries) = std::mem::replace(&mut section.value, Value::Null) else {
        diagnostics.push(Diagnostic::error(
            Some(section.origin),
            "rancher",
            "`rancher:` must be a mapping",
        ));
        return;
    };
    let mut translated = Vec::new();
    let mut autologin = None;
    for entry in entries {
        let path = format!("rancher.{}", entry.key);
        let origin = Some(entry.key_origin.clone());
        if RANCHER_UNSUPPORTED.contains(&entry.key.as_str()) {
            diagnostics.push(Diagnostic::warning(
                origin,
                path,
                format!(
                    "`{}` is a RancherOS key Berth does not support; it is ignored",
                    entry.key
                ),
            ));
            continue;
        }
        match entry.key.as_str() {
            "docker" => {
                let (engine, insecure) = translate_docker(entry, diagnostics);
                translated.push(engine);
                translated.extend(insecure);
            }
            // RancherOS's `log` is a switch for its own logging service.
            "log" if !matches!(entry.value.value, Value::Map(_)) => {
                unsupported(&entry, "rancher", diagnostics);
            }
            "autologin" => autologin = Some(entry),
            "cloud_init" => {
                for sub in map_entries(entry, diagnostics, &path) {
                    if sub.key == "datasources" {
                        translated.push(renamed(sub, "datasources"));
                    } else {
                        unsupported(&sub, &path, diagnostics);
                    }
                }
            }
            "registry_auths" => {
                let origin = entry.key_origin.clone();
                let auth = renamed(entry, "auth");
                translated.push(Entry::new(
                    "registries",
                    origin.clone(),
                    Node::new(Value::Map(vec![auth]), origin),
                ));
            }
            "ssh" => translated.push(keep_only(entry, &["port"], diagnostics, &path)),
            "upgrade" => translated.push(keep_only(entry, &["image"], diagnostics, &path)),
            "state" => {
                let mut entry = entry;
                if let Some(map) = entry.value.as_map_mut() {
                    map.retain(|sub| {
                        let keep = !RANCHER_STATE_UNSUPPORTED.contains(&sub.key.as_str());
                        if !keep {
                            unsupported(sub, &path, diagnostics);
                        }
                        keep
                    });
                }
                translated.push(entry);
            }
            "services" => {
                let mut entry = entry;
                for service in entry.value.as_map_mut().into_iter().flatten() {
                    translate_service(&mut service.value);
                }
                translated.push(entry);
            }
            _ => translated.push(entry),
        }
    }
    if let Some(entry) = autologin {
        add_autologin(&mut translated, entry);
    }
    let mut berth = Node::new(Value::Map(translated), section.origin);
    let existing = doc.remove("berth");
    if let Some(existing) = existing {
        // Both sections present: what is written under `berth:` wins.
        merge(&mut berth, existing.value);
    }
    let mut entry = Entry::new("berth", key_origin, berth);
    entry.written_as = Some("rancher".into());
    if let Some(entries) = doc.as_map_mut() {
        entries.push(entry);
    }
}

/// `rancher.autologin: tty1` → `berth.console.autologin: [tty1]`, beside any `console` name.
fn add_autologin(translated: &mut Vec<Entry>, entry: Entry) {
    let origin = entry.key_origin.clone();
    let mut value = entry.value;
    if matches!(value.value, Value::Scalar { .. }) {
        value = Node::new(Value::Seq(vec![value.clone()]), value.origin);
    }
    let autologin = Entry::new("autologin", origin.clone(), value);
    let console = match translated.iter().position(|e| e.key == "console") {
        Some(i) => &mut translated[i].value,
        None => {
            let empty = Node::empty_map(origin.clone());
            translated.push(Entry::new("console", origin, empty));
            let last = translated.len() - 1;
            &mut translated[last].value
        }
    };
    scalar_to_map(console, "name");
    if let Some(entries) = console.as_map_mut() {
        entries.retain(|e| e.key != "autologin");
        entries.push(autologin);
    }
}

fn unsupported(entry: &Entry, parent: &str, diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.push(Diagnostic::warning(
        Some(entry.key_origin.clone()),
        format!("{parent}.{}", entry.key),
        format!(
            "`{}` is a RancherOS key Berth does not support; it is ignored",
            entry.key
        ),
    ));
}

fn map_entries(entry: Entry, diagnostics: &mut Vec<Diagnostic>, path: &str) -> Vec<Entry> {
    match entry.value.value {
        Value::Map(entries) => entries,
        Value::Null => Vec::new(),
        _ => {
            diagnostics.push(Diagnostic::error(
                Some(entry.value.origin),
                path,
                "expected a mapping",
            ));
            Vec::new()
        }
    }
}

fn renamed(mut entry: Entry, key: &str) -> Entry {
    entry.written_as = Some(entry.key.clone());
    entry.key = key.to_string();
    entry
}

fn keep_only(entry: Entry, keep: &[&str], diagnostics: &mut Vec<Diagnostic>, path: &str) -> Entry {
    let key = entry.key.clone();
    let key_origin = entry.key_origin.clone();
    let origin = entry.value.origin.clone();
    let kept = map_entries(entry, diagnostics, path)
        .into_iter()
        .filter(|sub| {
            let ok = keep.contains(&sub.key.as_str());
            if !ok {
                unsupported(sub, path, diagnostics);
            }
            ok
        })
        .collect();
    Entry::new(key, key_origin, Node::new(Value::Map(kept), origin))
}

/// `rancher.docker` → `berth.engine`: `engine` names it, `args` + `extra_args` are its
/// arguments, the daemon settings keep their names; its `insecure_registry` list
/// becomes `berth.registries.insecure` (Berth's pulls and the engine's).
fn translate_docker(entry: Entry, diagnostics: &mut Vec<Diagnostic>) -> (Entry, Option<Entry>) {
    let key_origin = entry.key_origin.clone();
    let origin = entry.value.origin.clone();
    let mut engine: Vec<Entry> = Vec::new();
    let mut args: Option<Node> = None;
    let mut registries = None;
    for sub in map_entries(entry, diagnostics, "rancher.docker") {
        match sub.key.as_str() {
            "engine" => engine.push(renamed(sub, "name")),
            "insecure_registry" => {
                let origin = sub.key_origin.clone();
                registries = Some(Entry::new(
                    "registries",
                    origin.clone(),
                    Node::new(Value::Map(vec![renamed(sub, "insecure")]), origin),
                ));
            }
            "environment" | "registry_mirror" | "storage_driver" | "log_driver" | "log_opts"
            | "tls" | "tls_args" => engine.push(sub),
            "args" | "extra_args" => match (&mut args, sub.value) {
                (
                    Some(Node {
                        value: Value::Seq(items),
                        ..
                    }),
                    Node {
                        value: Value::Seq(more),
                        ..
                    },
                ) => items.extend(more),
                (slot, value) => *slot = Some(value),
            },
            _ => unsupported(&sub, "rancher.docker", diagnostics),
        }
    }
    if let Some(args) = args {
        engine.push(Entry::new("args", args.origin.clone(), args));
    }
    let mut out = Entry::new("engine", key_origin, Node::new(Value::Map(engine), origin));
    out.written_as = Some("docker".into());
    (out, registries)
}

/// RancherOS services use compose v1's `net:` and their own ordering labels.
fn translate_service(service: &mut Node) {
    if let Some(entries) = service.as_map_mut() {
        for entry in entries.iter_mut() {
            if entry.key == "net" {
                entry.written_as = Some("net".into());
                entry.key = "network_mode".into();
            }
        }
    }
    if let Some(labels) = service.get_mut("labels") {
        list_labels_to_map(labels);
    }
    if let Some(labels) = service.get_mut("labels").and_then(Node::as_map_mut) {
        let mut added = Vec::new();
        for label in labels.iter() {
            let berth = match label.key.as_str() {
                "io.rancher.os.after" => "io.berth.after",
                "io.rancher.os.before" => "io.berth.before",
                _ => continue,
            };
            if !labels.iter().any(|l| l.key == berth) {
                added.push(Entry::new(
                    berth,
                    label.key_origin.clone(),
                    label.value.clone(),
                ));
            }
        }
        labels.extend(added);
    }
}
