//! LiveKit Egress requests to fleet job requests, and fleet job records to `EgressInfo`. Every field we
//! cannot honour is refused by name rather than ignored.

use super::twirp::TwirpError;
use fleet_protocol::job::{CustomPreset, Layout, Origin, VideoPreset};
use fleet_protocol::{JobRecord, JobRequest, JobState};
use livekit_protocol as lk;

/// Room composite: the fleet's native recording. LiveKit's layout names map onto ours.
#[allow(deprecated)] // `output` (one file) predates `file_outputs`; older clients still send it.
pub fn room_composite(request: &lk::RoomCompositeEgressRequest) -> Result<JobRequest, TwirpError> {
    if !request.custom_base_url.is_empty() {
        return Err(TwirpError::unimplemented("custom_base_url: the fleet composites tracks itself and renders no web page"));
    }
    if request.video_only {
        return Err(TwirpError::unimplemented("video_only: recordings always carry the room's audio"));
    }
    let layout = match request.layout.as_str() {
        "" | "grid" | "grid-light" | "grid-dark" => Layout::Grid,
        "speaker" | "speaker-light" | "speaker-dark" | "single-speaker" | "single-speaker-light" | "single-speaker-dark" => Layout::Speaker,
        other => return Err(TwirpError::invalid_argument(format!("layout {other:?}: use grid, speaker or single-speaker"))),
    };
    let (legacy_file, legacy_stream, legacy_segments) = match &request.output {
        Some(lk::room_composite_egress_request::Output::File(file)) => (Some(file), None, None),
        Some(lk::room_composite_egress_request::Output::Stream(stream)) => (None, Some(stream), None),
        Some(lk::room_composite_egress_request::Output::Segments(segments)) => (None, None, Some(segments)),
        None => (None, None, None),
    };
    let streams: Vec<&lk::StreamOutput> = legacy_stream.into_iter().chain(&request.stream_outputs).collect();
    let segments: Vec<&lk::SegmentedFileOutput> = legacy_segments.into_iter().chain(&request.segment_outputs).collect();
    let asked = Asked { legacy_file, files: &request.file_outputs, streams: &streams, segments: &segments, images: &request.image_outputs };
    let outputs = check_outputs(asked, request.audio_only)?;
    check_webhooks(&request.webhooks)?;
    let preset = match &request.options {
        Some(lk::room_composite_egress_request::Options::Preset(preset)) => preset_of(*preset)?,
        Some(lk::room_composite_egress_request::Options::Advanced(advanced)) => advanced_preset(advanced)?,
        None => VideoPreset::Hd720p30,
    };
    job_request(&request.room_name, layout, None, preset, request.audio_only, outputs)
}

/// Participant egress: one participant full frame (layout `single`).
pub fn participant(request: &lk::ParticipantEgressRequest) -> Result<JobRequest, TwirpError> {
    if request.screen_share {
        return Err(TwirpError::unimplemented("screen_share: participant recordings show the participant's camera"));
    }
    if request.identity.is_empty() {
        return Err(TwirpError::invalid_argument("identity is required"));
    }
    let streams: Vec<&lk::StreamOutput> = request.stream_outputs.iter().collect();
    let segments: Vec<&lk::SegmentedFileOutput> = request.segment_outputs.iter().collect();
    let asked = Asked { legacy_file: None, files: &request.file_outputs, streams: &streams, segments: &segments, images: &request.image_outputs };
    let outputs = check_outputs(asked, false)?;
    check_webhooks(&request.webhooks)?;
    let preset = match &request.options {
        Some(lk::participant_egress_request::Options::Preset(preset)) => preset_of(*preset)?,
        Some(lk::participant_egress_request::Options::Advanced(advanced)) => advanced_preset(advanced)?,
        None => VideoPreset::Hd720p30,
    };
    job_request(&request.room_name, Layout::Single, Some(request.identity.clone()), preset, false, outputs)
}

