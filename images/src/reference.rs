//! Image references: `[registry/]repository[:tag][@digest]`.
//!
//! In the store an image is named as written, with `:latest` added when it has
//! neither tag nor digest, so `berth/console` and `berth/console:latest` are one
//! image, and Docker Hub's long forms are shortened (`docker.io/library/busybox`
//! is `busybox`). Only when talking to a registry does a name without a registry mean
//! Docker Hub (`busybox` → `docker.io/library/busybox`).

use std::fmt;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an image reference: {reason}")]
pub struct ReferenceError {
    pub text: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` when written (`localhost:5000`, `registry.example.com`).
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() || text.len() > 512 {
            return Err(err("it must be 1 to 512 characters"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| err("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (text, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                let (host, port) = first.split_once(':').unwrap_or((first, "1"));
                let host_ok = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
                    && host.split('.').all(|label| !label.is_empty());
                if !host_ok || port.parse::<u16>().is_err() {
                    return Err(err("the registry must be host[:port]"));
                }
                (Some(first.to_string()), path)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag.to_string())),
            None => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(err(
                "repository names are lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(err("a tag is 1 to 128 letters, digits, `.`, `_` or `-`"));
            }
        }
        // Docker Hub's long spellings name the same images as the short ones.
        let (registry, repository) = match registry.as_deref() {
            Some("docker.io" | "index.docker.io" | "registry-1.docker.io") => (
                None,
                repository.strip_prefix("library/").unwrap_or(repository),
            ),
            _ => (registry, repository),
        };
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag: if tag.is_none() && digest.is_none() {
                Some("latest".to_string())
            } else {
                tag
            },
            digest,
        })
    }

    /// The registry to contact: the one written, or Docker Hub.
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or("docker.io")
    }

    /// The repository as the registry knows it (`library/` for Docker Hub's official images).
    pub fn registry_repository(&self) -> String {
        if self.registry.is_none() && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        Reference::parse(text)
            .map(|r| r.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn names_are_kept_with_a_default_tag() {
        assert_eq!(norm("busybox"), "busybox:latest");
        assert_eq!(norm("berth/console"), "berth/console:latest");
        assert_eq!(norm("localhost:5000/x/y:1.0"), "localhost:5000/x/y:1.0");
        assert_eq!(
            norm("registry.example.com/app"),
            "registry.example.com/app:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("busybox@{d}")), format!("busybox@{d}"));
    }

    #[test]
    fn docker_hub_long_forms_are_shortened() {
        assert_eq!(norm("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(norm("docker.io/test/app"), "test/app:latest");
    }

    #[test]
    fn registry_defaults_to_docker_hub() {
        let r = Reference::parse("busybox").expect("ref");
        assert_eq!(
            (r.registry_host(), r.registry_repository().as_str()),
            ("docker.io", "library/busybox")
        );
        let r = Reference::parse("127.0.0.1:5000/test/bb:v1").expect("ref");
        assert_eq!(
            (r.registry_host(), r.registry_repository().as_str()),
            ("127.0.0.1:5000", "test/bb")
        );
    }

    #[test]
    fn bad_references_say_why() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "x:",
            "x:bad/tag",
            "x@sha256:zz",
            "../etc",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
