//! Inputs on local disk: a scratch directory, the raw segments and timelines downloaded, the layout
//! planned, and the transcode they call for.

use crate::context::JobContext;
use crate::decryption::Decryption;
use crate::error::{Context, TranscodeError};
use crate::{inputs, layout_plan};
use fleet_e2ee::{E2eeKeys, OpenError};
use fleet_pipelines::cuts::Cuts;
use fleet_pipelines::{segment_reader, transcode};
use fleet_protocol::{JobRecord, SafeId};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) async fn scratch_dir(ctx: &JobContext, job_id: &SafeId) -> Result<tempfile::TempDir, TranscodeError> {
    tokio::fs::create_dir_all(&ctx.config.scratch_dir).await.context("scratch dir")?;
    tempfile::Builder::new().prefix(&format!("{job_id}-")).tempdir_in(&ctx.config.scratch_dir).context("scratch dir")
}

/// A job's inputs on local disk and the transcode they call for (the whole recording).
pub(crate) struct Prepared {
    pub spec: transcode::TranscodeSpec,
    pub missing: Vec<String>,
    pub segment_count: usize,
    /// participant → their audio tracks, for `audio_per_participant`.
    pub own_audio: BTreeMap<String, Vec<segment_reader::TrackInput>>,
    /// The encrypted tracks' decryptors (their counts become warnings).
    pub decryption: Decryption,
    /// What of the job's branding this node could not draw.
    pub look_warnings: Vec<String>,
}

/// Downloads the raw segments and timelines and plans the composite.
pub(crate) async fn prepare(ctx: &JobContext, record: &JobRecord, scratch: &std::path::Path) -> Result<Prepared, TranscodeError> {
    prepare_chunk(ctx, record, scratch, None, None).await
}

/// [`prepare`] for the first `upto_ms` of a recording (one still running has no length yet), with
/// only the segments a chunk's `window` of it needs downloaded.
pub(crate) async fn prepare_chunk(
    ctx: &JobContext,
    record: &JobRecord,
    scratch: &std::path::Path,
    upto_ms: Option<u64>,
    window: Option<std::ops::Range<u64>>,
) -> Result<Prepared, TranscodeError> {
    // Keys first: keys that cannot open fail the job before any segment is downloaded.
    let keys = open_keys(ctx, record)?;
    let mut inputs = inputs::download(&ctx.storage, record, scratch, upto_ms, window).await?;
    let require_keys = record.request.e2ee.as_ref().is_some_and(|e| e.require_keys);
    let decryption = Decryption::attach(&mut inputs.tracks, &inputs.e2ee, keys.as_ref(), require_keys)?;
    if !inputs.e2ee.tracks.is_empty() {
        tracing::info!(
            encrypted = inputs.e2ee.tracks.len(),
            keys = keys.is_some(),
            left_out = decryption.left_out.len(),
            "end-to-end encrypted tracks"
        );
    }
    tracing::info!(segments = inputs.segment_count, tracks = inputs.tracks.len(), duration_ms = inputs.duration_ns / 1_000_000, "inputs ready");
    let audio_only = record.request.audio_only;
    let (width, height, fps, video_kbps) = record.request.video_preset.params();
    let is_kind = |t: &segment_reader::TrackInput, kind: &str| {
        segment_reader::probe_caps(t).is_some_and(|c| c.structure(0).is_some_and(|s| s.name().starts_with(kind)))
    };
    let mut own_audio: BTreeMap<String, Vec<segment_reader::TrackInput>> = BTreeMap::new();
    if record.request.audio_per_participant {
        for track in inputs.tracks.iter().filter(|t| is_kind(t, "audio/")) {
            let participant = track.name.split('/').next().unwrap_or_default().to_string();
            own_audio.entry(participant).or_default().push(track.clone());
        }
    }
    let (look, look_warnings) = crate::look::look_for(record.request.branding.as_ref(), &ctx.config.branding, &ctx.config.logos, height);
    let schedule = (!audio_only).then(|| {
        let video_tracks: Vec<String> = inputs.tracks.iter().filter(|t| is_kind(t, "video/")).map(|t| t.name.clone()).collect();
        let request = layout_plan::PlanRequest {
            layout: record.request.layout,
            participant: record.request.participant.as_deref(),
            video_tracks: &video_tracks,
            width,
            height,
            gap: look.gap_px(height),
        };
        let schedule = layout_plan::plan(&inputs.room_events, &request);
        tracing::info!(layout = ?record.request.layout, scenes = schedule.scenes().len(), video_tracks = video_tracks.len(), "layout planned");
        schedule
    });
    for warning in &look_warnings {
        tracing::warn!(%warning, "branding");
    }
    let spec = transcode::TranscodeSpec {
        tracks: inputs.tracks,
        duration_ns: inputs.duration_ns,
        width,
        height,
        fps,
        video_kbps,
        audio_bps: ctx.config.audio_bitrate_bps,
        audio_only,
        schedule,
        look,
        cuts: Cuts::new(record.paused_spans_ns()).in_whole_frames(if audio_only { 0 } else { 1_000_000_000 / fps as u64 }),
        video_window: None,
        encoder: ctx.encoder_for(record.request.gpu)?,
        speed_preset: ctx.config.x264_speed_preset,
        output: scratch.join("output"),
        stall_timeout: Duration::from_secs(ctx.config.stall_timeout_s),
    };
    Ok(Prepared { spec, missing: inputs.missing, segment_count: inputs.segment_count, own_audio, decryption, look_warnings })
}

/// The job's end-to-end encryption keys, opened with this node's key pair; none when the job has none.
/// Keys this node cannot open may open on another (retried); keys that are not a valid set never will.
fn open_keys(ctx: &JobContext, record: &JobRecord) -> Result<Option<E2eeKeys>, TranscodeError> {
    let Some(sealed) = record.request.e2ee.as_ref().and_then(|e| e.sealed_keys.as_deref()) else { return Ok(None) };
    let pair = ctx
        .e2ee
        .as_ref()
        .ok_or_else(|| TranscodeError::E2eeNode("the job carries sealed keys and this transcoder has no key pair (e2ee_private_key_file)".into()))?;
    let keys = pair.open(sealed).map_err(|e| match e {
        OpenError::Open | OpenError::PrivateKey => TranscodeError::E2eeNode(e.to_string()),
        OpenError::Encoding | OpenError::Contents => TranscodeError::E2eeKeys(e.to_string()),
    })?;
    // Sealed keys bypass the controller's checks (a client may seal them itself).
    keys.validate().map_err(|e| TranscodeError::E2eeKeys(e.to_string()))?;
    Ok(Some(keys))
}