fn job_request(
    room: &str,
    layout: Layout,
    participant: Option<String>,
    video_preset: VideoPreset,
    audio_only: bool,
    outputs: Outputs,
) -> Result<JobRequest, TwirpError> {
    if room.is_empty() {
        return Err(TwirpError::invalid_argument("room_name is required"));
    }
    let request: JobRequest = serde_json::from_value(serde_json::json!({
        "room": room,
        "layout": layout,
        "participant": participant,
        "video_preset": video_preset,
        "audio_only": audio_only,
        // Filled in and checked when the job is created, as Egress does when it starts.
        "filepath": outputs.filepath,
        "outputs": { "file": outputs.filepath.is_some(), "rtmp": outputs.stream_urls, "hls": outputs.hls, "images": outputs.images },
    }))
    .map_err(|e| TwirpError::invalid_argument(e.to_string()))?;
    request.validate().map_err(|e| TwirpError::invalid_argument(e.to_string()))?;
    Ok(request)
}

/// Every output an Egress request names.
struct Asked<'a> {
    legacy_file: Option<&'a lk::EncodedFileOutput>,
    files: &'a [lk::EncodedFileOutput],
    streams: &'a [&'a lk::StreamOutput],
    segments: &'a [&'a lk::SegmentedFileOutput],
    images: &'a [lk::ImageOutput],
}

/// What an Egress request asks for, in the fleet's terms.
struct Outputs {
    /// The file's `filepath` template (empty: `{room_name}-{time}`), when there is a file.
    filepath: Option<String>,
    stream_urls: Vec<String>,
    hls: Option<fleet_protocol::live_files::HlsRequest>,
    images: Option<fleet_protocol::live_files::ImagesRequest>,
}

/// One HLS output, stored under `<egress_id>/hls/` (`playlist.m3u8`, `live.m3u8`, `NNNNN.ts`): the names
/// are the fleet's, so a client's own names and per-request uploads are refused by name.
fn check_segments(segments: &[&lk::SegmentedFileOutput]) -> Result<Option<fleet_protocol::live_files::HlsRequest>, TwirpError> {
    let segments = match segments {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(TwirpError::invalid_argument("at most one segment output")),
    };
    match lk::SegmentedFileProtocol::try_from(segments.protocol) {
        Ok(lk::SegmentedFileProtocol::DefaultSegmentedFileProtocol | lk::SegmentedFileProtocol::HlsProtocol) => {}
        _ => return Err(TwirpError::unimplemented("segment outputs: only HLS is supported")),
    }
    if !segments.filename_prefix.is_empty() || !segments.playlist_name.is_empty() || !segments.live_playlist_name.is_empty() {
        return Err(TwirpError::unimplemented(
            "segment outputs: filename_prefix, playlist_name and live_playlist_name are not supported: HLS is stored under <egress_id>/hls/ (playlist.m3u8, live.m3u8), reported in segment_results",
        ));
    }
    if segments.filename_suffix != lk::SegmentedFileSuffix::Index as i32 {
        return Err(TwirpError::unimplemented("segment outputs: only the INDEX filename suffix is supported"));
    }
    if segments.output.is_some() {
        return Err(TwirpError::unimplemented(
            "segment outputs: per-request upload targets are not supported: files go to the fleet's configured storage",
        ));
    }
    let mut hls = fleet_protocol::live_files::HlsRequest::default();
    if segments.segment_duration > 0 {
        hls.segment_s = segments.segment_duration;
    }
    Ok(Some(hls))
}

/// One image output: JPEG every `capture_interval` seconds under `<egress_id>/images/`.
fn check_images(images: &[lk::ImageOutput]) -> Result<Option<fleet_protocol::live_files::ImagesRequest>, TwirpError> {
    let image = match images {
        [] => return Ok(None),
        [one] => one,
        _ => return Err(TwirpError::invalid_argument("at most one image output")),
    };
    if image.capture_interval == 0 {
        return Err(TwirpError::invalid_argument("image outputs: capture_interval is required"));
    }
    match lk::ImageCodec::try_from(image.image_codec) {
        Ok(lk::ImageCodec::IcDefault | lk::ImageCodec::IcJpeg) => {}
        _ => return Err(TwirpError::unimplemented("image outputs: only JPEG is supported")),
    }
    if !image.filename_prefix.is_empty() || image.filename_suffix != lk::ImageFileSuffix::ImageSuffixIndex as i32 {
        return Err(TwirpError::unimplemented(
            "image outputs: filename_prefix and filename_suffix are not supported: images are stored as <egress_id>/images/NNNNN.jpg, reported in image_results",
        ));
    }
    if image.output.is_some() {
        return Err(TwirpError::unimplemented(
            "image outputs: per-request upload targets are not supported: files go to the fleet's configured storage",
        ));
    }
    let side = |value: i32| (value > 0).then_some(value as u32);
    Ok(Some(fleet_protocol::live_files::ImagesRequest { interval_s: image.capture_interval, width: side(image.width), height: side(image.height) }))
}

