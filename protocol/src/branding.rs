//! How a composite looks beyond who is where: a title, colours, names on tiles, a logo. A job may carry
//! its own; what it leaves out comes from the transcoder's configuration (which is also how the plugNmeet
//! and Egress doors, whose requests carry none, are branded).

use serde::{Deserialize, Serialize};

/// Every field optional: the job's, then the transcoder's, then the built-in look.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    /// Drawn across the top of the picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 120)]
    pub title: Option<String>,
    /// Behind the tiles, `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^#[0-9a-fA-F]{6}$")]
    pub background: Option<String>,
    /// The active speaker's outline, `#rrggbb`, or `none` for no outline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(#[0-9a-fA-F]{6}|none)$")]
    pub highlight: Option<String>,
    /// Names on tiles and initials on placeholders (default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<bool>,
    /// Pango font family and style for names and title, e.g. `Sans Bold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9 -]+$")]
    pub font: Option<String>,
    /// A logo by its name in the transcoders' `logos` configuration (a job never names a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub logo: Option<String>,
    /// Space between tiles in pixels at 720 lines (0 to 64; default 0: tiles touch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 64)]
    pub tile_gap: Option<u32>,
}

/// Why a branding is not valid; shown to the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("branding: {0}")]
pub struct InvalidBranding(pub String);

pub const MAX_TITLE_CHARS: usize = 120;
const MAX_FONT_CHARS: usize = 64;
const MAX_LOGO_NAME_CHARS: usize = 64;
const MAX_TILE_GAP: u32 = 64;

impl Branding {
    pub fn validate(&self) -> Result<(), InvalidBranding> {
        if let Some(title) = &self.title
            && (title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control))
        {
            return Err(InvalidBranding(format!("title must be at most {MAX_TITLE_CHARS} characters without control characters")));
        }
        if let Some(background) = &self.background {
            parse_colour(background).ok_or_else(|| InvalidBranding(format!("background {background:?} is not #rrggbb")))?;
        }
        if let Some(highlight) = &self.highlight
            && highlight != "none"
            && parse_colour(highlight).is_none()
        {
            return Err(InvalidBranding(format!("highlight {highlight:?} is not #rrggbb or none")));
        }
        if let Some(font) = &self.font
            && (font.is_empty() || font.chars().count() > MAX_FONT_CHARS || !font.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '-'))
        {
            return Err(InvalidBranding(format!("font must be 1-{MAX_FONT_CHARS} letters, digits, spaces or hyphens")));
        }
        if let Some(logo) = &self.logo
            && (logo.is_empty() || logo.len() > MAX_LOGO_NAME_CHARS || !logo.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(InvalidBranding(format!("logo must be a name of 1-{MAX_LOGO_NAME_CHARS} letters, digits, - or _")));
        }
        if self.tile_gap.is_some_and(|gap| gap > MAX_TILE_GAP) {
            return Err(InvalidBranding(format!("tile_gap must be 0 to {MAX_TILE_GAP} pixels")));
        }
        Ok(())
    }

    /// This branding with what it leaves out taken from `defaults`.
    pub fn over(&self, defaults: &Branding) -> Branding {
        Branding {
            title: self.title.clone().or_else(|| defaults.title.clone()),
            background: self.background.clone().or_else(|| defaults.background.clone()),
            highlight: self.highlight.clone().or_else(|| defaults.highlight.clone()),
            names: self.names.or(defaults.names),
            font: self.font.clone().or_else(|| defaults.font.clone()),
            logo: self.logo.clone().or_else(|| defaults.logo.clone()),
            tile_gap: self.tile_gap.or(defaults.tile_gap),
        }
    }
}

/// `#rrggbb` as opaque ARGB.
pub fn parse_colour(text: &str) -> Option<u32> {
    let hex = text.strip_prefix('#').filter(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()))?;
    u32::from_str_radix(hex, 16).ok().map(|rgb| 0xff00_0000 | rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_titles_fonts_and_logo_names_are_checked() {
        assert_eq!(parse_colour("#1a2B3c"), Some(0xff1a2b3c));
        assert_eq!(parse_colour("1a2b3c"), None);
        assert_eq!(parse_colour("#1a2b3"), None);
        let ok = Branding {
            title: Some("Board meeting".into()),
            background: Some("#101820".into()),
            highlight: Some("none".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = |b: Branding| b.validate().unwrap_err().to_string();
        assert!(bad(Branding { background: Some("red".into()), ..Default::default() }).contains("background"));
        assert!(bad(Branding { title: Some("a\nb".into()), ..Default::default() }).contains("title"));
        assert!(bad(Branding { font: Some("Sans <b>".into()), ..Default::default() }).contains("font"));
        assert!(bad(Branding { logo: Some("../etc/passwd".into()), ..Default::default() }).contains("logo"));
        assert!(bad(Branding { tile_gap: Some(65), ..Default::default() }).contains("tile_gap"));
        let unknown = serde_json::from_str::<Branding>(r#"{"logo_file":"/etc/passwd"}"#).unwrap_err().to_string();
        assert!(unknown.contains("logo_file"), "{unknown}");
    }

    #[test]
    fn a_jobs_branding_wins_over_the_configured_one() {
        let config = Branding { title: Some("ACME".into()), names: Some(false), logo: Some("acme".into()), ..Default::default() };
        let job = Branding { title: Some("Q3 review".into()), ..Default::default() };
        let merged = job.over(&config);
        assert_eq!(merged.title.as_deref(), Some("Q3 review"));
        assert_eq!((merged.names, merged.logo.as_deref()), (Some(false), Some("acme")));
    }
}
