//! Debian's `docker-registry` on 127.0.0.1 over plain http (berth-testkit's),
//! for tests and benchmarks whose VM pulls from a real registry: it is
//! 10.0.2.2 on QEMU's user network.

use std::path::Path;

use crate::Result;

#[derive(Debug)]
pub struct Registry {
    inner: berth_testkit::registry::Registry,
    pub port: u16,
}

impl Registry {
    /// Starts one with its storage and config in `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        let inner = berth_testkit::registry::Registry::start(dir)?;
        Ok(Registry {
            port: inner.port,
            inner,
        })
    }

    /// Pushes an oci-archive as `repository:tag`; returns the reference a
    /// VM on QEMU's user network pulls (`10.0.2.2:PORT/repository:tag`).
    pub fn push(&self, archive: &Path, repository: &str, tag: &str) -> Result<String> {
        self.inner.push(archive, &format!("{repository}:{tag}"))?;
        Ok(format!("10.0.2.2:{}/{repository}:{tag}", self.port))
    }
}