/// At most one file, MP4 (an `.m4a` for audio-only), stored in the fleet's storage under its `filepath`
/// (a template, as Egress takes it; empty: `{room_name}-{time}`); RTMP stream outputs; one HLS output;
/// one image output; at least one of them.
fn check_outputs(asked: Asked<'_>, audio_only: bool) -> Result<Outputs, TwirpError> {
    let Asked { legacy_file: legacy, files, streams, segments, images } = asked;
    let hls = check_segments(segments)?;
    let images = check_images(images)?;
    let mut stream_urls = Vec::new();
    for stream in streams {
        match lk::StreamProtocol::try_from(stream.protocol) {
            Ok(lk::StreamProtocol::DefaultProtocol | lk::StreamProtocol::Rtmp) => {}
            _ => return Err(TwirpError::unimplemented("only RTMP stream outputs are supported (rtmp:// and rtmps:// URLs)")),
        }
        stream_urls.extend(stream.urls.iter().cloned());
    }
    let all: Vec<&lk::EncodedFileOutput> = legacy.into_iter().chain(files).collect();
    let file = match all[..] {
        [] if !stream_urls.is_empty() || hls.is_some() || images.is_some() => None,
        [file] => Some(file),
        _ => {
            return Err(TwirpError::invalid_argument(format!(
                "one file output and/or stream, segment or image outputs are needed (got {} files)",
                all.len()
            )));
        }
    };
    let Some(file) = file else { return Ok(Outputs { filepath: None, stream_urls, hls, images }) };
    match lk::EncodedFileType::try_from(file.file_type) {
        Ok(lk::EncodedFileType::DefaultFiletype | lk::EncodedFileType::Mp4) => {}
        Ok(lk::EncodedFileType::Ogg | lk::EncodedFileType::Mp3) if audio_only => {
            return Err(TwirpError::unimplemented("audio-only recordings are AAC in MP4 (.m4a): use file_type MP4"));
        }
        _ => return Err(TwirpError::unimplemented("only MP4 file outputs are supported")),
    }
    if file.output.is_some() {
        return Err(TwirpError::unimplemented(
            "per-request upload targets (s3, gcp, azure, aliOSS) are not supported: files go to the fleet's configured storage",
        ));
    }
    Ok(Outputs { filepath: Some(file.filepath.clone()), stream_urls, hls, images })
}

fn check_webhooks(webhooks: &[lk::WebhookConfig]) -> Result<(), TwirpError> {
    if webhooks.is_empty() {
        Ok(())
    } else {
        Err(TwirpError::unimplemented("per-request webhooks are not supported: configure controller.egress.webhook_urls"))
    }
}

fn preset_of(preset: i32) -> Result<VideoPreset, TwirpError> {
    use lk::EncodingOptionsPreset as P;
    let custom = |width, height, fps, video_kbps| VideoPreset::Custom(CustomPreset { width, height, fps, video_kbps });
    Ok(match P::try_from(preset) {
        Ok(P::H264720p30) => VideoPreset::Hd720p30,
        Ok(P::H264720p60) => custom(1280, 720, 60, 4500),
        Ok(P::H2641080p30) => VideoPreset::Hd1080p30,
        Ok(P::H2641080p60) => custom(1920, 1080, 60, 6000),
        Ok(P::PortraitH264720p30) => custom(720, 1280, 30, 3000),
        Ok(P::PortraitH264720p60) => custom(720, 1280, 60, 4500),
        Ok(P::PortraitH2641080p30) => custom(1080, 1920, 30, 4500),
        Ok(P::PortraitH2641080p60) => custom(1080, 1920, 60, 6000),
        Ok(P::Passthrough) => return Err(TwirpError::unimplemented("PASSTHROUGH: recordings are always composited and encoded")),
        Err(_) => return Err(TwirpError::invalid_argument(format!("unknown encoding preset {preset}"))),
    })
}

