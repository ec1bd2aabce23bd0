//! OpenSSH server settings: `berth.ssh` rendered as a drop-in for Debian's
//! `sshd_config` (which includes `sshd_config.d/*.conf` first, and the first
//! value sshd reads for a keyword wins), host keys kept on the state partition
//! so a machine's identity survives reboots and upgrades, and the privilege
//! separation directory.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::files::{self, Attributes, Outcome, WriteError};

/// Where host keys live inside the console (a volume from the state partition).
pub const HOST_KEY_DIR: &str = "/var/lib/berth/ssh";
pub const DROP_IN: &str = "etc/ssh/sshd_config.d/berth.conf";
pub const MAIN_CONFIG: &str = "etc/ssh/sshd_config";
pub const PRIVSEP_DIR: &str = "run/sshd";
/// The host key types the servers offer when the machine has them, in order.
pub const HOST_KEY_TYPES: &[&str] = berth_configs::model::SSH_HOST_KEY_TYPES;
pub const DEFAULT_PORT: u16 = 22;

#[derive(Debug, thiserror::Error)]
pub enum SshdError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed making {}: {stderr}", path.display())]
    Keygen {
        program: String,
        path: PathBuf,
        stderr: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move the new host key into {}: {source}", path.display())]
    Rename {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make {}: {why}", path.display())]
    Generate { path: PathBuf, why: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What the rendered config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub port: u16,
    pub password_authentication: bool,
    /// The host key directory as sshd sees it.
    pub host_key_dir: PathBuf,
    /// The host key types made when missing (`ssh_genkeytypes`).
    pub new_key_types: Vec<&'static str>,
}

impl Settings {
    pub fn from_config(config: &berth_configs::CloudConfig) -> Self {
        Settings {
            port: config.berth.ssh.port.unwrap_or(DEFAULT_PORT),
            password_authentication: config.berth.ssh.password_authentication.unwrap_or(false),
            host_key_dir: PathBuf::from(HOST_KEY_DIR),
            new_key_types: config.ssh_key_types_to_make(),
        }
    }

    /// Where sshd finds its `kind` host key.
    pub fn host_key(&self, kind: &str) -> PathBuf {
        self.host_key_dir.join(format!("ssh_host_{kind}_key"))
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// The drop-in, offering the host keys of `offered` types. It also works as a
/// whole `sshd_config` (`sshd -f`).
pub fn render(settings: &Settings, offered: &[&str]) -> String {
    let mut text = String::from(
        "# Written by berth console-init from the cloud-config (berth.ssh);\n\
         # changes here are lost when the console starts again.\n",
    );
    text.push_str(&format!("Port {}\n", settings.port));
    for kind in offered {
        text.push_str(&format!("HostKey {}\n", settings.host_key(kind).display()));
    }
    text.push_str(&format!(
        "PermitRootLogin no\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile .ssh/authorized_keys\n\
         PasswordAuthentication {}\n\
         KbdInteractiveAuthentication no\n\
         PermitEmptyPasswords no\n\
         # No PAM: the console has no systemd-logind and no audit login uid to set,\n\
         # and sshd checks passwords against /etc/shadow itself. (Without PAM a\n\
         # `!`-locked account cannot log in at all; console-init writes `*` for\n\
         # \"no password\", which still allows keys.)\n\
         UsePAM no\n\
         # PAM printed the motd before; now sshd does.\n\
         PrintMotd yes\n",
        yes_no(settings.password_authentication),
    ));
    text
}

/// Writes the drop-in, or a whole `sshd_config` if the image has none to include it.
pub fn write_config(
    root: &Path,
    settings: &Settings,
    offered: &[&str],
) -> Result<Outcome, WriteError> {
    let rendered = render(settings, offered);
    let main = root.join(MAIN_CONFIG);
    if main.exists() {
        files::write_if_changed(
            &root.join(DROP_IN),
            rendered.as_bytes(),
            Attributes::root(0o644),
        )
    } else {
        let whole = format!("{rendered}Subsystem sftp /usr/lib/openssh/sftp-server\n");
        files::write_if_changed(&main, whole.as_bytes(), Attributes::root(0o644))
    }
}

/// Makes each missing host key of the `kinds` in `dir` (the path under the
/// root); existing keys are never touched. Ed25519 and ECDSA keys are made
/// here ([`write_new_key`]), RSA keys (made only when asked for) with
/// `ssh-keygen`. Either way the public half is in place first and each half
/// is whole on the disk before its name, so an interrupted run never leaves
/// a half-written key that would be kept.
pub fn ensure_host_keys(
    dir: &Path,
    ssh_keygen: &Path,
    kinds: &[&str],
) -> Result<Vec<PathBuf>, SshdError> {
    files::ensure_dir(dir, Attributes::root(0o755))?;
    let mut made = Vec::new();
    for kind in kinds {
        let key = dir.join(format!("ssh_host_{kind}_key"));
        if has_key(&key) {
            continue;
        }
        if write_new_key(dir, kind)? {
            made.push(key);
            continue;
        }
        let tmp = dir.join(format!(".ssh_host_{kind}_key.berth-tmp"));
        let tmp_pub = dir.join(format!(".ssh_host_{kind}_key.berth-tmp.pub"));
        for stale in [&tmp, &tmp_pub] {
            let _ = std::fs::remove_file(stale);
        }
        run_tool(
            ssh_keygen,
            &[
                "-q".as_ref(),
                "-t".as_ref(),
                kind.as_ref(),
                "-N".as_ref(),
                "".as_ref(),
                "-C".as_ref(),
                "".as_ref(),
                "-f".as_ref(),
                tmp.as_os_str(),
            ],
            &key,
        )?;
        let public = dir.join(format!("ssh_host_{kind}_key.pub"));
        install_pair(&tmp_pub, &public, &tmp, &key)?;
        made.push(key);
    }
    Ok(made)
}

/// The host key types `dir` has a key of, in offer order: every key the
/// machine has is offered, whatever `ssh_genkeytypes` says now, so a client
/// that knows the machine by an older key still recognises it.
pub fn present_key_types(dir: &Path) -> Vec<&'static str> {
    HOST_KEY_TYPES
        .iter()
        .copied()
        .filter(|kind| has_key(&dir.join(format!("ssh_host_{kind}_key"))))
        .collect()
}

/// Makes `dir/ssh_host_<kind>_key` and its `.pub` in OpenSSH's formats, in
/// this process, when `kind` is `ed25519` or `ecdsa` (P-256, ssh-keygen's
/// default size); `false` for a kind made by a key tool. A run of ssh-keygen
/// costs ~0.6 s of an emulated CPU, nearly all of it OpenSSL starting, on
/// every live boot and every first boot; the keys themselves take
/// microseconds. The public half is written first: a key is kept once its
/// private half exists.
pub(crate) fn write_new_key(dir: &Path, kind: &str) -> Result<bool, SshdError> {
    use ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey};
    let algorithm = match kind {
        "ed25519" => Algorithm::Ed25519,
        "ecdsa" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        _ => return Ok(false),
    };
    let key = dir.join(format!("ssh_host_{kind}_key"));
    let failed = |why: ssh_key::Error| SshdError::Generate {
        path: key.clone(),
        why: why.to_string(),
    };
    let private = PrivateKey::random(&mut rand_core::OsRng, algorithm).map_err(failed)?;
    let private_text = private.to_openssh(LineEnding::LF).map_err(failed)?;
    let public_text = private.public_key().to_openssh().map_err(failed)?;
    let public = dir.join(format!("ssh_host_{kind}_key.pub"));
    for (path, text, mode) in [
        (&public, format!("{public_text}\n"), 0o644),
        (&key, private_text.to_string(), 0o600),
    ] {
        berth_sys::atomic::write(
            path,
            text.as_bytes(),
            &berth_sys::atomic::Options::mode(mode),
        )
        .map_err(|source| WriteError {
            path: path.clone(),
            source,
        })?;
    }
    Ok(true)
}

/// Whether `key` holds a key. An empty file is none: what a power cut left
/// of a key written by an older Berth that did not sync it, which sshd
/// refuses, so it is made again.
pub(crate) fn has_key(key: &Path) -> bool {
    std::fs::metadata(key).is_ok_and(|m| m.len() > 0)
}

/// Runs a key tool (`ssh-keygen`, `dropbearkey`, `dropbearconvert`) making
/// `making`; its stdout, or why it failed.
pub(crate) fn run_tool(
    program: &Path,
    args: &[&OsStr],
    making: &Path,
) -> Result<Vec<u8>, SshdError> {
    let name = program.display().to_string();
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| SshdError::Spawn {
            program: name.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(SshdError::Keygen {
            program: name,
            path: making.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

/// Moves a key pair made under temporary names into place, public half first:
/// a key is kept once its private half exists, so that half must come last.
/// Each half reaches the disk before its new name does: the key tools do not
/// fsync, and a power cut in the minute after the first boot otherwise left
/// empty keys that sshd refuses.
pub(crate) fn install_pair(
    tmp_pub: &Path,
    public: &Path,
    tmp: &Path,
    key: &Path,
) -> Result<(), SshdError> {
    for (from, to) in [(tmp_pub, public), (tmp, key)] {
        berth_sys::atomic::rename_durable(from, to).map_err(|source| SshdError::Rename {
            path: to.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// sshd refuses to start without its empty, root-owned privilege separation dir.
pub fn ensure_privsep_dir(root: &Path) -> Result<(), WriteError> {
    files::ensure_dir(&root.join(PRIVSEP_DIR), Attributes::root(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_defaults() {
        let settings = Settings::from_config(&berth_configs::CloudConfig::default());
        let text = render(&settings, &["ed25519", "ecdsa"]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "Port 22",
                "HostKey /var/lib/berth/ssh/ssh_host_ed25519_key",
                "HostKey /var/lib/berth/ssh/ssh_host_ecdsa_key",
                "PermitRootLogin no",
                "PubkeyAuthentication yes",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitEmptyPasswords no",
                "UsePAM no",
                "PrintMotd yes",
            ]
        );
    }

    #[test]
    fn port_and_password_login_come_from_berth_ssh() {
        let mut config = berth_configs::CloudConfig::default();
        config.berth.ssh.port = Some(2222);
        config.berth.ssh.password_authentication = Some(true);
        let text = render(&Settings::from_config(&config), &["rsa"]);
        assert!(text.contains("\nHostKey /var/lib/berth/ssh/ssh_host_rsa_key\nPermitRootLogin"));
        assert!(text.contains("\nPort 2222\n"));
        assert!(text.contains("\nPasswordAuthentication yes\n"));
    }

    #[test]
    fn a_drop_in_beside_debians_config_else_a_whole_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings::from_config(&berth_configs::CloudConfig::default());
        if write_config(dir.path(), &settings, HOST_KEY_TYPES).is_err() {
            berth_testkit::skip!("cannot chown to root (not root)");
            return;
        }
        let main = std::fs::read_to_string(dir.path().join(MAIN_CONFIG)).unwrap_or_default();
        assert!(main.contains("Subsystem sftp"), "{main}");
        std::fs::write(
            dir.path().join(MAIN_CONFIG),
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        )
        .expect("main");
        write_config(dir.path(), &settings, HOST_KEY_TYPES).expect("drop-in");
        let drop_in = std::fs::read_to_string(dir.path().join(DROP_IN)).unwrap_or_default();
        assert_eq!(drop_in, render(&settings, HOST_KEY_TYPES));
    }

    #[test]
    fn host_keys_are_made_once() {
        let keygen = Path::new("/usr/bin/ssh-keygen");
        if !keygen.exists() {
            berth_testkit::skip!("no {}", keygen.display());
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("var/lib/berth/ssh");
        let made = match ensure_host_keys(&keys, keygen, &["ed25519", "ecdsa"]) {
            Ok(made) => made,
            Err(SshdError::Write(e)) => {
                berth_testkit::skip!("{e} (not root)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(made.len(), 2);
        assert_eq!(present_key_types(&keys), ["ed25519", "ecdsa"]);
        // OpenSSH reads the keys made in-process, and each .pub is its key's.
        for kind in ["ed25519", "ecdsa"] {
            let key = keys.join(format!("ssh_host_{kind}_key"));
            let derived = std::process::Command::new(keygen)
                .arg("-y")
                .arg("-f")
                .arg(&key)
                .output()
                .expect("ssh-keygen -y");
            assert!(derived.status.success(), "{kind}: {derived:?}");
            let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
            let fields = |t: &str| t.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            assert_eq!(
                fields(&String::from_utf8_lossy(&derived.stdout)),
                fields(&public)
            );
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{kind}");
        }
        let before = std::fs::read(keys.join("ssh_host_ed25519_key")).expect("key");
        assert!(ensure_host_keys(&keys, keygen, &["ed25519"])
            .expect("again")
            .is_empty());
        assert_eq!(
            std::fs::read(keys.join("ssh_host_ed25519_key")).ok(),
            Some(before)
        );
        let names: Vec<String> = std::fs::read_dir(&keys)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");

        // What a power cut left of a key an older Berth did not sync.
        std::fs::write(keys.join("ssh_host_ecdsa_key"), b"").expect("empty key");
        assert_eq!(present_key_types(&keys), ["ed25519"]);
        let made = ensure_host_keys(&keys, keygen, &["ed25519", "ecdsa"]).expect("remade");
        assert_eq!(made, [keys.join("ssh_host_ecdsa_key")]);
        let remade = std::fs::read_to_string(keys.join("ssh_host_ecdsa_key")).expect("key");
        assert!(remade.contains("PRIVATE KEY"), "{remade}");
    }
}
