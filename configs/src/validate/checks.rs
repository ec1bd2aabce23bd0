//! Checks of single values (names, keys, addresses, sizes) and the lists
//! they are checked against.

use super::*;

pub(super) const RANCHER_DATASOURCES: &[&str] = &[
    "*",
    "aliyun",
    "cloudstack",
    "exoscale",
    "packet",
    "proxmox",
    "tftp",
    "vmware",
];

pub(super) const DATASOURCES: &[&str] = &[
    "nocloud",
    "configdrive",
    "ec2",
    "gce",
    "digitalocean",
    "openstack",
    "azure",
    "cmdline",
    "url",
    "file",
];

pub(super) const BOND_MODES: &[&str] = &[
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
];

/// Why a single value is not acceptable. Each becomes a finding located at the
/// value's file, line and column; the text is the finding's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not a valid hostname (letters, digits and `-`, dot-separated labels of at most 63)")]
    Hostname(String),
    /// The key's first 40 characters (the rest may be long, or a secret's).
    #[error("`{0}` is not an SSH public key (`TYPE BASE64 [comment]`); it will be skipped")]
    SshKey(String),
    #[error("`{0}` needs a prefix length, like `{0}/24`")]
    NoPrefixLength(String),
    #[error("`{0}` is not an address in CIDR form (like 10.0.0.5/24 or fd00::5/64)")]
    Cidr(String),
    #[error("`{0}` needs a port, like tcp:8080")]
    HealthcheckPort(String),
    #[error("`{0}` needs an absolute path, like file:/run/ready")]
    HealthcheckPath(String),
    #[error("`{0}` needs a socket and a path, like http:/run/docker/docker.sock /_ping")]
    HealthcheckHttp(String),
    #[error("the healthcheck test is empty")]
    EmptyHealthcheck,
    #[error("`{0}` needs a command after it")]
    HealthcheckCommand(String),
    #[error("a healthcheck list starts with CMD, CMD-SHELL or NONE")]
    HealthcheckForm,
    #[error("`{0}` is not a port (1-65535)")]
    Port(String),
    #[error("not an IP address or host name: {0}")]
    Host(#[source] Box<ValueError>),
    #[error("takes no port (overlay traffic uses UDP 4789)")]
    PortNotTaken,
    #[error("not an IP address or an interface name")]
    AddressOrInterface,
}

/// Why a `write_files` entry's content does not decode.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("content is not valid gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("write_files decode to more than {} MiB in all; the limit keeps boot memory bounded", MAX_DECODED_FILES >> 20)]
    TooLarge,
}

pub fn check_hostname(name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValueError::Hostname(name.to_string()))
    }
}

pub(super) fn valid_user_name(name: &str) -> bool {
    name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// A service name: it also names files (`/var/log/berth/<name>.log`), so it can
/// never be a path: no `/`, and no leading `.`.
pub fn valid_service_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c))
}

/// An authorized_keys line: optional options, then a key type and base64 blob.
pub fn check_ssh_key(line: &str) -> Result<(), ValueError> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let words: Vec<&str> = line.split_whitespace().collect();
    let found = words.windows(2).any(|w| {
        TYPES.contains(&w[0])
            && w[1].len() >= 16
            && w[1]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
    });
    if found {
        Ok(())
    } else {
        Err(ValueError::SshKey(line.chars().take(40).collect()))
    }
}

pub(super) fn check_cidr(addr: &str) -> Result<(), ValueError> {
    if !addr.contains('/') {
        return Err(ValueError::NoPrefixLength(addr.to_string()));
    }
    addr.parse::<IpNet>()
        .map(|_| ())
        .map_err(|_| ValueError::Cidr(addr.to_string()))
}

pub(super) fn check_healthcheck(test: &crate::forms::Command) -> Result<(), ValueError> {
    use crate::forms::Command;
    match test {
        Command::Shell(s) => {
            if let Some(port) = s.strip_prefix("tcp:") {
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(|_| ())
                    .ok_or_else(|| ValueError::HealthcheckPort(s.clone()))
            } else if let Some(path) = s.strip_prefix("file:") {
                if path.starts_with('/') {
                    Ok(())
                } else {
                    Err(ValueError::HealthcheckPath(s.clone()))
                }
            } else if let Some(rest) = s.strip_prefix("http:") {
                crate::forms::http_check(rest)
                    .map(|_| ())
                    .ok_or_else(|| ValueError::HealthcheckHttp(s.clone()))
            } else if s.trim().is_empty() {
                Err(ValueError::EmptyHealthcheck)
            } else {
                Ok(())
            }
        }
        Command::Exec(args) => match args.first().map(String::as_str) {
            Some("NONE") => Ok(()),
            Some("CMD") | Some("CMD-SHELL") if args.len() >= 2 => Ok(()),
            Some("CMD") | Some("CMD-SHELL") => Err(ValueError::HealthcheckCommand(args[0].clone())),
            _ => Err(ValueError::HealthcheckForm),
        },
    }
}

/// The bytes a `write_files` entry writes.
pub fn decode(encoding: Option<Encoding>, content: &str) -> Result<Vec<u8>, ContentError> {
    decode_with_limit(encoding, content, MAX_DECODED_FILES)
}

/// [`decode`], refusing content that decodes to more than `limit` bytes.
pub fn decode_with_limit(
    encoding: Option<Encoding>,
    content: &str,
    limit: usize,
) -> Result<Vec<u8>, ContentError> {
    use base64::Engine as _;
    use std::io::Read;
    let b64 = |s: &str| {
        let cleaned: String = s.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned)
            .map_err(ContentError::Base64)
    };
    let gunzip = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(ContentError::Gzip)?;
        Ok::<_, ContentError>(out)
    };
    let bytes = match encoding {
        None | Some(Encoding::Plain) => content.as_bytes().to_vec(),
        Some(Encoding::Base64) => b64(content)?,
        Some(Encoding::GzipBase64) => gunzip(b64(content)?)?,
        // Raw gzip in YAML only survives as a `!!binary` scalar, which arrives base64-encoded.
        Some(Encoding::Gzip) => gunzip(b64(content)?)?,
    };
    if bytes.len() > limit {
        return Err(ContentError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::Command;

    #[test]
    fn berths_own_healthcheck_forms_are_checked() {
        let shell = |s: &str| check_healthcheck(&Command::Shell(s.into()));
        assert!(shell("tcp:8080").is_ok());
        assert!(shell("file:/run/ready").is_ok());
        assert!(shell("http:/run/docker/docker.sock /_ping").is_ok());
        assert!(shell("http:/run/api.sock").is_ok(), "GET / by default");
        assert!(matches!(
            shell("tcp:0"),
            Err(ValueError::HealthcheckPort(_))
        ));
        assert!(matches!(
            shell("file:ready"),
            Err(ValueError::HealthcheckPath(_))
        ));
        for bad in [
            "http:run/docker.sock /_ping",
            "http:/run/docker.sock _ping",
            "http:/run/docker.sock /a /b",
            "http:",
        ] {
            let e = shell(bad).expect_err(bad);
            assert!(
                e.to_string().contains("needs a socket and a path"),
                "{bad}: {e}"
            );
        }
    }
}