/// Advanced options: size, frame rate and video bitrate are honoured (0 = the 720p30 default); the codec
/// is always H.264 High + AAC.
fn advanced_preset(options: &lk::EncodingOptions) -> Result<VideoPreset, TwirpError> {
    let pick = |value: i32, default: u32| if value > 0 { value as u32 } else { default };
    let custom = CustomPreset {
        width: pick(options.width, 1280),
        height: pick(options.height, 720),
        fps: pick(options.framerate, 30),
        video_kbps: pick(options.video_bitrate, 3000),
    };
    serde_json::from_value(serde_json::to_value(custom).expect("presets serialize"))
        .map_err(|e: serde_json::Error| TwirpError::invalid_argument(e.to_string()))
}

pub fn status(state: JobState) -> lk::EgressStatus {
    match state {
        JobState::Queued | JobState::Starting => lk::EgressStatus::EgressStarting,
        JobState::Recording => lk::EgressStatus::EgressActive,
        JobState::Finalizing | JobState::Transcoding => lk::EgressStatus::EgressEnding,
        JobState::Complete => lk::EgressStatus::EgressComplete,
        JobState::Failed => lk::EgressStatus::EgressFailed,
        JobState::Aborted => lk::EgressStatus::EgressAborted,
    }
}

/// A capturing job asked to stop is ending, as LiveKit reports a stopped egress.
fn status_of(record: &JobRecord) -> lk::EgressStatus {
    if record.desired == fleet_protocol::job::Desired::Stop && matches!(record.state, JobState::Starting | JobState::Recording) {
        lk::EgressStatus::EgressEnding
    } else {
        status(record.state)
    }
}

/// How an egress job keeps its start request in the job record (`Origin::Egress`).
pub fn origin_of(request: lk::egress_info::Request) -> Origin {
    let value = match request {
        lk::egress_info::Request::RoomComposite(r) => serde_json::json!({ "room_composite": r }),
        lk::egress_info::Request::Participant(r) => serde_json::json!({ "participant": r }),
        _ => serde_json::Value::Null,
    };
    Origin::Egress { request: value }
}

fn request_of(record: &JobRecord) -> Option<lk::egress_info::Request> {
    let Some(Origin::Egress { request }) = &record.origin else { return None };
    if let Some(r) = request.get("room_composite") {
        return serde_json::from_value(r.clone()).ok().map(lk::egress_info::Request::RoomComposite);
    }
    if let Some(r) = request.get("participant") {
        return serde_json::from_value(r.clone()).ok().map(lk::egress_info::Request::Participant);
    }
    None
}

const NS_PER_MS: i64 = 1_000_000;

#[allow(deprecated)] // `result` is deprecated in favour of `file_results`; older clients still read it.
pub fn egress_info(record: &JobRecord) -> lk::EgressInfo {
    let started_at = record.sessions.first().map(|s| s.started_at_ms as i64 * NS_PER_MS).unwrap_or(0);
    let ended_at = if record.state.is_terminal() || !record.state.is_capturing() {
        record.sessions.iter().filter_map(|s| s.ended_at_ms).max().map(|ms| ms as i64 * NS_PER_MS).unwrap_or(0)
    } else {
        0
    };
    let file = record.output.as_ref().map(|output| lk::FileInfo {
        filename: output.key.clone(),
        started_at,
        ended_at,
        duration: (output.duration_s * 1e9) as i64,
        size: output.size_bytes as i64,
        location: output.location.clone(),
    });
    let streams = stream_results(record);
    let segments = record.hls.as_ref().map(|hls| lk::SegmentsInfo {
        playlist_name: hls.playlist.clone(),
        live_playlist_name: hls.live_playlist.clone(),
        duration: hls.duration_ms as i64 * NS_PER_MS,
        size: hls.bytes as i64,
        playlist_location: hls.playlist_location.clone(),
        live_playlist_location: hls.live_playlist_location.clone(),
        segment_count: hls.segments as i64,
        started_at: hls.started_at_ms.map_or(0, |ms| ms as i64 * NS_PER_MS),
        ended_at: hls.ended_at_ms.map_or(0, |ms| ms as i64 * NS_PER_MS),
    });
    let images = record.images.as_ref().map(|images| lk::ImagesInfo {
        filename_prefix: images.prefix.clone(),
        image_count: images.count as i64,
        started_at: images.first_at_ms.map_or(0, |ms| ms as i64 * NS_PER_MS),
        ended_at: images.last_at_ms.filter(|_| ended_at > 0).map_or(0, |ms| ms as i64 * NS_PER_MS),
    });
    let legacy_result = match (&file, &segments) {
        (Some(file), _) => Some(lk::egress_info::Result::File(file.clone())),
        (None, _) if !streams.is_empty() => Some(lk::egress_info::Result::Stream(lk::StreamInfoList { info: streams.clone() })),
        (None, Some(segments)) => Some(lk::egress_info::Result::Segments(segments.clone())),
        (None, None) => None,
    };
    lk::EgressInfo {
        egress_id: record.id.to_string(),
        room_name: record.request.room.clone(),
        status: status_of(record) as i32,
        started_at,
        ended_at,
        updated_at: record.updated_at_ms as i64 * NS_PER_MS,
        error: record.error.clone().unwrap_or_default(),
        details: record.warnings.join("; "),
        request: request_of(record),
        file_results: file.into_iter().collect(),
        stream_results: streams,
        segment_results: segments.into_iter().collect(),
        image_results: images.into_iter().collect(),
        result: legacy_result,
        ..Default::default()
    }
}

