//! The safe layer unpacker. Layer tars come from registries and files we do not
//! trust, so this is a security boundary.
//!
//! Nothing is ever resolved by joining strings. Every entry is created relative to
//! a directory fd, and parent directories are opened with `openat2` using
//! `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`:
//! the kernel itself refuses to walk out of the layer root or through any
//! symlink, including one planted by an earlier entry of the same tar. Names with
//! `..` or a leading `/` are rejected before that; the final component is always
//! created with `O_EXCL | O_NOFOLLOW` after the old entry (if any) is unlinked,
//! so a write can never land on a symlink's target either.
//!
//! Whiteouts are written in the overlay form so the layer directory can be used
//! as an overlayfs lowerdir as is: `.wh.NAME` becomes a 0/0 character device
//! `NAME`, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//! Device nodes from the tar are skipped (containers get their devices from the
//! runtime), and only `user.*` xattrs are kept: `trusted.*` would let a layer
//! forge overlay metadata and `security.*` would let it grant file capabilities.
//!
//! [`unpack_layer`] stages into a temporary directory beside the destination and
//! renames it into place only after the diff_id verified; a rejected layer
//! leaves nothing behind.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::oci::LayerCompression;

mod entries;
pub use entries::unpack_tar;

/// Bounds on what one layer may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of file content (sparse files count at their full size).
    pub max_bytes: u64,
    /// Number of tar entries, whatever their kind.
    pub max_entries: u64,
}

impl Default for Limits {
    /// Generous for real images (the biggest public layers are a few GiB and
    /// ~100k files) yet far below what fills a state partition by surprise.
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 500_000,
        }
    }
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("its name contains `..`")]
    DotDot,
    #[error("its name is absolute")]
    Absolute,
    #[error("its name is not a valid path (empty component or NUL byte)")]
    BadName,
    #[error("`{0}` on its path is a symlink; entries are never written through symlinks")]
    SymlinkInPath(String),
    #[error("`{0}` on its path is not a directory")]
    NotADirectory(String),
    #[error("hardlink target `{0}` is not a regular file already in this layer")]
    BadHardlink(String),
    #[error("it would replace the non-empty directory `{0}`")]
    ReplacesDirectory(String),
    #[error("it deletes `{0}`, which is not a name in its directory")]
    BadWhiteout(String),
    #[error("the layer would exceed {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("its {size} bytes would take the layer past {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry `{entry}` rejected: {reason}")]
    Rejected { entry: String, reason: Rejection },
    #[error("layer entry `{entry}`: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("reading the layer: {0}")]
    Read(io::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the layer's {what} is {actual}, not {expected}")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("unsupported layer media type `{0}`")]
    MediaType(String),
}

/// What an unpack did besides writing entries, so callers can say so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Device nodes in the tar, skipped (the first few names, and how many).
    pub devices_skipped: Vec<String>,
    pub devices_skipped_count: u64,
    /// `trusted.*`, `security.*` and other non-`user.*` xattrs left out.
    pub xattrs_dropped: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Big reads keep the hashers and decompressors on their fast paths.
const READ_BUFFER: usize = 256 << 10;
/// Decoded chunks in flight between the decoder thread and the unpacker.
const PIPELINE_DEPTH: usize = 16;

