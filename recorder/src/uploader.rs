//! Uploads closed segments in the order they closed, retrying with backoff. A local file is deleted only
//! after storage confirmed its upload.

use crate::error::RecordError;
use backon::Retryable;
use fleet_runtime::storage::Storage;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Uploader {
    queue: mpsc::UnboundedSender<(PathBuf, String)>,
    task: tokio::task::JoinHandle<Result<u32, RecordError>>,
}

impl Uploader {
    pub fn start(storage: Storage, retry_limit: Duration) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<(PathBuf, String)>();
        let task = tokio::spawn(async move {
            let mut uploaded = 0u32;
            while let Some((path, key)) = pending.recv().await {
                upload_one(&storage, &path, &key, retry_limit).await?;
                if let Err(err) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(%err, path = %path.display(), "uploaded segment could not be removed from the spool");
                }
                uploaded += 1;
            }
            Ok(uploaded)
        });
        Self { queue, task }
    }

    pub fn push(&self, path: PathBuf, key: String) {
        // The task only ends early after an upload gave up; `finish` reports that.
        let _ = self.queue.send((path, key));
    }

    /// Waits until every pushed file is uploaded; returns how many were.
    pub async fn finish(self) -> Result<u32, RecordError> {
        drop(self.queue);
        self.task.await.map_err(|e| RecordError::Task("uploader task", e))?
    }
}

async fn upload_one(storage: &Storage, path: &Path, key: &str, retry_limit: Duration) -> Result<(), RecordError> {
    (|| storage.put_file(key, path))
        .retry(fleet_runtime::retry::for_about(retry_limit, Duration::from_millis(500), Duration::from_secs(30)))
        .notify(|err, retry_in| tracing::warn!(%err, key, retry_in_ms = retry_in.as_millis() as u64, "segment upload failed; retrying"))
        .await
        .map_err(|source| RecordError::UploadGaveUp { key: key.into(), seconds: retry_limit.as_secs(), source })
}
