//! Debian's `docker-registry` on 127.0.0.1 over plain http (10.0.2.2 from a
//! VM on QEMU's user network), for tests and benchmarks that pull from a
//! real registry; images are pushed to it with the real `skopeo`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{io_err, Error, Result};

#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Registry {
    /// Starts one with its storage and config in `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        let port = crate::free_port()?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .map_err(io_err(&config))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "docker-registry".into(),
                source,
            })?;
        let registry = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Command {
                    command: format!("docker-registry serve {}", config.display()),
                    stderr: format!("not listening on 127.0.0.1:{port} after 30s"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    /// Pushes an oci-archive as `repository:tag`; returns the reference a
    /// VM on QEMU's user network pulls (`10.0.2.2:PORT/repository:tag`).
    pub fn push(&self, archive: &Path, repository: &str, tag: &str) -> Result<String> {
        let dest = format!("docker://127.0.0.1:{}/{repository}:{tag}", self.port);
        crate::run_checked(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci-archive:{}", archive.display()),
                &dest,
            ],
        )?;
        Ok(format!("10.0.2.2:{}/{repository}:{tag}", self.port))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