/// The record's streams as Egress reports them: keys hidden, as in every answer to a client.
fn stream_results(record: &JobRecord) -> Vec<lk::StreamInfo> {
    use fleet_protocol::streams::StreamState;
    let ended_at = record.sessions.iter().filter_map(|s| s.ended_at_ms).max();
    record
        .streams
        .iter()
        .map(|stream| {
            let status = match stream.state {
                StreamState::Starting | StreamState::Live | StreamState::Retrying => lk::stream_info::Status::Active,
                StreamState::Removed | StreamState::Ended => lk::stream_info::Status::Finished,
                StreamState::Failed => lk::stream_info::Status::Failed,
            };
            let started = stream.live_at_ms.map(|ms| ms as i64 * NS_PER_MS).unwrap_or(0);
            let ended = match (status, ended_at) {
                (lk::stream_info::Status::Active, _) | (_, None) => 0,
                (_, Some(ms)) => ms as i64 * NS_PER_MS,
            };
            lk::StreamInfo {
                url: stream.stream_url().map(|u| u.redacted()).unwrap_or_default(),
                started_at: started,
                ended_at: ended,
                duration: if started > 0 && ended > started { ended - started } else { 0 },
                status: status as i32,
                error: stream.last_error.clone().filter(|_| status == lk::stream_info::Status::Failed).unwrap_or_default(),
                retries: stream.retries,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(file_type: lk::EncodedFileType) -> lk::EncodedFileOutput {
        lk::EncodedFileOutput { file_type: file_type as i32, filepath: "out.mp4".into(), ..Default::default() }
    }

    #[test]
    fn room_composite_maps_layout_preset_and_audio_only() {
        let request = lk::RoomCompositeEgressRequest {
            room_name: "standup".into(),
            layout: "speaker-dark".into(),
            file_outputs: vec![file(lk::EncodedFileType::Mp4)],
            options: Some(lk::room_composite_egress_request::Options::Preset(lk::EncodingOptionsPreset::H2641080p30 as i32)),
            ..Default::default()
        };
        let job = room_composite(&request).unwrap();
        assert_eq!((job.room.as_str(), job.layout, job.video_preset), ("standup", Layout::Speaker, VideoPreset::Hd1080p30));
        let advanced = lk::RoomCompositeEgressRequest {
            room_name: "r".into(),
            file_outputs: vec![file(lk::EncodedFileType::DefaultFiletype)],
            options: Some(lk::room_composite_egress_request::Options::Advanced(lk::EncodingOptions {
                width: 640,
                height: 360,
                framerate: 25,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(room_composite(&advanced).unwrap().video_preset.params(), (640, 360, 25, 3000));
    }

    #[test]
    #[allow(deprecated)] // the one-of `output` older clients send
    fn segment_and_image_outputs_become_live_files() {
        let hls = lk::SegmentedFileOutput { segment_duration: 4, ..Default::default() };
        let image = lk::ImageOutput { capture_interval: 5, width: 320, ..Default::default() };
        let request = lk::RoomCompositeEgressRequest {
            room_name: "r".into(),
            segment_outputs: vec![hls.clone()],
            image_outputs: vec![image.clone()],
            ..Default::default()
        };
        let job = room_composite(&request).unwrap();
        assert!(!job.outputs.file, "no file asked for");
        assert_eq!(job.outputs.hls.unwrap().segment_s, 4);
        assert_eq!(job.outputs.images.unwrap(), fleet_protocol::live_files::ImagesRequest { interval_s: 5, width: Some(320), height: None });
        let legacy = lk::RoomCompositeEgressRequest {
            room_name: "r".into(),
            output: Some(lk::room_composite_egress_request::Output::Segments(hls.clone())),
            ..Default::default()
        };
        assert!(room_composite(&legacy).unwrap().outputs.hls.is_some());
        let refused = |segments: Vec<lk::SegmentedFileOutput>, images: Vec<lk::ImageOutput>| {
            room_composite(&lk::RoomCompositeEgressRequest {
                room_name: "r".into(),
                segment_outputs: segments,
                image_outputs: images,
                ..Default::default()
            })
            .unwrap_err()
            .msg
        };
        assert!(refused(vec![lk::SegmentedFileOutput { playlist_name: "my.m3u8".into(), ..hls.clone() }], vec![]).contains("playlist_name"));
        assert!(refused(vec![hls.clone(), hls], vec![]).contains("at most one"));
        assert!(refused(vec![], vec![lk::ImageOutput { capture_interval: 0, ..image.clone() }]).contains("capture_interval"));
        assert!(refused(vec![], vec![lk::ImageOutput { image_codec: 2, ..image }]).contains("JPEG"));
    }

    #[test]
    fn what_we_cannot_honour_is_refused_by_name() {
        let base = lk::RoomCompositeEgressRequest { room_name: "r".into(), file_outputs: vec![file(lk::EncodedFileType::Mp4)], ..Default::default() };
        let refused = |r: lk::RoomCompositeEgressRequest| room_composite(&r).unwrap_err();
        assert_eq!(refused(lk::RoomCompositeEgressRequest { custom_base_url: "https://x".into(), ..base.clone() }).code, "unimplemented");
        assert_eq!(refused(lk::RoomCompositeEgressRequest { file_outputs: vec![], ..base.clone() }).code, "invalid_argument");
        assert_eq!(refused(lk::RoomCompositeEgressRequest { layout: "mosaic".into(), ..base.clone() }).code, "invalid_argument");
        assert_eq!(refused(lk::RoomCompositeEgressRequest { room_name: String::new(), ..base.clone() }).code, "invalid_argument");
        let ogg = lk::RoomCompositeEgressRequest { file_outputs: vec![file(lk::EncodedFileType::Ogg)], ..base.clone() };
        assert!(refused(ogg).msg.contains("MP4"));
        let odd = lk::RoomCompositeEgressRequest {
            options: Some(lk::room_composite_egress_request::Options::Advanced(lk::EncodingOptions { width: 641, ..Default::default() })),
            ..base
        };
        assert_eq!(refused(odd).code, "invalid_argument");
    }

    #[test]
    fn the_start_request_survives_the_job_record() {
        let request = lk::ParticipantEgressRequest {
            room_name: "r".into(),
            identity: "alice".into(),
            file_outputs: vec![file(lk::EncodedFileType::Mp4)],
            ..Default::default()
        };
        let job = participant(&request).unwrap();
        assert_eq!((job.layout, job.participant.as_deref()), (Layout::Single, Some("alice")));
        let mut record = JobRecord::new(fleet_protocol::SafeId::parse("EG_x").unwrap(), job, 5);
        record.origin = Some(origin_of(lk::egress_info::Request::Participant(request.clone())));
        let info = egress_info(&record);
        assert_eq!(info.request, Some(lk::egress_info::Request::Participant(request)));
        assert_eq!((info.egress_id.as_str(), info.status), ("EG_x", lk::EgressStatus::EgressStarting as i32));
    }
}
