//! Pulling images from OCI registries into the store, with `oci-client`.
//!
//! https unless the registry is listed as insecure; anonymous or basic auth
//! (bearer tokens are negotiated by oci-client); multi-arch indexes resolve to
//! linux/amd64. Every blob streams to a temp file in the store while it is
//! hashed, and is renamed into place only when its digest and size match the
//! descriptor — a pull interrupted at any point leaves the store consistent, and
//! pulling again completes it (blobs already present are not fetched again).
//! Within a pull, a transfer that breaks or stalls goes on from the byte it
//! stopped at (an HTTP range). Every blob is read through a [`BlobReader`];
//! [`Remote`] also hands an image's layers to a caller as they arrive, checked
//! at their end, for `berth os upgrade` to write into a slot.

use std::io::Write;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::digest::Digest;
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::reference::Reference;
use crate::store::{select_platform, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("{reference} was not found in {registry}")]
    NotFound { reference: String, registry: String },
    #[error("pulling {what} of {reference}: {reason}")]
    Registry {
        reference: String,
        what: String,
        reason: String,
    },
    #[error("{reference}: the registry sent {what} with digest {actual}, not {expected}")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: Digest,
    },
    #[error("{reference}: unsupported manifest media type `{media_type}`")]
    MediaType {
        reference: String,
        media_type: String,
    },
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "no CA certificates to check a registry with: none in {} (this console may have none: \
         the busybox one does not) and none in `ca_certs`",
        bundle.display()
    )]
    NoTrustedRoots { bundle: std::path::PathBuf },
    #[error("cannot set up the registry client: {0}")]
    Client(String),
}

impl PullError {
    /// A network failure or a registry's error, which another attempt may
    /// not meet; anything else (not found, a digest, the store) would recur.
    fn is_retriable(&self) -> bool {
        matches!(
            self,
            PullError::Unreachable { .. } | PullError::Registry { .. }
        )
    }
}

/// The system's CA bundle, as the TLS stack finds it: `$SSL_CERT_FILE`,
/// else Debian's.
fn system_bundle() -> std::path::PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into())
}

/// Each `CERTIFICATE` block of a PEM text: a `ca_certs` entry may hold
/// several, and the TLS stack reads one certificate per entry.
fn pem_certificates(text: &str) -> impl Iterator<Item = String> + '_ {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    text.match_indices(BEGIN).filter_map(|(at, _)| {
        let end = text[at..].find(END)? + at + END.len();
        Some(format!("{}\n", &text[at..end]))
    })
}

/// How to reach registries: which speak plain http, and credentials.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `host:port` of registries reached over plain http.
    pub insecure: Vec<String>,
    /// Basic-auth credentials for the image's registry.
    pub credentials: Option<(String, String)>,
    /// Attempts per request on network errors (with exponential backoff).
    pub attempts: u32,
    /// PEM certificates of CAs trusted besides the public ones (`ca_certs`).
    pub ca_certs: Vec<String>,
    /// How long a connection may stay silent (not connected, or no byte of
    /// a response) before its attempt fails and the next one starts;
    /// `None`: [`STALL_TIMEOUT`].
    pub stall_timeout: Option<Duration>,
}

/// A registry (or a network) that stops sending without closing the
/// connection would otherwise hold a pull, and an upgrade, forever.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub use crate::progress::{Progress, Quiet};

const MANIFEST_TYPES: &[&str] = &[
    oci::OCI_MANIFEST,
    oci::OCI_INDEX,
    oci::DOCKER_MANIFEST,
    oci::DOCKER_MANIFEST_LIST,
];

/// Pulls `reference` into `store` and names it; returns the stored name.
pub fn pull(
    store: &Store,
    reference: &str,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<String, PullError> {
    let parsed = Reference::parse(reference).map_err(StoreError::from)?;
    // Until the image is named, its blobs are unreferenced: the session holds
    // the store's lock against a prune meanwhile.
    let remote = Remote::connect(store, &parsed, options, progress)?;
    let image = remote.image()?;
    let layers = &image.manifest.layers;
    for (i, layer) in layers.iter().enumerate() {
        remote.store_blob(&format!("layer {}/{}", i + 1, layers.len()), layer)?;
    }
    // Named only now, when everything it refers to is stored.
    store.tag(&image.reference, &image.descriptor)?;
    Ok(image.reference)
}

struct Puller<'a> {
    store: &'a Store,
    reference: Reference,
    remote: oci_client::Reference,
    client: Client,
    auth: RegistryAuth,
    attempts: u32,
    progress: &'a dyn Progress,
}

