//! Debian's `docker-registry` on 127.0.0.1, started for one test or benchmark
//! and stopped when dropped; images are pushed to it with the real `skopeo`.
//! The images crate's pull tests, the CLI's and the QEMU tests (a VM reaches
//! it as 10.0.2.2) all start it here.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a registry has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "cannot run `{program}`: {source} (install Debian's {program}, or run `cargo xtask test`, which does)"
    )]
    Spawn {
        program: &'static str,
        source: io::Error,
    },
    #[error("docker-registry serve {}: not listening on 127.0.0.1:{port} after {:?}", config.display(), START_TIMEOUT)]
    NotListening { config: PathBuf, port: u16 },
    #[error("skopeo copy {archive} to {dest}: {status}: {stderr}", archive = archive.display())]
    Push {
        archive: PathBuf,
        dest: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The certificate and key a registry serves https with.
#[derive(Debug, Clone, Copy)]
pub struct Tls<'a> {
    pub certificate: &'a Path,
    pub key: &'a Path,
}

#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub port: u16,
    /// Its storage: tests corrupt blobs under `docker/registry/v2/blobs`.
    pub data: PathBuf,
}

impl Registry {
    /// Starts one over plain http on a free port, its config and storage in `dir`.
    pub fn start(dir: &Path) -> Result<Registry, Error> {
        Self::spawn(dir, None)
    }

    /// Starts one over https with `tls`, its config and storage in `dir`.
    pub fn start_tls(dir: &Path, tls: Tls<'_>) -> Result<Registry, Error> {
        Self::spawn(dir, Some(tls))
    }

    fn spawn(dir: &Path, tls: Option<Tls<'_>>) -> Result<Registry, Error> {
        let port = crate::free_port().map_err(|source| Error::Io {
            path: "127.0.0.1:0".into(),
            source,
        })?;
        let data = dir.join("registry-data");
        let config = dir.join("registry.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if let Some(tls) = tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.certificate.display(),
                tls.key.display()
            ));
        }
        std::fs::write(&config, yaml).map_err(|source| Error::Io {
            path: config.clone(),
            source,
        })?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "docker-registry",
                source,
            })?;
        // Made before waiting, so a registry that never listens is still stopped.
        let registry = Registry { child, port, data };
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::NotListening { config, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Pushes the oci-archive `archive` as `name` (`repository:tag`) with
    /// skopeo; returns the reference it is pulled by from this host.
    pub fn push(&self, archive: &Path, name: &str) -> Result<String, Error> {
        let reference = format!("127.0.0.1:{}/{name}", self.port);
        let dest = format!("docker://{reference}");
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&dest)
            .output()
            .map_err(|source| Error::Spawn {
                program: "skopeo",
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Push {
                archive: archive.to_path_buf(),
                dest,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_registry_listens_and_a_failed_push_names_the_archive() {
        let dir =
            std::env::temp_dir().join(format!("berth-testkit-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let registry = match Registry::start(&dir) {
            Err(e @ Error::Spawn { .. }) => {
                crate::skip!("{e}");
                return;
            }
            started => started.expect("start"),
        };
        assert!(std::net::TcpStream::connect(("127.0.0.1", registry.port)).is_ok());
        match registry.push(&dir.join("missing.tar"), "x/y:1") {
            Err(e @ Error::Spawn { .. }) => crate::skip!("{e}"),
            Err(e @ Error::Push { .. }) => assert!(e.to_string().contains("missing.tar"), "{e}"),
            other => panic!("pushed no archive: {other:?}"),
        }
        drop(registry);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
