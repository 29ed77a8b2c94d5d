//! Uploads closed segments in the order they closed, retrying with backoff. A local file is deleted only
//! after storage confirmed its upload.

use crate::error::RecordError;
use crate::metrics::RecorderMetrics;
use backon::Retryable;
use fleet_runtime::storage::Storage;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A file waiting for its upload, with its ticket in the node's upload metrics.
type Queued = (PathBuf, String, Option<u64>);

pub struct Uploader {
    queue: mpsc::UnboundedSender<Queued>,
    task: tokio::task::JoinHandle<Result<u32, RecordError>>,
    metrics: Option<Arc<RecorderMetrics>>,
}

impl Uploader {
    /// `metrics`: the node's, for the spool's segments (their lag and retries are what operators watch).
    pub fn start(storage: Storage, retry_limit: Duration, metrics: Option<Arc<RecorderMetrics>>) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<Queued>();
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let mut uploaded = 0u32;
            while let Some((path, key, ticket)) = pending.recv().await {
                let result = upload_one(&storage, &path, &key, retry_limit, task_metrics.as_deref()).await;
                if let (Some(metrics), Some(ticket)) = (&task_metrics, ticket) {
                    metrics.upload_ended(ticket, result.is_ok());
                }
                result?;
                if let Err(err) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(%err, path = %path.display(), "uploaded segment could not be removed from the spool");
                }
                uploaded += 1;
            }
            Ok(uploaded)
        });
        Self { queue, task, metrics }
    }

    pub fn push(&self, path: PathBuf, key: String) {
        let ticket = self.metrics.as_ref().map(|m| m.upload_queued());
        // The task only ends early after an upload gave up; `finish` reports that.
        if self.queue.send((path, key, ticket)).is_err()
            && let (Some(metrics), Some(ticket)) = (&self.metrics, ticket)
        {
            metrics.upload_ended(ticket, false);
        }
    }

    /// Waits until every pushed file is uploaded; returns how many were.
    pub async fn finish(self) -> Result<u32, RecordError> {
        drop(self.queue);
        self.task.await.map_err(|e| RecordError::Task("uploader task", e))?
    }
}

async fn upload_one(storage: &Storage, path: &Path, key: &str, retry_limit: Duration, metrics: Option<&RecorderMetrics>) -> Result<(), RecordError> {
    (|| storage.put_file(key, path))
        .retry(fleet_runtime::retry::for_about(retry_limit, Duration::from_millis(500), Duration::from_secs(30)))
        .notify(|err, retry_in| {
            tracing::warn!(%err, key, retry_in_ms = retry_in.as_millis() as u64, "segment upload failed; retrying");
            if let Some(metrics) = metrics {
                metrics.upload_retried();
            }
        })
        .await
        .map_err(|source| RecordError::UploadGaveUp { key: key.into(), seconds: retry_limit.as_secs(), source })
}
