//! A capture session's timeline as storage holds it: the whole `timeline.jsonl` once the session
//! ended (or a restarted recorder recovered its spool); before that, the parts its recorder uploads
//! while it runs, laid end to end (`fleet_recorder::timeline`).

use fleet_protocol::{SafeId, keys};
use fleet_runtime::storage::{Storage, StorageError};

/// The session's timeline text; `None` when storage holds nothing of it.
pub async fn read(storage: &Storage, job: &SafeId, session: &SafeId) -> Result<Option<String>, StorageError> {
    match storage.get_bytes(&keys::timeline(job, session)).await {
        Ok(bytes) => return Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(StorageError::NotFound(_)) => {}
        Err(err) => return Err(err),
    }
    // Listed in key order, which is the parts' order. A part is uploaded whole before the next one
    // begins, so every part but the last is complete here.
    let parts = storage.list(&keys::timeline_parts_prefix(job, session)).await?;
    if parts.is_empty() {
        return Ok(None);
    }
    let mut text = Vec::new();
    for part in parts {
        text.extend(storage.get_bytes(&part.key).await?);
    }
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}
