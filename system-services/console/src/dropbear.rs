//! The console's SSH server: OpenSSH in the Debian console, Dropbear in the
//! busybox one, chosen by what the image has. Accounts, keys and sudo are the
//! same for both; what differs is here: how the server is configured (sshd
//! reads a config file, Dropbear only takes flags), its host key format, and
//! its command line.
//!
//! One machine identity across console switches: the host keys on the state
//! partition (`/var/lib/berth/ssh/ssh_host_*_key`) are OpenSSH's, and they are
//! the source of truth. Dropbear gets them converted with `dropbearconvert`
//! into `/var/lib/berth/ssh/dropbear/` on every start, so a key that changed
//! there is picked up. Dropbear 2022.83 converts all three types both ways
//! (ed25519, ecdsa, rsa; OpenSSH's own key format), and a key converted there
//! and back is the same bytes. When the state partition has no OpenSSH key
//! yet, the busybox console makes one with `dropbearkey` and exports it in
//! OpenSSH's format, so the Debian console later offers the same key.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::files::{self, Attributes, Outcome};
use crate::sshd::{self, install_pair, run_tool, Settings, SshdError};
use crate::supervise::Program;
use crate::{Options, Warnings};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const DROPBEAR: &str = "/usr/sbin/dropbear";
pub const DROPBEARKEY: &str = "/usr/bin/dropbearkey";
pub const DROPBEARCONVERT: &str = "/usr/bin/dropbearconvert";
/// Where the converted keys live, under the host key directory.
pub const KEY_SUBDIR: &str = "dropbear";
/// ssh-keygen's default RSA size, so both consoles make keys of one strength
/// (dropbearkey's own default is 2048).
const RSA_BITS: &str = "3072";

/// Which SSH server the console runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshServer {
    OpenSsh,
    Dropbear,
}

impl SshServer {
    /// OpenSSH if the console under `root` has sshd, else Dropbear if it has
    /// that, else OpenSSH (what the console always ran; the supervisor reports
    /// it when it cannot start).
    pub fn detect(root: &Path) -> Self {
        let has = |path: &str| root.join(path.trim_start_matches('/')).exists();
        if !has(SSHD) && has(DROPBEAR) {
            SshServer::Dropbear
        } else {
            SshServer::OpenSsh
        }
    }

    /// What log lines and the ready line call it.
    pub fn name(self) -> &'static str {
        match self {
            SshServer::OpenSsh => "sshd",
            SshServer::Dropbear => "dropbear",
        }
    }

    /// Writes what the server needs under `options.root` (config, host keys,
    /// directories); returns its host keys as the server sees them.
    pub fn prepare(
        self,
        settings: &Settings,
        options: &Options,
        warnings: &mut Warnings,
    ) -> Result<Vec<PathBuf>, SshdError> {
        let root = &options.root;
        let key_dir = root.join(
            settings
                .host_key_dir
                .strip_prefix("/")
                .unwrap_or(&settings.host_key_dir),
        );
        match self {
            SshServer::OpenSsh => {
                sshd::ensure_host_keys(&key_dir, &options.ssh_keygen, &settings.new_key_types)?;
                let offered = sshd::present_key_types(&key_dir);
                sshd::write_config(root, settings, &offered)?;
                sshd::ensure_privsep_dir(root)?;
                Ok(offered.iter().map(|kind| settings.host_key(kind)).collect())
            }
            SshServer::Dropbear => {
                let kinds = ensure_host_keys(&key_dir, &settings.new_key_types, options, warnings)?;
                Ok(kinds
                    .iter()
                    .map(|kind| key_path(&settings.host_key_dir, kind))
                    .collect())
            }
        }
    }

    /// The server's command line: in the foreground, logging to stderr
    /// (which berthd keeps).
    pub fn program(self, settings: &Settings, host_keys: &[PathBuf], options: &Options) -> Program {
        let argv = match self {
            // -D: stay in the foreground as our child; -e: log to stderr.
            SshServer::OpenSsh => {
                vec![options.sshd.display().to_string(), "-D".into(), "-e".into()]
            }
            // -F: foreground; -E: stderr; -r: each host key.
            SshServer::Dropbear => {
                let mut argv = vec![
                    options.dropbear.display().to_string(),
                    "-F".into(),
                    "-E".into(),
                    "-p".into(),
                    settings.port.to_string(),
                ];
                for key in host_keys {
                    argv.extend(["-r".into(), key.display().to_string()]);
                }
                // As sshd's PermitRootLogin no: root works through sudo.
                argv.push("-w".into());
                if !settings.password_authentication {
                    argv.push("-s".into());
                }
                argv
            }
        };
        Program {
            name: self.name().into(),
            argv,
            after_ready: false,
            env: Vec::new(),
        }
    }
}

