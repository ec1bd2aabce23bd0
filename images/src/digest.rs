//! Content digests (`sha256:<64 hex>`), the names of everything in an OCI store.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated `sha256:` digest. Only sha256 is accepted: it is what every
/// registry and tool produces, and one algorithm keeps path handling simple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{text}` is not a sha256 digest (`sha256:` and 64 lowercase hex digits)")]
pub struct DigestParseError {
    pub text: String,
}

/// SHA-256, the one hasher of the workspace: blobs, layers, the OS slots.
///
/// ring's, not the `sha2` crate's: every pull, unpack, install and upgrade
/// spends most of its CPU here, and where the CPU has no SHA extensions
/// (QEMU's emulated CPU, older machines) ring's assembly hashes about 1.8x
/// as fast as `sha2`'s portable code (89 against 48 MiB/s under TCG); with
/// them the two are level.
#[derive(Clone)]
pub struct Sha256(ring::digest::Context);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256")
    }
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        Self::from_sha256(hasher.finish())
    }

    /// The digest of a finished [`Sha256`].
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// The 64 hex digits, as used for the blob's file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError {
            text: text.to_string(),
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(err)?;
        // Lowercase hex only: the digest becomes a file name, so no `/`, `..` or case tricks.
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err());
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes everything read through it, counting bytes.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The digest and size of what was read so far.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(self.hasher.finish()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Hashes everything written through it, counting bytes.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_sha256(self.hasher.finish()),
            self.bytes,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_lowercase_hex() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_matches_the_standard_vectors_in_any_chunking() {
        // FIPS 180-2's "abc" and its two-block message.
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        for (message, expected) in [
            (
                &b"abc"[..],
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                &two_blocks[..],
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ] {
            for chunk in [1, 3, 64, message.len()] {
                let mut hasher = Sha256::new();
                message.chunks(chunk).for_each(|c| hasher.update(c));
                assert_eq!(hex::encode(hasher.finish()), expected, "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn hashing_reader_and_writer_agree() {
        let mut r = HashingReader::new(&b"hello"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).expect("copy");
        let (rd, rn) = r.finish();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").expect("write");
        let (_, wd, wn) = w.finish();
        assert_eq!((rd.clone(), rn), (wd, wn));
        assert_eq!(rd, Digest::of(b"hello"));
    }
}
