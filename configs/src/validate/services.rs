//! `berth.services`: each service's fields, references between services, cycles.

use super::*;

impl Validator<'_> {
    pub(super) fn services(&mut self, config: &CloudConfig) {
        let services = &config.berth.services;
        for (name, service) in services {
            self.service(name, service, services);
        }
        self.cycles(services);
        for name in config.berth.services_include.keys() {
            // RancherOS also enables services by URL or file path.
            let located = name.starts_with("http://")
                || name.starts_with("https://")
                || name.starts_with('/');
            if !located && !valid_service_name(name) {
                self.error(
                    &["berth", "services_include", name],
                    format!("`{name}` is not a valid service name"),
                );
            }
        }
    }

    fn service(&mut self, name: &str, s: &Service, all: &BTreeMap<String, Service>) {
        let service_path = ["berth", "services", name];
        let p = |k: &'static str| ["berth", "services", name, k];
        if !valid_service_name(name) {
            self.error(
                &["berth", "services", name],
                format!("`{name}` is not a valid service name (letters, digits, `_`, `-`, `.`; starting with a letter or digit)"),
            );
        }
        match &s.image {
            None => self.error(
                &["berth", "services", name],
                format!("service `{name}` has no `image`"),
            ),
            Some(image) if image.trim().is_empty() || image.contains(char::is_whitespace) => {
                self.error(&p("image"), format!("`{image}` is not an image reference"))
            }
            Some(_) => {}
        }
        for dep in s.depends_on.keys() {
            if !all.contains_key(dep) && s.depends_on[dep].required != Some(false) {
                if self.full() {
                    self.untold += 1;
                    continue;
                }
                let mut msg = format!("service `{name}` depends on `{dep}`, which is not defined");
                if let Some(near) = crate::diag::did_you_mean(dep, all.keys().map(String::as_str)) {
                    msg.push_str(&format!("; did you mean `{near}`?"));
                }
                self.error(&[&service_path[..], &["depends_on", dep]].concat(), msg);
            }
        }
        for label in [AFTER_LABEL, BEFORE_LABEL] {
            for other in ordering_label(s, label) {
                if !all.contains_key(other) {
                    self.warn(
                        &[&service_path[..], &["labels", label]].concat(),
                        format!("`{other}` is not a defined service; the ordering is ignored"),
                    );
                }
            }
        }
        for (key, value) in [
            ("network_mode", &s.network_mode),
            ("pid", &s.pid),
            ("ipc", &s.ipc),
            ("uts", &s.uts),
        ] {
            let Some(value) = value else { continue };
            let ok = match key {
                "network_mode" => {
                    matches!(value.as_str(), "host" | "none" | "bridge")
                        || value
                            .strip_prefix("service:")
                            .is_some_and(|svc| all.contains_key(svc))
                        || value
                            .strip_prefix("container:")
                            .is_some_and(|svc| all.contains_key(svc))
                }
                "ipc" => matches!(value.as_str(), "host" | "private" | "shareable"),
                _ => value == "host",
            };
            if !ok {
                let allowed = match key {
                    "network_mode" => "host, none, bridge or service:NAME of a defined service",
                    "ipc" => "host, private or shareable",
                    _ => "host",
                };
                self.error(
                    &[&service_path[..], &[key]].concat(),
                    format!("`{value}` is not valid here; use {allowed}"),
                );
            }
        }
        for (i, option) in s.security_opt.iter().enumerate() {
            if !crate::model::is_seccomp_unconfined(option) {
                self.error(
                    &[&service_path[..], &["security_opt", &i.to_string()]].concat(),
                    format!("`{option}` is not supported; Berth knows `seccomp=unconfined`"),
                );
            }
        }
        for (i, path) in s.tmpfs.0.iter().enumerate() {
            if !path.starts_with('/') {
                self.error(
                    &[&service_path[..], &["tmpfs", &i.to_string()]].concat(),
                    format!("tmpfs mount point `{path}` must be an absolute path"),
                );
            }
        }
        if let Some(dir) = &s.working_dir {
            if !dir.starts_with('/') {
                self.error(
                    &p("working_dir"),
                    format!("`{dir}` must be an absolute path"),
                );
            }
        }
        if let Some(hc) = &s.healthcheck {
            if let Some(test) = &hc.test {
                if let Err(e) = check_healthcheck(test) {
                    self.error(
                        &[&service_path[..], &["healthcheck", "test"]].concat(),
                        e.to_string(),
                    );
                }
            } else if !hc.disable {
                self.error(
                    &[&service_path[..], &["healthcheck"]].concat(),
                    "a healthcheck needs a `test`".into(),
                );
            }
        }
        if let Some(cpus) = s.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                self.error(
                    &p("cpus"),
                    format!("`{cpus}` must be a positive number of CPUs"),
                );
            }
        }
        if let Some(shares) = s.cpu_shares {
            if !(crate::model::CPU_SHARES_MIN..=crate::model::CPU_SHARES_MAX).contains(&shares) {
                self.error(
                    &p("cpu_shares"),
                    format!(
                        "`{shares}` is not a CPU share: it is from {} to {} (1024 is the usual weight)",
                        crate::model::CPU_SHARES_MIN,
                        crate::model::CPU_SHARES_MAX
                    ),
                );
            }
        }
        if let Some(adj) = s.oom_score_adj {
            if !(-1000..=1000).contains(&adj) {
                self.error(
                    &p("oom_score_adj"),
                    format!("`{adj}` is outside -1000..1000"),
                );
            }
        }
    }

    /// Every dependency cycle, named in full (`a -> b -> a`), once each.
    fn cycles(&mut self, services: &BTreeMap<String, Service>) {
        let edges = |name: &str| -> Vec<String> {
            let Some(s) = services.get(name) else {
                return Vec::new();
            };
            let mut out: Vec<String> = s
                .depends_on
                .keys()
                .filter(|d| services.contains_key(*d))
                .cloned()
                .collect();
            out.extend(
                ordering_label(s, AFTER_LABEL)
                    .filter(|d| services.contains_key(*d))
                    .map(String::from),
            );
            out
        };
        // `before` edges point the other way: a before b means b depends on a.
        let mut reverse: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, s) in services {
            for other in ordering_label(s, BEFORE_LABEL).filter(|d| services.contains_key(*d)) {
                reverse
                    .entry(other.to_string())
                    .or_default()
                    .push(name.clone());
            }
        }
        let next = |name: &str| -> Vec<String> {
            let mut out = edges(name);
            out.extend(reverse.get(name).cloned().unwrap_or_default());
            out.sort();
            out.dedup();
            out
        };
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> =
            services.keys().map(|k| (k.as_str(), Mark::New)).collect();
        let mut reported = BTreeSet::new();
        for start in services.keys() {
            if marks[start.as_str()] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, its successors, next successor index).
            let mut stack: Vec<(String, Vec<String>, usize)> =
                vec![(start.clone(), next(start), 0)];
            marks.insert(start.as_str(), Mark::Active);
            while let Some((node, succ, idx)) = stack.last_mut() {
                if *idx >= succ.len() {
                    let done = node.clone();
                    stack.pop();
                    if let Some((k, _)) = services.get_key_value(&done) {
                        marks.insert(k.as_str(), Mark::Done);
                    }
                    continue;
                }
                let target = succ[*idx].clone();
                *idx += 1;
                let Some((key, _)) = services.get_key_value(&target) else {
                    continue;
                };
                match marks[key.as_str()] {
                    Mark::New => {
                        marks.insert(key.as_str(), Mark::Active);
                        let s = next(&target);
                        stack.push((target, s, 0));
                    }
                    Mark::Active if reported.len() >= MAX_CYCLES => self.untold += 1,
                    Mark::Active => {
                        let pos = stack.iter().position(|(n, _, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[pos..].iter().map(|(n, _, _)| n.clone()).collect();
                        let mut canonical = cycle.clone();
                        canonical.sort();
                        if reported.insert(canonical) {
                            cycle.push(target.clone());
                            let first = cycle[0].clone();
                            let second = cycle.get(1).cloned().unwrap_or_default();
                            let path: Vec<&str> =
                                if services[&first].depends_on.contains_key(&second) {
                                    vec!["berth", "services", &first, "depends_on", &second]
                                } else {
                                    vec!["berth", "services", &first]
                                };
                            let msg = format!("dependency cycle: {}", cycle.join(" -> "));
                            self.error(&path, msg);
                        }
                    }
                    Mark::Done => {}
                }
            }
        }
    }
}