impl<'a> Puller<'a> {
    fn new(
        store: &'a Store,
        reference: &Reference,
        options: &PullOptions,
        progress: &'a dyn Progress,
    ) -> Result<Self, PullError> {
        // rustls needs one crypto provider per process; a second install is a no-op error.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.registry_host().to_string();
        let repository = reference.registry_repository();
        let remote = match (&reference.digest, &reference.tag) {
            (Some(digest), _) => {
                oci_client::Reference::with_digest(registry, repository, digest.to_string())
            }
            (None, tag) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        // Where the system has no CA bundle (the busybox console) and
        // `ca_certs` gives none, the TLS stack panics building its client.
        if options.ca_certs.is_empty() && !system_bundle().exists() {
            return Err(PullError::NoTrustedRoots {
                bundle: system_bundle(),
            });
        }
        // `try_from`, not `new`: `new` replaces a config it cannot use (a
        // `ca_certs` entry that does not parse) with a default one, which
        // drops the insecure registries and `ca_certs` without a word.
        let client = Client::try_from(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure.clone()),
            extra_root_certificates: options
                .ca_certs
                .iter()
                .flat_map(|pem| pem_certificates(pem))
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.into_bytes(),
                })
                .collect(),
            connect_timeout: Some(options.stall_timeout.unwrap_or(STALL_TIMEOUT)),
            read_timeout: Some(options.stall_timeout.unwrap_or(STALL_TIMEOUT)),
            ..ClientConfig::default()
        })
        .map_err(|e| PullError::Client(e.to_string()))?;
        let auth = match &options.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Puller {
            store,
            reference: reference.clone(),
            remote,
            client,
            auth,
            attempts: options.attempts.max(1),
            progress,
        })
    }

    fn classify(&self, what: &str, error: oci_client::errors::OciDistributionError) -> PullError {
        let reason = error.to_string();
        let lower = format!("{error:?} {reason}").to_lowercase();
        let registry = self.remote.resolve_registry().to_string();
        if lower.contains("connect") || lower.contains("dns") || lower.contains("timed out") {
            PullError::Unreachable { registry, reason }
        } else if [
            "manifest unknown",
            "manifest_unknown",
            "name unknown",
            "not found",
            "404",
        ]
        .iter()
        .any(|m| lower.contains(m))
        {
            PullError::NotFound {
                reference: self.reference.to_string(),
                registry,
            }
        } else {
            PullError::Registry {
                reference: self.reference.to_string(),
                what: what.to_string(),
                reason,
            }
        }
    }

    /// Retries network failures with exponential backoff; other errors end at once.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        let mut delay = Duration::from_millis(500);
        for n in 1..=self.attempts {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let error = self.classify(what, e);
                    let retriable = error.is_retriable();
                    if !retriable || n == self.attempts {
                        return Err(error);
                    }
                    log::warn!("{error}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        Err(PullError::Registry {
            reference: self.reference.to_string(),
            what: what.to_string(),
            reason: "no attempts made".into(),
        })
    }

    /// Stores the manifest (for an index, its linux/amd64 one too); returns
    /// the descriptor the reference names, the manifest's digest and the
    /// manifest.
    async fn manifest(&self) -> Result<(Descriptor, Digest, Manifest), PullError> {
        let (bytes, digest) = self
            .retry("the manifest", || {
                self.client
                    .pull_manifest_raw(&self.remote, &self.auth, MANIFEST_TYPES)
            })
            .await?;
        let top = self.store_manifest_bytes(&bytes, &digest, "the manifest")?;
        let media_type = media_type_of(&bytes).unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        let top_descriptor = Descriptor::new(&media_type, top.0, top.1);
        let manifest_descriptor = if oci::is_index(&media_type) {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| PullError::Registry {
                reference: self.reference.to_string(),
                what: "the image index".into(),
                reason: e.to_string(),
            })?;
            let chosen = select_platform(&self.reference.to_string(), &index)?.clone();
            let by_digest = self.remote.clone_with_digest(chosen.digest.to_string());
            let (bytes, digest) = self
                .retry("the linux/amd64 manifest", || {
                    self.client
                        .pull_manifest_raw(&by_digest, &self.auth, MANIFEST_TYPES)
                })
                .await?;
            self.store_manifest_bytes(&bytes, &digest, "the linux/amd64 manifest")?;
            chosen
        } else if oci::is_manifest(&media_type) {
            top_descriptor.clone()
        } else {
            return Err(PullError::MediaType {
                reference: self.reference.to_string(),
                media_type,
            });
        };
        let manifest: Manifest =
            serde_json::from_slice(&self.store.read_json_blob(&manifest_descriptor.digest)?)
                .map_err(|e| PullError::Registry {
                    reference: self.reference.to_string(),
                    what: "the manifest".into(),
                    reason: e.to_string(),
                })?;
        Ok((top_descriptor, manifest_descriptor.digest, manifest))
    }

    fn store_manifest_bytes(
        &self,
        bytes: &[u8],
        digest: &str,
        what: &str,
    ) -> Result<(Digest, u64), PullError> {
        let actual = Digest::of(bytes);
        if actual.to_string() != digest && !digest.is_empty() {
            return Err(PullError::DigestMismatch {
                reference: self.reference.to_string(),
                what: what.into(),
                expected: digest.into(),
                actual,
            });
        }
        if let Some(expected) = &self.reference.digest {
            if what == "the manifest" && *expected != actual {
                return Err(PullError::DigestMismatch {
                    reference: self.reference.to_string(),
                    what: what.into(),
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok(self.store.put_blob(bytes, Some(&actual), None)?)
    }
}

/// A registry session for a caller that reads an image's layers as they
/// arrive instead of keeping them: `berth os upgrade` writes its image's one
/// layer straight into a slot, so an upgrade needs no room for a download and
/// the layer is written and read once, not three times. The manifest and the
/// config are stored as [`pull`] stores them.
pub struct Remote<'a> {
    runtime: tokio::runtime::Runtime,
    puller: Puller<'a>,
    _adding: crate::store::StoreLock,
}

impl<'a> Remote<'a> {
    pub fn connect(
        store: &'a Store,
        reference: &Reference,
        options: &PullOptions,
        progress: &'a dyn Progress,
    ) -> Result<Self, PullError> {
        let adding = store.adding()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PullError::Runtime)?;
        Ok(Remote {
            runtime,
            puller: Puller::new(store, reference, options, progress)?,
            _adding: adding,
        })
    }

    /// The image (its manifest and config, both stored and checked), not named
    /// in the store: its layers are not there.
    pub fn image(&self) -> Result<crate::Image, PullError> {
        let puller = &self.puller;
        let (descriptor, manifest_digest, manifest) = self.runtime.block_on(puller.manifest())?;
        self.store_blob("config", &manifest.config)?;
        let config = serde_json::from_slice(&puller.store.read_json_blob(&manifest.config.digest)?)
            .map_err(|e| PullError::Registry {
                reference: puller.reference.to_string(),
                what: "the image config".into(),
                reason: e.to_string(),
            })?;
        Ok(crate::Image {
            reference: puller.reference.to_string(),
            descriptor,
            manifest_digest,
            manifest,
            config,
        })
    }

    /// The blob of `layer` as it arrives ([`BlobReader`]).
    pub fn layer(&self, layer: &Descriptor) -> BlobReader<'_> {
        self.reader("layer", layer)
    }

    /// Stores the blob of `descriptor` unless the store has it, read as
    /// [`Remote::layer`] reads it: checked at its end, and asked again from
    /// where a broken or stalled connection stopped. It goes to a temp file
    /// and is renamed into place only whole and checked.
    fn store_blob(&self, what: &str, descriptor: &Descriptor) -> Result<(), PullError> {
        use std::io::Read;
        let store = self.puller.store;
        let digest = &descriptor.digest;
        if store.has_blob(digest) {
            let progress = self.puller.progress;
            progress.blob_started(what, digest, descriptor.size);
            progress.blob_done(digest, true);
            return Ok(());
        }
        let io_err = |source| StoreError::Io {
            path: store.layout_dir(),
            source,
        };
        let mut file = std::io::BufWriter::with_capacity(BUFFER, store.temp_file()?);
        let mut reader = self.reader(what, descriptor);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(reader.error_of(e)),
            };
            file.write_all(&buf[..n]).map_err(io_err)?;
        }
        let tmp = file.into_inner().map_err(|e| io_err(e.into_error()))?;
        // The reader has checked the digest and size on the way in.
        store.commit_blob(
            tmp,
            digest.clone(),
            descriptor.size,
            Some(digest),
            Some(descriptor.size),
        )?;
        Ok(())
    }

    fn reader(&self, what: &str, layer: &Descriptor) -> BlobReader<'_> {
        self.puller
            .progress
            .blob_started(what, &layer.digest, layer.size);
        BlobReader {
            remote: self,
            what: what.to_string(),
            descriptor: oci_client::manifest::OciDescriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.to_string(),
                size: layer.size as i64,
                ..Default::default()
            },
            digest: layer.digest.clone(),
            size: layer.size,
            hasher: crate::digest::Sha256::new(),
            received: 0,
            body: None,
            chunk: bytes::Bytes::new(),
            failures: 0,
            actual: None,
        }
    }
}