/// Unpacks a compressed layer blob into `dest`, which must not exist yet.
///
/// `blob` is read once; the sha256 of the uncompressed tar must be `diff_id`.
/// The tree is built in a staging directory beside `dest` and renamed into
/// place only when that holds. If another unpacker wins the race for `dest`,
/// its result is kept.
///
/// The compressed blob is not hashed again here: the store verified it when
/// it came in (a blob's file is named by its digest), and the diff_id, which
/// the image's digest-checked config names, covers everything the blob
/// unpacks to, so a blob changed since cannot unpack to anything else. The
/// second hash was about a quarter of an unpack's time where SHA-256 has no
/// help from the processor.
pub fn unpack_layer(
    blob: impl Read + Send,
    compression: LayerCompression,
    diff_id: &Digest,
    dest: &Path,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(parent)
        .map_err(|source| UnpackError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    // Decompressing and hashing run on their own thread, entry creation on this
    // one: the same two-stage pipeline as `zstd -dc | tar -x`, which is what
    // keeps the safety checks from costing throughput.
    let (report, actual_diff_id) = std::thread::scope(|scope| {
        let (chunks, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        let decoder = scope.spawn(move || decode(blob, compression, chunks));
        let mut tar = ChunkReader {
            receiver,
            chunk: Vec::new(),
            offset: 0,
        };
        let unpacked = unpack_tar(
            BufReader::with_capacity(READ_BUFFER, &mut tar),
            staging.path(),
            limits,
        )
        .and_then(|report| {
            // The diff_id covers the tar's end blocks and any padding after
            // them; a layer that keeps going past them is still bounded.
            let trailing = io::copy(&mut (&mut tar).take(limits.max_bytes), &mut io::sink())
                .map_err(UnpackError::Read)?;
            if trailing == limits.max_bytes {
                return Err(UnpackError::Rejected {
                    entry: "(after the end of the tar)".into(),
                    reason: Rejection::TooLarge {
                        size: trailing,
                        limit: limits.max_bytes,
                    },
                });
            }
            Ok(report)
        });
        // Hang up first, so a decoder still sending gives up instead of blocking.
        drop(tar);
        let decoded = decoder
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the layer decoder panicked")));
        match (unpacked, decoded) {
            (Err(e @ UnpackError::Rejected { .. }), _) => Err(e),
            (_, Err(e)) => Err(UnpackError::Read(e)),
            (Err(e), _) => Err(e),
            (Ok(report), Ok(diff_id)) => Ok((report, diff_id)),
        }
    })?;
    if &actual_diff_id != diff_id {
        return Err(UnpackError::DigestMismatch {
            what: "diff_id",
            expected: diff_id.clone(),
            actual: actual_diff_id,
        });
    }
    // The files reach the disk before the layer's name does: a rename that
    // lands first leaves, after a power cut, a layer of empty files that is
    // taken for a whole one (syncfs: one call for thousands of files).
    berth_sys::atomic::sync_filesystem(staging.path()).map_err(|source| UnpackError::Io {
        path: staging.path().to_path_buf(),
        source,
    })?;
    let staged = staging.keep();
    match berth_sys::atomic::rename_durable(&staged, dest) {
        Ok(()) => Ok(report),
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(report)
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(UnpackError::Io {
                path: dest.to_path_buf(),
                source,
            })
        }
    }
}

/// Decompresses `blob`, hashing the tar, and sends it in chunks. Returns the
/// diff_id once the stream is read to its end.
fn decode(
    blob: impl Read,
    compression: LayerCompression,
    chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> io::Result<Digest> {
    let decoder: Box<dyn Read + '_> = match compression {
        LayerCompression::None => Box::new(blob),
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(READ_BUFFER, blob),
        )),
        LayerCompression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(READ_BUFFER, blob),
        )?),
    };
    let mut tar = HashingReader::new(decoder);
    loop {
        let mut chunk = vec![0; READ_BUFFER];
        let n = read_full(&mut tar, &mut chunk)?;
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        if chunks.send(chunk).is_err() {
            return Err(io::Error::other("the unpacker stopped reading"));
        }
    }
    Ok(tar.finish().0)
}

/// Fills `buf` unless the stream ends first; returns how much it read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The receiving end of the decoder thread, as a byte stream.
struct ChunkReader {
    receiver: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    offset: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.chunk.len() {
            match self.receiver.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.offset = 0;
                }
                // The decoder is done (or failed; it reports that itself).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.offset);
        buf[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// The compression of a layer media type, or an error naming it.
pub fn compression_of(media_type: &str) -> Result<LayerCompression, UnpackError> {
    LayerCompression::of_media_type(media_type)
        .ok_or_else(|| UnpackError::MediaType(media_type.to_string()))
}

#[cfg(test)]
mod tests;
