//! Checks on a chunked transcode's record and its transcoder's log.

use serde_json::Value;

/// The chunk indices a record lists as done.
pub fn done(record: &Value) -> Vec<u64> {
    record["chunks"]["done"].as_array().map(|done| done.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

/// A progressive transcode wasted nothing: the chunks done while recording are still done in the
/// finished `record`, and the transcoder's log shows each chunk transcoded once. Returns the count.
pub fn assert_each_transcoded_once(record: &Value, done_while_recording: &[u64], transcoder_log: &str) -> u64 {
    let count = record["chunks"]["count"].as_u64().expect("a chunk plan");
    let done = done(record);
    assert!(done_while_recording.iter().all(|i| done.contains(i)), "chunks done while recording were kept: {done:?}");
    let log = crate::procs::without_colours(transcoder_log);
    for index in 0..count {
        let times = log.lines().filter(|l| l.contains("chunk done") && l.contains(&format!("index={index} "))).count();
        assert_eq!(times, 1, "chunk {index} transcoded {times} times");
    }
    count
}
