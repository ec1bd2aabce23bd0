//! The forms user-data comes in, as cloud-init accepts them: a
//! `#cloud-config` document, a `#!` script, either gzip-compressed, or a MIME
//! multipart message holding any of those (what `cloud-init devel
//! make-mime` and most cloud consoles write). Anything else is reported,
//! never fatal: a boot does not depend on user-data.

use std::io::Read;

/// Beyond this, decompressed user-data is refused (a gzip bomb must not
/// fill memory); the config parser's own limit is the same.
pub const MAX_DECODED: usize = 4 << 20;
/// MIME messages nest; cloud-init's do not go deeper than this.
const MAX_DEPTH: usize = 4;

/// What user-data held, part by part.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// `#cloud-config` documents, in the order they came.
    pub cloud_configs: Vec<String>,
    /// `#!` scripts, run once per instance after the services are up.
    pub scripts: Vec<Script>,
    /// Parts Berth does not use, each with why (reported, not fatal).
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The MIME part's file name, or `part-N`.
    pub name: String,
    pub body: Vec<u8>,
}

impl Decoded {
    /// One line for logs and `berth config sources`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.cloud_configs.is_empty() {
            parts.push(format!("{} cloud-config", self.cloud_configs.len()));
        }
        if !self.scripts.is_empty() {
            parts.push(format!("{} script(s)", self.scripts.len()));
        }
        if !self.ignored.is_empty() {
            parts.push(format!("{} ignored part(s)", self.ignored.len()));
        }
        if parts.is_empty() {
            "empty".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Decodes user-data bytes into its parts.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    decode_into(bytes, "user-data", 0, &mut out);
    out
}

fn decode_into(bytes: &[u8], name: &str, depth: usize, out: &mut Decoded) {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        match gunzip(bytes) {
            Ok(inner) => decode_into(&inner, name, depth, out),
            Err(e) => out.ignored.push(format!("{name}: {e}")),
        }
        return;
    }
    let text_start = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
    let first = text_start
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if first == "#cloud-config" || first.starts_with("#cloud-config ") {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => out
                .cloud_configs
                .push(text.trim_start_matches('\u{feff}').to_string()),
            Err(_) => out
                .ignored
                .push(format!("{name}: a #cloud-config that is not UTF-8")),
        }
    } else if first.starts_with("#!") {
        out.scripts.push(Script {
            name: name.to_string(),
            body: bytes.to_vec(),
        });
    } else if is_mime(bytes) {
        if depth >= MAX_DEPTH {
            out.ignored
                .push(format!("{name}: MIME nested deeper than {MAX_DEPTH}"));
            return;
        }
        if let Err(e) = multipart(bytes, depth, out) {
            out.ignored.push(format!("{name}: {e}"));
        }
    } else {
        let kind = if first.starts_with("#include") {
            "an #include (URL lists are not fetched)".to_string()
        } else if first.starts_with("#cloud-boothook") {
            "a #cloud-boothook (use bootcmd)".to_string()
        } else if first.starts_with("## template") {
            "a Jinja template".to_string()
        } else {
            let shown: String = first.chars().take(40).collect();
            format!("not a #cloud-config, #! script, gzip or MIME multipart (it starts `{shown}`)")
        };
        out.ignored.push(format!("{name}: {kind}"));
    }
}

