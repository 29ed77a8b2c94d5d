//! Object storage: a local directory (the embedded default) or any S3-compatible server.
//! Writes are atomic from a reader's point of view (local: write to a temporary file, then rename).

use crate::config::{StorageConfig, StorageKind};
use crate::keys::{InvalidKey, validate_key};
use aws_sdk_s3::primitives::ByteStream;
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

#[derive(Clone, Debug)]
pub struct Storage {
    prefix: String,
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Local { root: PathBuf },
    S3 { client: aws_sdk_s3::Client, bucket: String },
}

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
            StorageKind::S3 => Backend::S3 { client: s3_client(config).await, bucket: config.s3.bucket.clone() },
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
            Backend::S3 { client, bucket } => {
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
            Backend::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(full)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(s3_error)?;
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
            Backend::S3 { client, bucket } => {
                let response = client.get_object().bucket(bucket).key(&full).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                        StorageError::NotFound(key.into())
                    } else {
                        s3_error(e)
                    }
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
            Backend::S3 { client, bucket } => {
                let response = client.get_object().bucket(bucket).key(&full).send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                        StorageError::NotFound(key.into())
                    } else {
                        s3_error(e)
                    }
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
                        let meta = entry.metadata().await?;
                        let path = entry.path();
                        if meta.is_dir() {
                            pending.push(path);
                        } else if !is_temp(&path) {
                            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                            objects.push(ObjectInfo { key: strip(&rel), size: meta.len() });
                        }
                    }
                }
            }
            Backend::S3 { client, bucket } => {
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

    /// Checks that the backend answers (bucket exists / directory writable).
    pub async fn check(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local { root } => {
                tokio::fs::metadata(root).await?;
                Ok(())
            }
            Backend::S3 { client, bucket } => {
                client.head_bucket().bucket(bucket).send().await.map_err(s3_error)?;
                Ok(())
            }
        }
    }
}

const TEMP_MARKER: &str = ".fleet-tmp-";

fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest.file_name().expect("keys name a file").to_string_lossy();
    dest.with_file_name(format!("{TEMP_MARKER}{}-{name}", rand::random::<u32>()))
}

fn is_temp(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP_MARKER))
}

async fn s3_client(config: &StorageConfig) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
    let s3 = &config.s3;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(s3.region.clone()));
    if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "fleet-config"));
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
    aws_sdk_s3::Client::from_conf(builder.build())
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
}
