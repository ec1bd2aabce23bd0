//! Checking `ssh_authorized_keys` lines before they reach an `authorized_keys`
//! file: sshd silently ignores a line it cannot parse, so a typo would only show
//! as a refused login. Here a bad line is caught, named and skipped.
//!
//! A line is `[options] type base64 [comment]`. The base64 body must decode, and
//! the key blob inside names its own type, which must be the one the line says.

use base64::Engine as _;

/// Key types sshd accepts for user authentication (OpenSSH 9).
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the line is empty")]
    Empty,
    #[error("it holds more than one line")]
    MultiLine,
    #[error("DSA keys (ssh-dss) are disabled in OpenSSH")]
    Dsa,
    #[error("no known key type (expected one of: {})", KEY_TYPES.join(", "))]
    NoKeyType,
    #[error("the options have an unterminated quote")]
    UnterminatedQuote,
    #[error("the {0} key has no base64 body")]
    MissingBody(String),
    #[error("the key body is not valid base64")]
    BadBase64,
    #[error("the key body is a {inside} key, but the line says {declared}")]
    TypeMismatch { declared: String, inside: String },
}

/// One valid `authorized_keys` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The options prefix (`from="10.0.0.0/8",no-pty`), if any.
    pub options: Option<String>,
    pub kind: String,
    pub body: String,
    pub comment: Option<String>,
}

impl AuthorizedKey {
    /// The line as written to `authorized_keys` (single spaces between fields).
    pub fn line(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(options) = &self.options {
            parts.push(options);
        }
        parts.push(&self.kind);
        parts.push(&self.body);
        if let Some(comment) = &self.comment {
            parts.push(comment);
        }
        parts.join(" ")
    }
}

/// Parses and checks one `ssh_authorized_keys` entry.
pub fn parse(entry: &str) -> Result<AuthorizedKey, KeyError> {
    let line = entry.trim();
    if line.is_empty() {
        return Err(KeyError::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(KeyError::MultiLine);
    }
    let (options, rest) = if starts_with_key_type(line) {
        (None, line)
    } else {
        let end = options_end(line)?;
        let (options, rest) = line.split_at(end);
        (Some(options.to_string()), rest.trim_start())
    };
    let mut fields = rest.splitn(3, char::is_whitespace);
    let kind = fields.next().unwrap_or_default();
    if kind == "ssh-dss" {
        return Err(KeyError::Dsa);
    }
    if !KEY_TYPES.contains(&kind) {
        return Err(KeyError::NoKeyType);
    }
    let body = fields
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| KeyError::MissingBody(kind.to_string()))?;
    check_body(kind, body)?;
    let comment = fields
        .next()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok(AuthorizedKey {
        options,
        kind: kind.to_string(),
        body: body.to_string(),
        comment,
    })
}

fn starts_with_key_type(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or_default();
    KEY_TYPES.contains(&first) || first == "ssh-dss"
}

/// Where an options prefix ends: the first whitespace outside double quotes
/// (sshd's own rule; `\"` inside quotes does not end them).
fn options_end(line: &str) -> Result<usize, KeyError> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Ok(i),
            _ => {}
        }
    }
    if quoted {
        Err(KeyError::UnterminatedQuote)
    } else {
        // Options and nothing else.
        Err(KeyError::NoKeyType)
    }
}

/// The body is base64 of an SSH wire-format blob starting with the key type
/// as a length-prefixed string.
fn check_body(kind: &str, body: &str) -> Result<(), KeyError> {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| KeyError::BadBase64)?;
    let inside = blob
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| blob.get(4..4usize.checked_add(len)?))
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_default();
    if inside != kind {
        return Err(KeyError::TypeMismatch {
            declared: kind.to_string(),
            inside: if inside.is_empty() {
                "malformed".to_string()
            } else {
                inside
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically real public key blob of `kind` (type name + filler).
    fn key(kind: &str) -> String {
        let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(kind.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 4, 1, 2, 3, 4]);
        format!(
            "{kind} {}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    // Real public keys made with ssh-keygen, so the tests do not only check themselves.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGiKGJkGGO83ljwz91J8TGTWCfaGeOWb1feeyqXgCOtd alice@example";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDDpeMiOMtSJ0mj8O13MynK+x3yCWkzKP+mZ+8ko8LWD67D+58SPr6kMYrISI7qGCIRMkL2eyfJKnaektw4Z6sknUMm+A5KrAG5g84QGZOMKeoAaD2IvcVIQH8Dc0TIrNrML/yeSq+/m74ywfNX+vkRp7YuT/3wvH2S4exvin1Lzw== bob";
    const ECDSA: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBO72DypcetaBigqfm4uK/8wgZiHQOQAQd3rTWSkCXIf2nKx4pZsT+msNMoEOrQXRoEXK8W/EfiQzQOZeWCflHWYFszPUIbcz7XU1OCI1p/NkHLnrY7XGsJfpXR/2kW+nNQ== carol";

    #[test]
    fn accepts_every_key_type() {
        for kind in KEY_TYPES {
            let line = key(kind);
            let parsed = parse(&line).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(parsed.kind, *kind);
            assert_eq!(parsed.line(), line);
        }
        let parsed = parse(ED25519).expect("ed25519");
        assert_eq!(parsed.comment.as_deref(), Some("alice@example"));
        assert_eq!(parse(RSA).expect("rsa").kind, "ssh-rsa");
        assert_eq!(parse(ECDSA).expect("ecdsa").kind, "ecdsa-sha2-nistp384");
    }

    #[test]
    fn keeps_an_options_prefix_and_a_comment_with_spaces() {
        let line = format!(
            r#"from="10.0.0.0/8,192.168.1.1",command="echo \"hi there\"",no-pty {} my laptop key"#,
            key("ssh-ed25519")
        );
        let parsed = parse(&format!("  {line}\n")).expect("valid");
        assert_eq!(
            parsed.options.as_deref(),
            Some(r#"from="10.0.0.0/8,192.168.1.1",command="echo \"hi there\"",no-pty"#)
        );
        assert_eq!(parsed.comment.as_deref(), Some("my laptop key"));
        assert_eq!(parsed.line(), line);
    }

    #[test]
    fn rejects_malformed_lines_saying_why() {
        let ed = key("ssh-ed25519");
        let body = ed.split(' ').nth(1).unwrap_or_default().to_string();
        let cases: Vec<(String, KeyError)> = vec![
            ("   ".into(), KeyError::Empty),
            (format!("{ed}\n{ed}"), KeyError::MultiLine),
            ("ssh-dss AAAAB3NzaC1kc3M=".into(), KeyError::Dsa),
            ("ssh-foo AAAA".into(), KeyError::NoKeyType),
            ("AAAAC3NzaC1lZDI1NTE5".into(), KeyError::NoKeyType),
            (format!("no-pty,from=\"x {ed}"), KeyError::UnterminatedQuote),
            (
                "ssh-ed25519".into(),
                KeyError::MissingBody("ssh-ed25519".into()),
            ),
            ("ssh-ed25519 not*base64!".into(), KeyError::BadBase64),
            (
                format!("ssh-rsa {body}"),
                KeyError::TypeMismatch {
                    declared: "ssh-rsa".into(),
                    inside: "ssh-ed25519".into(),
                },
            ),
            (
                "ssh-ed25519 AAAA".into(),
                KeyError::TypeMismatch {
                    declared: "ssh-ed25519".into(),
                    inside: "malformed".into(),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(&line), Err(want), "{line:?}");
        }
    }
}
