//! Where a finished recording goes for plugNmeet: copied under its recordings root as
//! `<main_path>/<sub_path>/<room_id>/<recording_id>.mp4` (reported relative to the root), or, without a
//! shared root, left in object storage and reported by key.

use fleet_runtime::storage::{Storage, StorageError};
use std::path::{Component, Path, PathBuf};

/// Why a finished recording could not be put where plugNmeet serves it.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the job has no output")]
    NoOutput,
    #[error("not a plugNmeet job")]
    NotPlugnmeet,
    #[error("{0:?} would leave the recordings root")]
    LeavesRoot(String),
    #[error("recording path has no folder")]
    NoFolder,
    #[error("creating {0}: {1}")]
    CreateFolder(PathBuf, #[source] std::io::Error),
    #[error("copying {key} to {}: {source}", partial.display())]
    Copy { key: String, partial: PathBuf, source: StorageError },
    #[error("renaming to {0}: {1}")]
    Rename(PathBuf, #[source] std::io::Error),
}

/// A relative path that stays below its root: no `..`, no root, no prefix.
pub fn is_safe_relative(path: &str) -> bool {
    Path::new(path).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `<sub_path>/<room_id>/<recording_id>.mp4`; the ids were checked to be plain names when the job started.
pub fn relative_path(sub_path: &str, room_id: &str, recording_id: &str) -> String {
    let sub = sub_path.trim_matches('/');
    if sub.is_empty() { format!("{room_id}/{recording_id}.mp4") } else { format!("{sub}/{room_id}/{recording_id}.mp4") }
}

/// Copies the recording at `key` to `main_path/relative` (through a temporary file, renamed when whole)
/// and returns its size. An existing file of the same name is replaced: a redelivered event repeats the copy.
pub async fn place(storage: &Storage, key: &str, main_path: &Path, relative: &str) -> Result<u64, PlaceError> {
    let target = main_path.join(relative);
    let folder = target.parent().ok_or(PlaceError::NoFolder)?;
    tokio::fs::create_dir_all(folder).await.map_err(|e| PlaceError::CreateFolder(folder.to_path_buf(), e))?;
    let partial = target.with_extension("mp4.part");
    let size = storage.get_to_file(key, &partial).await.map_err(|source| PlaceError::Copy { key: key.into(), partial: partial.clone(), source })?;
    tokio::fs::rename(&partial, &target).await.map_err(|e| PlaceError::Rename(target.clone(), e))?;
    Ok(size)
}

/// plugNmeet's `file_size`: megabytes (10^6 bytes) rounded to two decimals.
pub fn size_mb(bytes: u64) -> f32 {
    ((bytes as f64 / 1_000_000.0 * 100.0).round() / 100.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        assert!(is_safe_relative("recording_files/node_01"));
        assert!(!is_safe_relative("../x"));
        assert!(!is_safe_relative("/abs"));
        assert_eq!(relative_path("node_01/", "room1", "RM_a-1"), "node_01/room1/RM_a-1.mp4");
        assert_eq!(relative_path("", "room1", "RM_a-1"), "room1/RM_a-1.mp4");
        assert_eq!(size_mb(1_234_567), 1.23);
    }
}
