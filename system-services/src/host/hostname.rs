//! `hostname`: the kernel's hostname, `/etc/hostname`, and the `127.0.1.1`
//! line of `/etc/hosts` (rendered as netconf renders it, so the two agree),
//! set before services start so that those started before the network
//! service see it too. netconf keeps doing the same when a DHCP lease or the
//! config changes it.

use super::{Applied, FileWrite, HostOps, HostPaths, Problem, Report};

pub(crate) fn apply(
    ops: &dyn HostOps,
    paths: &HostPaths,
    hostname: Option<&str>,
    applied: &mut Applied,
    report: &mut Report,
) {
    let Some(name) = hostname.map(str::trim).filter(|n| !n.is_empty()) else {
        return;
    };
    if applied.hostname.as_deref() == Some(name) {
        return;
    }
    if let Err(e) = berth_configs::validate::check_hostname(name) {
        report
            .problems
            .push(Problem::new("hostname", e.to_string()));
        return;
    }
    let mut ok = true;
    if let Err(e) = ops.set_hostname(name) {
        ok = false;
        report.problems.push(Problem::new(
            "hostname",
            format!("sethostname({name}): {e}"),
        ));
    }
    let hosts = std::fs::read_to_string(paths.root.join("etc/hosts")).unwrap_or_default();
    for (rel, data) in [
        ("etc/hostname", format!("{name}\n")),
        ("etc/hosts", berth_network::dns::render_hosts(&hosts, name)),
    ] {
        let file = FileWrite {
            data: data.into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            append: false,
        };
        if let Err(e) = ops.write_file(&paths.root, std::path::Path::new(rel), &file) {
            ok = false;
            report
                .problems
                .push(Problem::new("hostname", format!("/{rel}: {e}")));
        }
    }
    if ok {
        report.done(format!("hostname: {name}"));
        applied.hostname = Some(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::super::recording::Call;
    use super::super::testing::root;
    use super::super::Recording;
    use super::*;

    #[test]
    fn kernel_hostname_and_files() {
        let r = root();
        std::fs::write(
            r.dir.path().join("etc/hosts"),
            "127.0.0.1 localhost\n10.0.0.2 db\n",
        )
        .expect("hosts");
        let ops = Recording::default();
        let mut report = Report::default();
        let mut applied = Applied::default();
        apply(
            &ops,
            &r.paths,
            Some("node1.example.com"),
            &mut applied,
            &mut report,
        );
        assert!(report.problems.is_empty());
        let calls = ops.calls();
        assert_eq!(calls[0], Call::Hostname("node1.example.com".into()));
        match &calls[2] {
            Call::Write { rel, data, .. } => {
                assert_eq!(rel, std::path::Path::new("etc/hosts"));
                let text = String::from_utf8_lossy(data);
                assert!(text.contains("10.0.0.2 db"));
                assert!(text.contains("127.0.1.1\tnode1.example.com node1"));
            }
            other => panic!("{other:?}"),
        }
        // Unchanged: nothing again.
        let ops = Recording::default();
        apply(
            &ops,
            &r.paths,
            Some("node1.example.com"),
            &mut applied,
            &mut report,
        );
        assert!(ops.calls().is_empty());

        let ops = Recording::default();
        apply(
            &ops,
            &r.paths,
            Some("-bad"),
            &mut Applied::default(),
            &mut report,
        );
        assert!(ops.calls().is_empty());
        assert_eq!(report.problems[0].field, "hostname");
    }
}