/// Why a part is ignored as a whole; the text follows the part's name in
/// [`Decoded::ignored`].
#[derive(Debug, thiserror::Error)]
enum PartError {
    #[error("bad gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("more than {} MiB once decompressed", MAX_DECODED >> 20)]
    TooLarge,
    #[error("a multipart message with no boundary")]
    NoBoundary,
    #[error("a multipart message with no part delimited by `{0}`")]
    NoParts(String),
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, PartError> {
    let mut inner = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_DECODED as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(PartError::Gzip)?;
    if inner.len() > MAX_DECODED {
        return Err(PartError::TooLarge);
    }
    Ok(inner)
}

/// Headers of a MIME entity, names lowercased, folded lines joined.
fn headers(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A parameter of a header value: `boundary` of `multipart/mixed; boundary="x"`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits an entity into its header block and body at the first empty line.
fn split_entity(bytes: &[u8]) -> (&[u8], &[u8]) {
    for (sep, len) in [(&b"\r\n\r\n"[..], 4), (&b"\n\n"[..], 2)] {
        if let Some(i) = bytes.windows(len).position(|w| w == sep) {
            return (&bytes[..i], &bytes[i + len..]);
        }
    }
    (bytes, &[])
}

fn is_mime(bytes: &[u8]) -> bool {
    let (head, _) = split_entity(bytes);
    let h = headers(&String::from_utf8_lossy(head));
    header(&h, "content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/"))
}

fn multipart(bytes: &[u8], depth: usize, out: &mut Decoded) -> Result<(), PartError> {
    let (head, body) = split_entity(bytes);
    let h = headers(&String::from_utf8_lossy(head));
    let ctype = header(&h, "content-type").unwrap_or_default();
    let boundary = param(ctype, "boundary").ok_or(PartError::NoBoundary)?;
    let delimiter = format!("--{boundary}");
    let body = String::from_utf8_lossy(body).into_owned();
    let mut sections = body.split(delimiter.as_str());
    // The preamble before the first delimiter is not a part.
    sections.next();
    let mut index = 0;
    for section in sections {
        if section.starts_with("--") {
            break;
        }
        index += 1;
        // The delimiter's own line end, and the line end before the next one.
        let section = section
            .strip_prefix("\r\n")
            .or_else(|| section.strip_prefix('\n'))
            .unwrap_or(section);
        let section = section
            .strip_suffix("\r\n")
            .or_else(|| section.strip_suffix('\n'))
            .unwrap_or(section);
        let (phead, pbody) = split_entity(section.as_bytes());
        let ph = headers(&String::from_utf8_lossy(phead));
        let ptype = header(&ph, "content-type")
            .unwrap_or("text/plain")
            .to_ascii_lowercase();
        let name = header(&ph, "content-disposition")
            .and_then(|d| param(d, "filename"))
            .or_else(|| param(&ptype, "name"))
            .unwrap_or_else(|| format!("part-{index}"));
        let encoding = header(&ph, "content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let data = if encoding == "base64" {
            use base64::Engine;
            let compact: String = String::from_utf8_lossy(pbody)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(d) => d,
                Err(e) => {
                    out.ignored.push(format!("{name}: bad base64: {e}"));
                    continue;
                }
            }
        } else {
            pbody.to_vec()
        };
        if ptype.starts_with("application/x-gzip")
            || ptype.starts_with("application/gzip")
            || data.starts_with(&[0x1f, 0x8b])
        {
            // What is inside says what it is, as cloud-init sniffs it.
            decode_into(&data, &name, depth + 1, out);
            continue;
        }
        let mime_base = ptype
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        match mime_base.as_str() {
            "text/cloud-config" | "text/cloud-config-jsonp" => {
                let mut text = String::from_utf8_lossy(&data).into_owned();
                // The content type says what it is; the header line may be missing.
                if !text.starts_with("#cloud-config") {
                    text = format!("#cloud-config\n{text}");
                }
                out.cloud_configs.push(text);
            }
            "text/x-shellscript" => out.scripts.push(Script { name, body: data }),
            t if t.starts_with("multipart/") => {
                // A nested message: re-attach its content type to its body.
                let mut nested = format!(
                    "Content-Type: {}\n\n",
                    header(&ph, "content-type").unwrap_or_default()
                )
                .into_bytes();
                nested.extend_from_slice(&data);
                decode_into(&nested, &name, depth + 1, out);
            }
            // text/plain and x-unknown parts are sniffed by their first line, as cloud-init does.
            "text/plain" | "application/octet-stream" | "" => {
                decode_into(&data, &name, depth + 1, out)
            }
            other => out.ignored.push(format!(
                "{name}: the MIME type {other} is not used by Berth"
            )),
        }
    }
    if index == 0 {
        return Err(PartError::NoParts(delimiter));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    /// As `cloud-init devel make-mime` writes it (Python's email package).
    const MIME: &str = "Content-Type: multipart/mixed; boundary=\"===============4291038100093866396==\"\nMIME-Version: 1.0\n\n--===============4291038100093866396==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"config.yaml\"\n\n#cloud-config\nhostname: from-mime\n\n--===============4291038100093866396==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"hello.sh\"\n\nIyEvYmluL3NoCmVjaG8gaGVsbG8K\n\n--===============4291038100093866396==--\n";

    #[test]
    fn plain_forms() {
        let d = decode(b"#cloud-config\nhostname: a\n");
        assert_eq!(d.cloud_configs, ["#cloud-config\nhostname: a\n"]);
        let d = decode(b"#!/bin/sh\necho hi\n");
        assert_eq!(d.scripts.len(), 1);
        assert_eq!(d.scripts[0].body, b"#!/bin/sh\necho hi\n");
        assert_eq!(decode(b"  \n"), Decoded::default());
        let d = decode(b"hostname: a\n");
        assert!(d.cloud_configs.is_empty());
        assert!(
            d.ignored[0].contains("not a #cloud-config"),
            "{:?}",
            d.ignored
        );
        let d = decode(b"#include\nhttp://example.com/x\n");
        assert!(d.ignored[0].contains("#include"), "{:?}", d.ignored);
    }

    #[test]
    fn gzip_and_multipart_as_cloud_init_writes_them() {
        let d = decode(&gzip(MIME.as_bytes()));
        assert_eq!(d.cloud_configs, ["#cloud-config\nhostname: from-mime\n"]);
        assert_eq!(
            d.scripts,
            [Script {
                name: "hello.sh".into(),
                body: b"#!/bin/sh\necho hello\n".to_vec()
            }]
        );
        assert!(d.ignored.is_empty(), "{:?}", d.ignored);
        assert_eq!(d.summary(), "1 cloud-config, 1 script(s)");
        // CRLF line ends, as some consoles send it.
        let d = decode(MIME.replace('\n', "\r\n").as_bytes());
        assert_eq!(d.cloud_configs.len(), 1, "{d:?}");
        assert_eq!(d.scripts.len(), 1, "{d:?}");
    }

    #[test]
    fn gzip_parts_and_unknown_types_inside_multipart() {
        use base64::Engine;
        let inner =
            base64::engine::general_purpose::STANDARD.encode(gzip(b"#cloud-config\nruncmd: [x]\n"));
        let msg = format!("Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{inner}\n--XX\nContent-Type: text/x-include-url\n\nhttp://x/\n--XX--\n");
        let d = decode(msg.as_bytes());
        assert_eq!(d.cloud_configs, ["#cloud-config\nruncmd: [x]\n"]);
        assert_eq!(d.ignored.len(), 1);
        assert!(
            d.ignored[0].contains("text/x-include-url"),
            "{:?}",
            d.ignored
        );
    }

    #[test]
    fn bombs_and_garbage_are_reported_not_fatal() {
        let bomb = gzip(&vec![b'#'; MAX_DECODED + 10]);
        let d = decode(&bomb);
        assert!(d.cloud_configs.is_empty());
        assert!(d.ignored[0].contains("decompressed"), "{:?}", d.ignored);
        let d = decode(&[0x1f, 0x8b, 1, 2, 3]);
        assert!(d.ignored[0].contains("bad gzip"), "{:?}", d.ignored);
        let d = decode(b"Content-Type: multipart/mixed\n\nno boundary\n");
        assert!(d.ignored[0].contains("no boundary"), "{:?}", d.ignored);
    }
}
