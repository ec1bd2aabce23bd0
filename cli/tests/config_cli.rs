//! `berth config` as a script uses it: real binary, real files, exit codes and output.

use std::path::Path;
use std::process::{Command, Output};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn validate_reports_file_line_column_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yml");
    let warn = dir.path().join("warn.yml");
    let bad = dir.path().join("bad.yml");
    write(&good, "#cloud-config\nhostname: box\n");
    write(&warn, "#cloud-config\npackages: [vim]\n");
    write(
        &bad,
        "#cloud-config\nhostname: box\nberth:\n  ssh:\n    prot: 22\n",
    );

    let o = berth(&["config", "validate", good.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("valid (0 errors, 0 warnings)"));

    let o = berth(&["config", "validate", warn.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(0));
    let o = berth(&[
        "config",
        "validate",
        "--strict",
        warn.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1), "--strict makes warnings fail");

    let o = berth(&[
        "config",
        "validate",
        good.to_str().expect("utf8"),
        bad.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let expected = format!(
        "{}:5:5: error: berth.ssh.prot: unknown key `prot`; did you mean `port`?",
        bad.display()
    );
    assert!(stdout(&o).contains(&expected), "{}", stdout(&o));

    let o = berth(&[
        "config",
        "validate",
        "-o",
        "json",
        bad.to_str().expect("utf8"),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report[0]["valid"], false);
    assert_eq!(report[0]["diagnostics"][0]["origin"]["line"], 5);
    assert_eq!(report[0]["diagnostics"][0]["severity"], "error");

    let o = berth(&["config", "validate", "/nonexistent.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent.yml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn set_get_origin_merge_and_export_against_a_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path().to_str().expect("utf8");
    write(
        &root.path().join("var/lib/berth/config/user-data.yml"),
        "#cloud-config\nhostname: from-user-data\n",
    );

    let o = berth(&["config", "get", "--root", r, "hostname"]);
    assert_eq!(stdout(&o), "from-user-data\n");
    let o = berth(&["config", "get", "--root", r, "--origin", "hostname"]);
    assert!(
        stdout(&o).ends_with("user-data.yml:2:11\n"),
        "{}",
        stdout(&o)
    );

    let o = berth(&[
        "config",
        "set",
        "--root",
        r,
        "berth.network.interfaces.eth1.address",
        "10.1.0.2/24",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = berth(&[
        "config",
        "set",
        "--root",
        r,
        "berth.sysctl.net.ipv4.ip_forward",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = berth(&[
        "config",
        "get",
        "--root",
        r,
        "berth.network.interfaces.eth1.address",
    ]);
    assert_eq!(stdout(&o), "10.1.0.2/24\n");
    let o = berth(&["config", "get", "--root", r, "-o", "json", "berth.sysctl"]);
    let sysctl: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(sysctl, serde_json::json!({"net.ipv4.ip_forward": 1}));
    let o = berth(&[
        "config",
        "get",
        "--root",
        r,
        "--origin",
        "berth.network.interfaces.eth1.address",
    ]);
    assert!(stdout(&o).contains("local.yml:"), "{}", stdout(&o));

    // A change that would make the config invalid is refused and nothing is written.
    let local = root.path().join("var/lib/berth/config/local.yml");
    let before = std::fs::read_to_string(&local).expect("local.yml");
    let o = berth(&[
        "config",
        "set",
        "--root",
        r,
        "berth.network.interfaces.eth1.address",
        "10.1.0.999/24",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not an address in CIDR form"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&local).expect("local.yml"), before);
    let o = berth(&[
        "config",
        "set",
        "--root",
        r,
        "berth.services.x.depends_on",
        "[nope]",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("depends on `nope`"), "{}", stderr(&o));

    // Unset with an empty value.
    let o = berth(&[
        "config",
        "set",
        "--root",
        r,
        "berth.sysctl.net.ipv4.ip_forward",
        "",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let o = berth(&[
        "config",
        "get",
        "--root",
        r,
        "berth.sysctl.net.ipv4.ip_forward",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not set"));

    let extra = root.path().join("extra.yml");
    write(&extra, "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExtraKey0000000 x]\n");
    let o = berth(&[
        "config",
        "merge",
        "--root",
        r,
        extra.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = berth(&["config", "export", "--root", r]);
    let exported = stdout(&o);
    assert!(exported.starts_with("#cloud-config\n"));
    assert!(exported.contains("hostname: from-user-data"));
    assert!(exported.contains("10.1.0.2/24"));
    assert!(exported.contains("ExtraKey"));
    assert!(
        !exported.contains("berth/console"),
        "defaults only with --full"
    );
    let o = berth(&["config", "export", "--root", r, "--full"]);
    assert!(stdout(&o).contains("berth/console"));

    // What export prints is itself a valid config.
    let exported_file = root.path().join("exported.yml");
    std::fs::write(&exported_file, stdout(&o)).expect("write");
    let o = berth(&[
        "config",
        "validate",
        "--strict",
        exported_file.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_bad_user_data_is_left_out_not_fatal() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path().to_str().expect("utf8");
    write(
        &root.path().join("var/lib/berth/config/user-data.yml"),
        "#cloud-config\nhostname: [broken\n",
    );
    let o = berth(&["config", "get", "--root", r, "hostname"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "berth\n", "falls back to the defaults");
    assert!(stderr(&o).contains("user-data.yml:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("left out"), "{}", stderr(&o));
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let o = berth(&["config", "schema"]);
    let checked_in = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/schema.json"),
    )
    .expect("schema.json");
    assert_eq!(stdout(&o), checked_in);
}

#[test]
fn usage_errors_exit_2() {
    let o = berth(&["config", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Two writers changing local.yml at once (each `berth config set` reads it,
/// changes one key and writes it back) lose nothing: the lock serialises the
/// read-modify-write, and the file stays a valid document, private to root.
#[test]
fn concurrent_config_sets_lose_nothing() {
    use std::os::unix::fs::PermissionsExt;
    const WRITERS: usize = 2;
    const SETS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let root = root.clone();
            std::thread::spawn(move || {
                let r = root.to_str().expect("utf8");
                for i in 0..SETS {
                    let key = format!("berth.environment.W{w}_{i}");
                    let value = format!("{w}-{i}");
                    let o = berth(&["config", "set", "--root", r, &key, &value]);
                    assert_eq!(o.status.code(), Some(0), "{key}: {}", stderr(&o));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let r = root.to_str().expect("utf8");
    let o = berth(&[
        "config",
        "get",
        "--root",
        r,
        "--output",
        "json",
        "berth.environment",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let env: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    for w in 0..WRITERS {
        for i in 0..SETS {
            assert_eq!(
                env[format!("W{w}_{i}")],
                format!("{w}-{i}"),
                "W{w}_{i} was lost: {env}"
            );
        }
    }
    let config_dir = root.join("var/lib/berth/config");
    let local = config_dir.join("local.yml");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&local), 0o600, "local.yml");
    assert_eq!(mode(&config_dir), 0o700, "the config directory");
    let leftovers: Vec<String> = std::fs::read_dir(&config_dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