impl std::fmt::Debug for Remote<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("reference", &self.puller.reference.to_string())
            .finish()
    }
}

/// A blob (a layer, a config) read as the registry sends it. Its bytes are hashed as they
/// arrive, and the read that reaches the blob's end fails unless the digest
/// and size are the descriptor's: nothing read from it may be trusted until
/// [`BlobReader::finish`] (or a read returning 0) has said so. A connection
/// that fails or ends early is asked again from the first byte not yet
/// received (an HTTP range), up to the options' attempts in a row.
pub struct BlobReader<'r> {
    remote: &'r Remote<'r>,
    /// What the blob is to the image (`config`, `layer 1/2`), for errors.
    what: String,
    descriptor: oci_client::manifest::OciDescriptor,
    digest: Digest,
    size: u64,
    hasher: crate::digest::Sha256,
    received: u64,
    body: Option<futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>>,
    chunk: bytes::Bytes,
    failures: u32,
    /// The digest of the whole blob, once it is all here.
    actual: Option<Digest>,
}

impl std::fmt::Debug for BlobReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("received", &self.received)
            .field("failures", &self.failures)
            .finish()
    }
}

impl BlobReader<'_> {
    /// Reads what is left of the blob and checks it.
    pub fn finish(mut self) -> Result<(), PullError> {
        match std::io::copy(&mut self, &mut std::io::sink()) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error_of(e)),
        }
    }

    /// The error a read of this reader failed with.
    pub fn error_of(&self, e: std::io::Error) -> PullError {
        let text = e.to_string();
        match e.into_inner().map(|inner| inner.downcast::<PullError>()) {
            Some(Ok(error)) => *error,
            _ => self.failed(text),
        }
    }

    fn failed(&self, reason: String) -> PullError {
        PullError::Registry {
            reference: self.remote.puller.reference.to_string(),
            what: format!("{} {}", self.what, self.digest),
            reason,
        }
    }

    /// The next piece of the blob, asking again (from where it stopped)
    /// when a connection fails or ends early; `None` once it is all here.
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, PullError> {
        use futures_util::StreamExt;
        let puller = &self.remote.puller;
        loop {
            if self.received == self.size {
                return Ok(None);
            }
            let outcome = match self.body.as_mut() {
                Some(body) => match self.remote.runtime.block_on(body.next()) {
                    Some(Ok(chunk)) => return Ok(Some(chunk)),
                    Some(Err(e)) => Err(self.failed(e.to_string())),
                    None => Err(self.failed(format!(
                        "the connection ended after {} of its {} bytes",
                        self.received, self.size
                    ))),
                },
                None => self.connect(),
            };
            if let Err(error) = outcome {
                self.body = None;
                self.failures += 1;
                let retriable = error.is_retriable();
                if !retriable || self.failures >= puller.attempts {
                    return Err(error);
                }
                let delay = Duration::from_millis(500 << self.failures.min(5));
                log::warn!("{error}; asking again in {delay:?}");
                std::thread::sleep(delay);
            }
        }
    }

    /// Asks for the blob from its first byte not yet received, as a range
    /// even from byte 0: oci-client hashes a whole (200) response itself,
    /// twice when the registry also names its digest in a header, and this
    /// reader hashes it already (SHA-256 was most of an OS upgrade's pull
    /// under emulation). A registry that ignores the range sends the blob
    /// whole, which oci-client then checks too, and what was received
    /// already is skipped.
    fn connect(&mut self) -> Result<(), PullError> {
        use futures_util::StreamExt;
        let puller = &self.remote.puller;
        let response = self
            .remote
            .runtime
            .block_on(puller.client.pull_blob_stream_partial(
                &puller.remote,
                &self.descriptor,
                self.received,
                None,
            ))
            .map_err(|e| puller.classify(&format!("{} {}", self.what, self.digest), e))?;
        let (body, skip) = match response {
            oci_client::client::BlobResponse::Partial(body) => (body.stream, 0),
            oci_client::client::BlobResponse::Full(body) => (body.stream, self.received),
        };
        let mut skip = skip;
        let body = body
            .filter_map(move |chunk| {
                let kept = match chunk {
                    Ok(mut bytes) if skip > 0 => {
                        let dropped = skip.min(bytes.len() as u64);
                        skip -= dropped;
                        let _ = bytes.split_to(dropped as usize);
                        (!bytes.is_empty()).then_some(Ok(bytes))
                    }
                    other => Some(other),
                };
                std::future::ready(kept)
            })
            .boxed();
        self.body = Some(body);
        Ok(())
    }

    /// Whether the whole blob has its digest; asked again, says the same.
    fn check(&mut self) -> Result<(), PullError> {
        let actual = match &self.actual {
            Some(actual) => actual.clone(),
            None => {
                let actual = Digest::from_sha256(std::mem::take(&mut self.hasher).finish());
                self.actual = Some(actual.clone());
                if actual == self.digest {
                    self.remote.puller.progress.blob_done(&self.digest, false);
                }
                actual
            }
        };
        if actual != self.digest {
            return Err(PullError::DigestMismatch {
                reference: self.remote.puller.reference.to_string(),
                what: format!("the {}", self.what),
                expected: self.digest.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

impl std::io::Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.next_chunk().map_err(std::io::Error::other)? {
                Some(chunk) => {
                    let left = self.size - self.received;
                    if chunk.len() as u64 > left {
                        return Err(std::io::Error::other(self.failed(format!(
                            "the registry sent more than its {} bytes",
                            self.size
                        ))));
                    }
                    self.hasher.update(&chunk);
                    self.received += chunk.len() as u64;
                    self.failures = 0;
                    let progress = self.remote.puller.progress;
                    progress.blob_progress(&self.digest, self.received, self.size);
                    self.chunk = chunk;
                }
                None => {
                    self.check().map_err(std::io::Error::other)?;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// What a blob is written to its temp file in: large writes, few system calls.
const BUFFER: usize = 1 << 20;

fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe
        .media_type
        .or_else(|| probe.manifests.map(|_| oci::OCI_INDEX.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bundle_is_split_into_its_certificates() {
        let bundle = "# a comment\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                      junk\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n\
                      -----BEGIN CERTIFICATE-----\ncut short\n";
        let certs: Vec<String> = super::pem_certificates(bundle).collect();
        assert_eq!(
            certs,
            [
                "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",
                "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n",
            ]
        );
    }
}
