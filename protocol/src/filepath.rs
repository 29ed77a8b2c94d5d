//! A recording stored where its request asks: LiveKit Egress's `filepath`, a storage key (relative to
//! the fleet's storage prefix) with template fields. Expanded once, when the recording is requested, and
//! checked to stay out of the keys the fleet writes for itself.

use crate::keys;

/// What a template's fields are filled with.
#[derive(Debug, Clone)]
pub struct FilepathContext<'a> {
    pub room_name: &'a str,
    /// Participant recordings: the participant's identity.
    pub publisher_identity: Option<&'a str>,
    /// When the recording was requested (Unix time, ms).
    pub requested_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilepathError {
    #[error("filepath field {field} {why}")]
    UnknownField { field: String, why: &'static str },
    #[error("filepath {0:?} is not a storage key: names of letters, digits, '.', '_' and '-' between single '/', at most 512 characters")]
    NotAKey(String),
    #[error("filepath {0:?} is inside a folder the fleet keeps for a recording's own files (raw/, chunks/, participants/)")]
    Reserved(String),
}

const MAX_LEN: usize = 512;
/// Extensions replaced by the recording's own when a filepath ends with one (`out.ogg` → `out.mp4`).
const MEDIA_EXTENSIONS: [&str; 7] = ["mp4", "m4a", "ogg", "webm", "mkv", "mp3", "ts"];

/// The storage key for `template`: `{room_name}`, `{time}` (`2026-12-05T093000`, UTC), `{utc}`
/// (`20261205093000123`, with milliseconds) and, for participant recordings, `{publisher_identity}` are
/// filled in. Empty, or ending in `/`: `{room_name}-{time}` in that folder. The extension is
/// `extension` (a wrong media extension is replaced, a missing one added), as Egress does.
pub fn expand(template: &str, context: &FilepathContext, extension: &str) -> Result<String, FilepathError> {
    let (time, utc) = timestamps(context.requested_at_ms);
    let mut path = template.trim_start_matches('/').to_string();
    if path.is_empty() || path.ends_with('/') {
        path.push_str("{room_name}-{time}");
    }
    let mut expanded = String::with_capacity(path.len());
    let mut rest = path.as_str();
    while let Some(open) = rest.find('{') {
        expanded.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| FilepathError::NotAKey(template.to_string()))?;
        let field = &rest[open..=close];
        let value = match field {
            "{room_name}" => key_safe(context.room_name),
            "{time}" => time.clone(),
            "{utc}" => utc.clone(),
            "{publisher_identity}" => match context.publisher_identity {
                Some(identity) => key_safe(identity),
                None => return Err(FilepathError::UnknownField { field: field.into(), why: "applies to participant recordings only" }),
            },
            "{room_id}" => {
                return Err(FilepathError::UnknownField {
                    field: field.into(),
                    why: "is not known when the recording is requested: use {room_name}",
                });
            }
            _ => {
                return Err(FilepathError::UnknownField {
                    field: field.into(),
                    why: "is not one of {room_name}, {time}, {utc}, {publisher_identity}",
                });
            }
        };
        expanded.push_str(&value);
        rest = &rest[close + 1..];
    }
    expanded.push_str(rest);
    let key = with_extension(&expanded, extension);
    if key.len() > MAX_LEN || keys::validate_key(&key).is_err() {
        return Err(FilepathError::NotAKey(key));
    }
    // Every name ends in a media extension, so no manifest can be overwritten; raw segments, chunks
    // and participant files sit in these folders of a job's own folder.
    if key.split('/').nth(1).is_some_and(|p| ["raw", "chunks", "participants"].contains(&p)) {
        return Err(FilepathError::Reserved(key));
    }
    Ok(key)
}

fn with_extension(path: &str, extension: &str) -> String {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let stem = match path[name_start..].rsplit_once('.') {
        Some((stem, ext)) if MEDIA_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) => &path[..name_start + stem.len()],
        _ => path,
    };
    format!("{stem}.{extension}")
}

/// Names from the room (spaces, accents, slashes) kept to the key alphabet: anything else becomes `_`.
fn key_safe(name: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') { "_".into() } else { safe }
}

/// `{time}` and `{utc}` for a Unix time in ms.
fn timestamps(unix_ms: u64) -> (String, String) {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d, h, mi, s) = (at.year(), at.month() as u8, at.day(), at.hour(), at.minute(), at.second());
    (format!("{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}{s:02}"), format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}{:03}", unix_ms % 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-05 09:30:00.123 UTC.
    const AT_MS: u64 = 1_796_463_000_123;

    fn context(identity: Option<&str>) -> FilepathContext<'_> {
        FilepathContext { room_name: "stand up/daily", publisher_identity: identity, requested_at_ms: AT_MS }
    }

    #[test]
    fn fields_are_filled_and_the_extension_is_the_recordings() {
        let expand = |t: &str| expand(t, &context(Some("bob")), "mp4");
        assert_eq!(expand("{room_name}-{time}.mp4").unwrap(), "stand_up_daily-2026-12-05T093000.mp4");
        assert_eq!(expand("/rooms/{room_name}/{utc}").unwrap(), "rooms/stand_up_daily/20261205093000123.mp4");
        assert_eq!(expand("calls/{publisher_identity}.ogg").unwrap(), "calls/bob.mp4");
        assert_eq!(expand("archive/").unwrap(), "archive/stand_up_daily-2026-12-05T093000.mp4");
        assert_eq!(expand("").unwrap(), "stand_up_daily-2026-12-05T093000.mp4");
        assert_eq!(expand("v1.2/take.final").unwrap(), "v1.2/take.final.mp4");
        assert_eq!(super::expand("talk", &context(None), "m4a").unwrap(), "talk.m4a");
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_its_reason() {
        let expand = |t: &str| expand(t, &context(None), "mp4");
        assert!(matches!(expand("{room_id}.mp4"), Err(FilepathError::UnknownField { .. })));
        assert!(matches!(expand("{publisher_identity}.mp4"), Err(FilepathError::UnknownField { .. })));
        assert!(expand("{date}.mp4").unwrap_err().to_string().contains("{date}"));
        for bad in ["../up.mp4", "a//b.mp4", "a/./b.mp4", "sp ace.mp4", "open{brace.mp4", "ü.mp4"] {
            assert!(matches!(expand(bad), Err(FilepathError::NotAKey(_))), "{bad}");
        }
        assert!(matches!(expand(&"x".repeat(600)), Err(FilepathError::NotAKey(_))));
        for reserved in ["EG_1/raw/x.mp4", "rec_1/chunks/00001.mp4", "rec_1/participants/a.mp4"] {
            assert!(matches!(expand(reserved), Err(FilepathError::Reserved(_))), "{reserved}");
        }
    }
}
