//! Object storage: a local directory (the embedded default) or any S3-compatible server.
//! Writes are atomic from a reader's point of view (local: write to a temporary file, then rename).

use crate::config::{StorageConfig, StorageKind};
use aws_sdk_s3::primitives::ByteStream;
use fleet_protocol::keys::{InvalidKey, validate_key};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    #[error("object {0} not found")]
    NotFound(String),
    #[error("local storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("s3: {0}")]
    S3(String),
}

fn s3_error(err: impl std::error::Error) -> StorageError {
    // The SDK's Display is terse; the source chain says what actually failed.
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    StorageError::S3(message)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the storage prefix.
    pub key: String,
    pub size: u64,
}

/// See [`Storage::reader_access`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReaderAccess {
    Url(String),
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Storage {
    prefix: String,
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Local { root: PathBuf },
    S3 { client: aws_sdk_s3::Client, bucket: String, parts: Parts },
}

/// When and how files upload in parts.
#[derive(Clone, Copy, Debug)]
struct Parts {
    threshold: u64,
    size: u64,
}

const MIB: u64 = 1 << 20;
/// S3's smallest part (but the last).
const MIN_PART: u64 = 5 * MIB;

impl Storage {
    pub async fn from_config(config: &StorageConfig) -> Result<Self, StorageError> {
        let prefix = config.prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        let backend = match config.kind {
            StorageKind::Local => {
                tokio::fs::create_dir_all(&config.local_root).await?;
                Backend::Local { root: config.local_root.clone() }
            }
            StorageKind::S3 => {
                let parts =
                    Parts { threshold: config.s3.multipart_threshold_mb.max(5) * MIB, size: (config.s3.multipart_part_mb * MIB).max(MIN_PART) };
                Backend::S3 { client: s3_client(config).await?, bucket: config.s3.bucket.clone(), parts }
            }
        };
        Ok(Self { prefix, backend })
    }

    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) })
    }

    /// Where an object lives, for people: a file path or an `s3://bucket/key` URL.
    pub fn location(&self, key: &str) -> String {
        let full = self.full_key(key).unwrap_or_else(|_| key.to_string());
        match &self.backend {
            Backend::Local { root } => root.join(full).display().to_string(),
            Backend::S3 { bucket, .. } => format!("s3://{bucket}/{full}"),
        }
    }

    /// How someone outside the fleet reads an object: an S3 URL presigned for `ttl`, or the file of
    /// local storage (for the holder of this handle to serve).
    pub async fn reader_access(&self, key: &str, ttl: std::time::Duration) -> Result<ReaderAccess, StorageError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Local { root } => Ok(ReaderAccess::File(root.join(full))),
            Backend::S3 { client, bucket, .. } => {
                let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl).map_err(s3_error)?;
                let request = client.get_object().bucket(bucket).key(&full).presigned(presigning).await.map_err(s3_error)?;
                Ok(ReaderAccess::Url(request.uri().to_string()))
            }
        }
    }

    /// Uploads a local file; returns only once the object is durably stored.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Local { root } => {
                let dest = root.join(&full);
                let tmp = temp_sibling(&dest);
                tokio::fs::create_dir_all(dest.parent().expect("keys have a parent")).await?;
                tokio::fs::copy(path, &tmp).await?;
                tokio::fs::File::open(&tmp).await?.sync_all().await?;
                tokio::fs::rename(&tmp, &dest).await?;
                Ok(())
            }
            Backend::S3 { client, bucket, parts } => {
                let size = tokio::fs::metadata(path).await?.len();
                if size >= parts.threshold {
                    return put_in_parts(client, bucket, &full, path, size, parts.size).await;
                }
                let body = ByteStream::from_path(path).await.map_err(s3_error)?;
                client.put_object().bucket(bucket).key(full).body(body).send().await.map_err(s3_error)?;
                Ok(())
            }
        }
    }

    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Local { root } => {
                let dest = root.join(&full);
                let tmp = temp_sibling(&dest);
                tokio::fs::create_dir_all(dest.parent().expect("keys have a parent")).await?;
                let mut file = tokio::fs::File::create(&tmp).await?;
                file.write_all(&bytes).await?;
                file.sync_all().await?;
                tokio::fs::rename(&tmp, &dest).await?;
                Ok(())
            }
            Backend::S3 { client, bucket, .. } => {
                client.put_object().bucket(bucket).key(full).body(ByteStream::from(bytes)).send().await.map_err(s3_error)?;
                Ok(())
            }
        }
    }

    /// Downloads an object into a local file (created or truncated).
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Local { root } => {
                let src = root.join(&full);
                match tokio::fs::copy(&src, path).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(key.into())),
                    other => Ok(other?),
                }
            }
            Backend::S3 { client, bucket, .. } => {
                let response = client.get_object().bucket(bucket).key(&full).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) { StorageError::NotFound(key.into()) } else { s3_error(e) }
                })?;
                let mut reader = response.body.into_async_read();
                let mut file = tokio::fs::File::create(path).await?;
                let written = tokio::io::copy(&mut reader, &mut file).await?;
                file.flush().await?;
                Ok(written)
            }
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let full = self.full_key(key)?;
        match &self.backend {
            Backend::Local { root } => match tokio::fs::read(root.join(&full)).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound(key.into())),
                other => Ok(other?),
            },
            Backend::S3 { client, bucket, .. } => {
                let response = client.get_object().bucket(bucket).key(&full).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) { StorageError::NotFound(key.into()) } else { s3_error(e) }
                })?;
                let data = response.body.collect().await.map_err(s3_error)?;
                Ok(data.into_bytes().to_vec())
            }
        }
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full_prefix = self.full_key(prefix.trim_end_matches('/'))? + "/";
        let strip = |full: &str| full.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(full).to_string();
        let mut objects = Vec::new();
        match &self.backend {
            Backend::Local { root } => {
                let mut pending = vec![root.join(&full_prefix)];
                while let Some(dir) = pending.pop() {
                    let mut entries = match tokio::fs::read_dir(&dir).await {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        other => other?,
                    };
                    while let Some(entry) = entries.next_entry().await? {
                        let path = entry.path();
                        // An upload in flight is no object yet, and its file is renamed away at any
                        // moment (a listing that stat-ed it failed now and then mid-recording).
                        if is_temp(&path) {
                            continue;
                        }
                        let meta = match entry.metadata().await {
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            other => other?,
                        };
                        if meta.is_dir() {
                            pending.push(path);
                        } else {
                            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                            objects.push(ObjectInfo { key: strip(&rel), size: meta.len() });
                        }
                    }
                }
            }
            Backend::S3 { client, bucket, .. } => {
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(&full_prefix)
                        .set_continuation_token(token.take())
                        .send()
                        .await
                        .map_err(s3_error)?;
                    for object in page.contents() {
                        if let Some(key) = object.key() {
                            objects.push(ObjectInfo { key: strip(key), size: object.size().unwrap_or(0) as u64 });
                        }
                    }
                    match page.next_continuation_token() {
                        Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                        _ => break,
                    }
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Removes the partial files of uploads under `prefix` last written before `written_before`: their
    /// writer died mid-upload (local storage writes a temporary file, then renames it into place). S3
    /// keeps no partial objects, so there is nothing to do there. Returns how many were removed.
    pub async fn remove_abandoned_uploads(&self, prefix: &str, written_before: std::time::SystemTime) -> Result<usize, StorageError> {
        let Backend::Local { root } = &self.backend else { return Ok(0) };
        let mut pending = vec![root.join(self.full_key(prefix.trim_end_matches('/'))?)];
        let mut removed = 0;
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other?,
            };
            while let Some(entry) = entries.next_entry().await? {
                // Another writer may rename or remove a file between the listing and here: not an error.
                let Ok(meta) = entry.metadata().await else { continue };
                let path = entry.path();
                if meta.is_dir() {
                    pending.push(path);
                } else if is_temp(&path) && meta.modified().is_ok_and(|at| at < written_before) {
                    match tokio::fs::remove_file(&path).await {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Checks that the backend answers (bucket exists / directory writable).
    pub async fn check(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local { root } => {
                tokio::fs::metadata(root).await?;
                Ok(())
            }
            Backend::S3 { client, bucket, .. } => {
                client.head_bucket().bucket(bucket).send().await.map_err(s3_error)?;
                Ok(())
            }
        }
    }
}

/// A multipart upload of `path` (`size` bytes) in parts of `part_size`; aborted (its parts freed) when a
/// part or the completion fails, so a retry starts clean and nothing half-written is left billed.
async fn put_in_parts(client: &aws_sdk_s3::Client, bucket: &str, key: &str, path: &Path, size: u64, part_size: u64) -> Result<(), StorageError> {
    let created = client.create_multipart_upload().bucket(bucket).key(key).send().await.map_err(s3_error)?;
    let upload_id = created.upload_id().ok_or_else(|| StorageError::S3(format!("no upload id for {key}")))?.to_string();
    let uploaded = upload_parts(client, bucket, key, &upload_id, path, size, part_size).await;
    let completed = match uploaded {
        Ok(parts) => client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map(|_| ())
            .map_err(s3_error),
        Err(err) => Err(err),
    };
    if completed.is_err()
        && let Err(err) = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await
    {
        tracing::warn!(key, err = %s3_error(err), "a failed multipart upload could not be aborted");
    }
    completed
}

async fn upload_parts(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    path: &Path,
    size: u64,
    part_size: u64,
) -> Result<Vec<aws_sdk_s3::types::CompletedPart>, StorageError> {
    use aws_sdk_s3::primitives::Length;
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1;
    while offset < size {
        let length = part_size.min(size - offset);
        let body = ByteStream::read_from().path(path).offset(offset).length(Length::Exact(length)).build().await.map_err(s3_error)?;
        let part = client.upload_part().bucket(bucket).key(key).upload_id(upload_id).part_number(number).body(body).send().await.map_err(s3_error)?;
        parts.push(aws_sdk_s3::types::CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(str::to_string)).build());
        offset += length;
        number += 1;
    }
    Ok(parts)
}

const TEMP_MARKER: &str = ".fleet-tmp-";

fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest.file_name().expect("keys name a file").to_string_lossy();
    dest.with_file_name(format!("{TEMP_MARKER}{}-{name}", rand::random::<u32>()))
}

fn is_temp(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP_MARKER))
}