/// Where Dropbear's copy of the `kind` host key is, under `host_key_dir`.
pub fn key_path(host_key_dir: &Path, kind: &str) -> PathBuf {
    host_key_dir
        .join(KEY_SUBDIR)
        .join(format!("dropbear_{kind}_host_key"))
}

/// For each host key type: makes the OpenSSH key in `dir` if it is missing
/// and one of `new_kinds` (with dropbearkey, exported), then converts each
/// OpenSSH key there into Dropbear's format in `dir/dropbear`, replacing the
/// copy there only if it changed. A key that does not convert (a damaged
/// file on the state partition) is left out with a warning, as sshd would
/// skip it; the others still serve. Returns the types converted.
pub fn ensure_host_keys(
    dir: &Path,
    new_kinds: &[&str],
    options: &Options,
    warnings: &mut Warnings,
) -> Result<Vec<&'static str>, SshdError> {
    let converted_dir = dir.join(KEY_SUBDIR);
    files::ensure_dir(dir, Attributes::root(0o755))?;
    files::ensure_dir(&converted_dir, Attributes::root(0o700))?;
    let mut kinds = Vec::new();
    for kind in sshd::HOST_KEY_TYPES {
        let openssh = dir.join(format!("ssh_host_{kind}_key"));
        if !sshd::has_key(&openssh) {
            if !new_kinds.contains(kind) {
                continue;
            }
            make_openssh_key(dir, kind, options)?;
        }
        let target = key_path(dir, kind);
        match convert(&openssh, &target, options) {
            Ok(_) => kinds.push(*kind),
            Err(e) => warnings.push(format!("the {kind} host key is not offered: {e}")),
        }
    }
    Ok(kinds)
}

/// `dropbearconvert openssh dropbear` of `openssh` into `target` (0600).
fn convert(openssh: &Path, target: &Path, options: &Options) -> Result<Outcome, SshdError> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = target.with_file_name(format!(".{name}.berth-convert"));
    let _ = std::fs::remove_file(&tmp);
    let converted = run_tool(
        &options.dropbearconvert,
        &[
            "openssh".as_ref(),
            "dropbear".as_ref(),
            openssh.as_os_str(),
            tmp.as_os_str(),
        ],
        target,
    )
    .and_then(|_| {
        std::fs::read(&tmp).map_err(|source| SshdError::Io {
            path: tmp.clone(),
            source,
        })
    });
    let _ = std::fs::remove_file(&tmp);
    Ok(files::write_if_changed(
        target,
        &converted?,
        Attributes::root(0o600),
    )?)
}

/// Makes the OpenSSH-format `ssh_host_<kind>_key` (and `.pub`) in `dir`:
/// Ed25519 and ECDSA in this process ([`sshd::write_new_key`]), RSA with
/// dropbearkey, exported with dropbearconvert, and renamed into place public
/// half first, as [`sshd::ensure_host_keys`] does.
fn make_openssh_key(dir: &Path, kind: &str, options: &Options) -> Result<(), SshdError> {
    if sshd::write_new_key(dir, kind)? {
        return Ok(());
    }
    let key = dir.join(format!("ssh_host_{kind}_key"));
    let generated = dir.join(format!(".dropbear_{kind}_host_key.berth-tmp"));
    let tmp = dir.join(format!(".ssh_host_{kind}_key.berth-tmp"));
    let tmp_pub = dir.join(format!(".ssh_host_{kind}_key.berth-tmp.pub"));
    for stale in [&generated, &tmp, &tmp_pub] {
        let _ = std::fs::remove_file(stale);
    }
    let mut args: Vec<&OsStr> = vec!["-t".as_ref(), kind.as_ref()];
    if kind == "rsa" {
        args.extend([OsStr::new("-s"), OsStr::new(RSA_BITS)]);
    }
    args.extend([OsStr::new("-f"), generated.as_os_str()]);
    let made = (|| {
        // dropbearkey prints the public key as it makes the private one.
        let stdout = run_tool(&options.dropbearkey, &args, &key)?;
        let public =
            public_line(&String::from_utf8_lossy(&stdout)).ok_or_else(|| SshdError::Keygen {
                program: options.dropbearkey.display().to_string(),
                path: key.clone(),
                stderr: "printed no public key".into(),
            })?;
        run_tool(
            &options.dropbearconvert,
            &[
                "dropbear".as_ref(),
                "openssh".as_ref(),
                generated.as_os_str(),
                tmp.as_os_str(),
            ],
            &key,
        )?;
        files::write_if_changed(
            &tmp_pub,
            format!("{public}\n").as_bytes(),
            Attributes::root(0o644),
        )?;
        // It is a private key whatever dropbearconvert's umask made it.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| SshdError::Io {
                path: tmp.clone(),
                source,
            },
        )?;
        install_pair(
            &tmp_pub,
            &dir.join(format!("ssh_host_{kind}_key.pub")),
            &tmp,
            &key,
        )
    })();
    for leftover in [&generated, &tmp, &tmp_pub] {
        let _ = std::fs::remove_file(leftover);
    }
    made
}

