//! plugNmeet's transcoder queue (`pnm-RecorderTranscoderJobs`): each `TranscodingTask` becomes a fleet
//! file job that any fleet transcoder with the recordings root mounted runs; its end is reported back to
//! plugNmeet like a recording's (RECORDING_PROCEEDED, RECORDING_TRANSCODING_FINISHED).
//!
//! Paths: a post-recording task names the raw file's folder (absolute under `main_path`, or relative to
//! it) and file name; a merge names recordings as plugNmeet stores them (relative to `main_path`). The
//! output goes next to the (first) input as `<recording_id>.mp4`, where plugNmeet looks for it.

use super::files::is_safe_relative;
use super::proto::{TranscodingTask, transcoding_task::TaskDetails};
use fleet_protocol::SafeId;
use fleet_protocol::job::FileJob;
use std::path::Path;

/// Why a task cannot become a file job (it is refused, and plugNmeet told why).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error("recording_id {0:?}: {1}")]
    RecordingId(String, String),
    #[error("merge task without files")]
    NoFiles,
    #[error("task without details")]
    NoDetails,
    #[error("{0:?} is outside the recordings root {1}")]
    OutsideRoot(String, String),
    #[error("{0:?} is not a plain path below the recordings root")]
    NotPlain(String),
    #[error("file name {0:?}")]
    FileName(String),
    #[error("output {0} would overwrite an input")]
    Overwrite(String),
}

/// The fleet file job for a task: inputs and output relative to `main_path`.
pub fn file_job(task: &TranscodingTask, main_path: &Path) -> Result<FileJob, TaskError> {
    SafeId::parse(task.recording_id.as_str()).map_err(|e| TaskError::RecordingId(task.recording_id.clone(), e.to_string()))?;
    let inputs = match &task.task_details {
        Some(TaskDetails::PostRecording(post)) => {
            let folder = relative_to(&post.file_path, main_path)?;
            vec![join(&folder, &post.file_name)?]
        }
        Some(TaskDetails::MergeRecordings(merge)) if !merge.file_paths.is_empty() => {
            merge.file_paths.iter().map(|p| relative_to(p, main_path)).collect::<Result<Vec<_>, _>>()?
        }
        Some(TaskDetails::MergeRecordings(_)) => return Err(TaskError::NoFiles),
        None => return Err(TaskError::NoDetails),
    };
    let folder = Path::new(&inputs[0]).parent().map(|p| p.to_string_lossy().to_string()).unwrap_or_default();
    let output = join(&folder, &format!("{}.mp4", task.recording_id))?;
    if inputs.contains(&output) {
        return Err(TaskError::Overwrite(output));
    }
    Ok(FileJob { inputs, output })
}

/// `path` as a plain path relative to `main_path` (absolute paths must lie under it).
fn relative_to(path: &str, main_path: &Path) -> Result<String, TaskError> {
    let relative = match Path::new(path).strip_prefix(main_path) {
        Ok(rest) => rest.to_string_lossy().to_string(),
        Err(_) if Path::new(path).is_absolute() => return Err(TaskError::OutsideRoot(path.into(), main_path.display().to_string())),
        Err(_) => path.trim_start_matches("./").to_string(),
    };
    if relative.is_empty() || !is_safe_relative(&relative) {
        return Err(TaskError::NotPlain(path.into()));
    }
    Ok(relative)
}

fn join(folder: &str, name: &str) -> Result<String, TaskError> {
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(TaskError::FileName(name.into()));
    }
    Ok(if folder.is_empty() { name.to_string() } else { format!("{folder}/{name}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugnmeet::proto::{TranscodingTaskMergeRecordings, TranscodingTaskPostRecording};

    fn task(details: TaskDetails) -> TranscodingTask {
        TranscodingTask { recording_id: "RM_a-1700000000000".into(), room_id: "room1".into(), task_details: Some(details), ..Default::default() }
    }

    #[test]
    fn post_recording_and_merge_paths() {
        let root = Path::new("/srv/rec");
        let post = task(TaskDetails::PostRecording(TranscodingTaskPostRecording {
            file_path: "/srv/rec/node_01/room1".into(),
            file_name: "RM_a-1700000000000_raw.mp4".into(),
            recording_variant: 0,
        }));
        let job = file_job(&post, root).unwrap();
        assert_eq!(job.inputs, ["node_01/room1/RM_a-1700000000000_raw.mp4"]);
        assert_eq!(job.output, "node_01/room1/RM_a-1700000000000.mp4");
        let merge = task(TaskDetails::MergeRecordings(TranscodingTaskMergeRecordings {
            file_paths: vec!["node_01/room1/a.mp4".into(), "node_02/room1/b.mp4".into()],
        }));
        assert_eq!(file_job(&merge, root).unwrap().output, "node_01/room1/RM_a-1700000000000.mp4");
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let root = Path::new("/srv/rec");
        for paths in [vec!["../etc/passwd".to_string()], vec!["/etc/passwd".into()], vec![]] {
            assert!(
                file_job(&task(TaskDetails::MergeRecordings(TranscodingTaskMergeRecordings { file_paths: paths.clone() })), root).is_err(),
                "{paths:?}"
            );
        }
        let mut bad_id = task(TaskDetails::MergeRecordings(TranscodingTaskMergeRecordings { file_paths: vec!["a/b.mp4".into()] }));
        bad_id.recording_id = "../x".into();
        assert!(file_job(&bad_id, root).is_err());
    }
}