async fn s3_client(config: &StorageConfig) -> Result<aws_sdk_s3::Client, StorageError> {
    use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
    let s3 = &config.s3;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(s3.region.clone()));
    if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "fleet-config"));
    }
    if let Some(ca_file) = &s3.ca_file {
        loader = loader.http_client(https_trusting(ca_file)?);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s3.force_path_style)
        // Self-hosted servers (Garage, older MinIO) refuse the SDK's default extra checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// An HTTPS client that trusts the CA certificates in `ca_file` (PEM) besides the system's: for an S3
/// server with a certificate from a private CA.
fn https_trusting(ca_file: &Path) -> Result<aws_sdk_s3::config::SharedHttpClient, StorageError> {
    use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let pem = std::fs::read(ca_file).map_err(|e| StorageError::S3(format!("reading ca_file {}: {e}", ca_file.display())))?;
    // The SDK parses the file only on the first request, and panics on a bad one: check it here.
    use rustls_pki_types::pem::PemObject;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StorageError::S3(format!("ca_file {}: {e}", ca_file.display())))?;
    if certificates.is_empty() {
        return Err(StorageError::S3(format!("ca_file {}: no PEM certificate in it", ca_file.display())));
    }
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| StorageError::S3(format!("ca_file {}: {e}", ca_file.display())))?;
    Ok(aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).tls_context(context).build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_get_list() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { local_root: dir.path().to_path_buf(), prefix: "p".into(), ..Default::default() };
        let storage = Storage::from_config(&config).await.unwrap();
        storage.put_bytes("j1/raw/s1/a.txt", b"hello".to_vec()).await.unwrap();
        storage.put_bytes("j1/manifest.json", b"{}".to_vec()).await.unwrap();
        let listed = storage.list("j1/raw/").await.unwrap();
        assert_eq!(listed, vec![ObjectInfo { key: "j1/raw/s1/a.txt".into(), size: 5 }]);
        assert_eq!(storage.get_bytes("j1/raw/s1/a.txt").await.unwrap(), b"hello");
        assert!(matches!(storage.get_bytes("j1/none").await, Err(StorageError::NotFound(_))));
        assert!(storage.put_bytes("../escape", vec![]).await.is_err());
        assert!(dir.path().join("p/j1/manifest.json").exists());
    }

    #[tokio::test]
    async fn only_idle_partial_uploads_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { local_root: dir.path().to_path_buf(), prefix: "p".into(), ..Default::default() };
        let storage = Storage::from_config(&config).await.unwrap();
        storage.put_bytes("j1/raw/s1/a.mkv", b"whole".to_vec()).await.unwrap();
        let partial = dir.path().join(format!("p/j1/raw/s1/{TEMP_MARKER}1-b.mkv"));
        std::fs::write(&partial, b"half").unwrap();
        let now = std::time::SystemTime::now();
        let a_minute_ago = now - std::time::Duration::from_secs(60);
        assert_eq!(storage.remove_abandoned_uploads("j1", a_minute_ago).await.unwrap(), 0, "a fresh one may still be written");
        assert!(partial.exists());
        assert_eq!(storage.remove_abandoned_uploads("j1", now + std::time::Duration::from_secs(1)).await.unwrap(), 1);
        assert!(!partial.exists());
        assert_eq!(storage.get_bytes("j1/raw/s1/a.mkv").await.unwrap(), b"whole", "finished objects stay");
    }
}