/// The `TYPE BASE64` of the public key line dropbearkey prints, without its
/// `user@host` comment (ssh-keygen's host keys have none either).
fn public_line(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let kind = fields.next()?;
        let blob = fields.next()?;
        (kind.starts_with("ssh-") || kind.starts_with("ecdsa-")).then(|| format!("{kind} {blob}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(password_authentication: bool) -> Settings {
        Settings {
            port: 2222,
            password_authentication,
            host_key_dir: PathBuf::from(sshd::HOST_KEY_DIR),
            new_key_types: sshd::HOST_KEY_TYPES.to_vec(),
        }
    }

    #[test]
    fn sshd_if_the_image_has_it_else_dropbear() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(SshServer::detect(dir.path()), SshServer::OpenSsh);
        std::fs::create_dir_all(dir.path().join("usr/sbin")).expect("sbin");
        std::fs::write(dir.path().join("usr/sbin/dropbear"), "").expect("dropbear");
        assert_eq!(SshServer::detect(dir.path()), SshServer::Dropbear);
        std::fs::write(dir.path().join("usr/sbin/sshd"), "").expect("sshd");
        assert_eq!(SshServer::detect(dir.path()), SshServer::OpenSsh);
    }

    #[test]
    fn command_lines() {
        let options = Options::new("/");
        let keys: Vec<PathBuf> = ["ed25519", "rsa"]
            .iter()
            .map(|k| key_path(Path::new(sshd::HOST_KEY_DIR), k))
            .collect();
        let dropbear = SshServer::Dropbear.program(&settings(false), &keys, &options);
        assert_eq!(dropbear.name, "dropbear");
        assert_eq!(
            dropbear.argv,
            [
                "/usr/sbin/dropbear",
                "-F",
                "-E",
                "-p",
                "2222",
                "-r",
                "/var/lib/berth/ssh/dropbear/dropbear_ed25519_host_key",
                "-r",
                "/var/lib/berth/ssh/dropbear/dropbear_rsa_host_key",
                "-w",
                "-s"
            ]
        );
        let with_passwords = SshServer::Dropbear.program(&settings(true), &keys, &options);
        assert_eq!(with_passwords.argv.last().map(String::as_str), Some("-w"));
        let sshd = SshServer::OpenSsh.program(&settings(false), &keys, &options);
        assert_eq!(
            (sshd.name.as_str(), sshd.argv),
            (
                "sshd",
                vec!["/usr/sbin/sshd".into(), "-D".into(), "-e".into()]
            )
        );
    }

    #[test]
    fn the_public_key_from_dropbearkeys_output() {
        let out = "Generating 256 bit ecdsa key, this may take a while...\n\
                   Public key portion is:\n\
                   ecdsa-sha2-nistp256 AAAAE2Vj root@vm\n\
                   Fingerprint: SHA256:D4P3LTLq\n";
        assert_eq!(
            public_line(out).as_deref(),
            Some("ecdsa-sha2-nistp256 AAAAE2Vj")
        );
        assert_eq!(public_line("Public key portion is:\n"), None);
    }

    fn tools() -> Option<Options> {
        let mut options = Options::new("/");
        options.dropbearkey = PathBuf::from(DROPBEARKEY);
        options.dropbearconvert = PathBuf::from(DROPBEARCONVERT);
        let missing = [
            &options.dropbearkey,
            &options.dropbearconvert,
            &options.ssh_keygen,
        ]
        .into_iter()
        .find(|t| !t.exists());
        if let Some(tool) = missing {
            eprintln!(
                "skipped: no {} (apt-get install dropbear-bin openssh-client)",
                tool.display()
            );
            return None;
        }
        Some(options)
    }

    /// The fingerprint ssh-keygen sees in an OpenSSH private key.
    fn fingerprint(key: &Path) -> String {
        let public = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(key)
            .output()
            .expect("ssh-keygen -y");
        assert!(
            public.status.success(),
            "{}",
            String::from_utf8_lossy(&public.stderr)
        );
        String::from_utf8_lossy(&public.stdout).trim().to_string()
    }

    /// The public key dropbear sees in one of its keys.
    fn dropbear_public(key: &Path) -> String {
        let out = std::process::Command::new(DROPBEARKEY)
            .arg("-y")
            .arg("-f")
            .arg(key)
            .output()
            .expect("dropbearkey -y");
        public_line(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default()
    }

    #[test]
    fn openssh_keys_are_converted_and_follow_changes() {
        let Some(options) = tools() else { return };
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("ssh");
        if let Err(e) = sshd::ensure_host_keys(&keys, &options.ssh_keygen, sshd::HOST_KEY_TYPES) {
            berth_testkit::skip!("{e} (not root)");
            return;
        }
        let mut warnings = Warnings::default();
        let kinds = ensure_host_keys(&keys, sshd::HOST_KEY_TYPES, &options, &mut warnings)
            .expect("convert");
        assert_eq!(kinds, sshd::HOST_KEY_TYPES);
        assert!(warnings.0.is_empty(), "{warnings:?}");
        for kind in sshd::HOST_KEY_TYPES {
            assert_eq!(
                dropbear_public(&key_path(&keys, kind)),
                fingerprint(&keys.join(format!("ssh_host_{kind}_key"))),
                "{kind}"
            );
        }
        // A new OpenSSH key replaces the converted one; an unchanged one is left alone.
        let ed25519 = keys.join("ssh_host_ed25519_key");
        std::fs::remove_file(&ed25519).expect("rm");
        sshd::ensure_host_keys(&keys, &options.ssh_keygen, sshd::HOST_KEY_TYPES).expect("new key");
        let rsa_before = std::fs::metadata(key_path(&keys, "rsa"))
            .and_then(|m| m.modified())
            .expect("rsa");
        ensure_host_keys(&keys, sshd::HOST_KEY_TYPES, &options, &mut warnings).expect("again");
        assert_eq!(
            dropbear_public(&key_path(&keys, "ed25519")),
            fingerprint(&ed25519)
        );
        assert_eq!(
            std::fs::metadata(key_path(&keys, "rsa"))
                .and_then(|m| m.modified())
                .ok(),
            Some(rsa_before)
        );
        // A damaged key is left out, not fatal.
        std::fs::write(keys.join("ssh_host_ecdsa_key"), "garbage\n").expect("damage");
        let kinds = ensure_host_keys(&keys, sshd::HOST_KEY_TYPES, &options, &mut warnings)
            .expect("damaged");
        assert_eq!(kinds, ["ed25519", "rsa"]);
        assert_eq!(warnings.0.len(), 1, "{warnings:?}");
        assert!(
            warnings.0[0].starts_with("the ecdsa host key is not offered"),
            "{warnings:?}"
        );
    }

    #[test]
    fn only_the_asked_types_are_made_and_every_present_key_is_offered() {
        let Some(options) = tools() else { return };
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("ssh");
        let mut warnings = Warnings::default();
        let kinds = match ensure_host_keys(&keys, &["ed25519"], &options, &mut warnings) {
            Ok(kinds) => kinds,
            Err(SshdError::Write(e)) => {
                berth_testkit::skip!("{e} (not root)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(kinds, ["ed25519"]);
        assert_eq!(sshd::present_key_types(&keys), ["ed25519"]);
        // An ECDSA key made by the other console is offered too.
        sshd::ensure_host_keys(&keys, &options.ssh_keygen, &["ecdsa"]).expect("ecdsa");
        let kinds = ensure_host_keys(&keys, &["ed25519"], &options, &mut warnings).expect("again");
        assert_eq!(kinds, ["ed25519", "ecdsa"]);
        assert!(warnings.0.is_empty(), "{warnings:?}");
    }

    #[test]
    fn without_openssh_keys_dropbear_makes_them_in_openssh_format() {
        let Some(options) = tools() else { return };
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = dir.path().join("ssh");
        let mut warnings = Warnings::default();
        let kinds = match ensure_host_keys(&keys, sshd::HOST_KEY_TYPES, &options, &mut warnings) {
            Ok(kinds) => kinds,
            Err(SshdError::Write(e)) => {
                berth_testkit::skip!("{e} (not root)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(kinds, sshd::HOST_KEY_TYPES);
        for kind in sshd::HOST_KEY_TYPES {
            let openssh = keys.join(format!("ssh_host_{kind}_key"));
            let public = std::fs::read_to_string(openssh.with_extension("pub")).expect("pub");
            // OpenSSH reads the exported key, and it is the key dropbear serves.
            assert_eq!(fingerprint(&openssh), public.trim(), "{kind}");
            assert_eq!(
                dropbear_public(&key_path(&keys, kind)),
                public.trim(),
                "{kind}"
            );
        }
        let rsa = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(keys.join("ssh_host_rsa_key.pub"))
            .output()
            .expect("ssh-keygen -l");
        assert!(String::from_utf8_lossy(&rsa.stdout).starts_with("3072 "));
        // Nothing left behind but the keys: 3 OpenSSH pairs and the dropbear dir.
        let names = std::fs::read_dir(&keys).expect("dir").count();
        assert_eq!(names, 7);
        // sshd's own check finds nothing to make.
        assert!(
            sshd::ensure_host_keys(&keys, &options.ssh_keygen, sshd::HOST_KEY_TYPES)
                .expect("sshd keys")
                .is_empty()
        );
    }
}
