//! A job's look: its own branding over this node's configured one over the built-in look. A branding
//! that names a logo this node does not have (or whose file is gone) is drawn without it, with a warning.

use crate::config::LogoConfig;
use fleet_pipelines::look::{Logo, Look};
use fleet_protocol::branding::{Branding, parse_colour};
use std::collections::BTreeMap;

/// The look of a composite `height` lines tall from the job's branding over the node's (and the node's
/// logos), and warnings for what could not be honoured. The recorder's live composite uses it too.
pub fn look_for(job: Option<&Branding>, node: &Branding, logos: &BTreeMap<String, LogoConfig>, height: u32) -> (Look, Vec<String>) {
    let branding = job.map_or_else(|| node.clone(), |job| job.over(node));
    let builtin = Look::default();
    let mut warnings = Vec::new();
    let scaled = |px: u32| (px as u64 * height as u64 / 720) as i32;
    let logo = branding.logo.as_deref().and_then(|name| match logos.get(name) {
        Some(logo) if logo.file.is_file() => {
            Some(Logo { file: logo.file.clone(), corner: logo.corner, width: scaled(logo.width).max(2), margin: scaled(logo.margin) })
        }
        Some(logo) => {
            warnings.push(format!("logo {name:?}: {} is not a readable file on this node; drawn without it", logo.file.display()));
            None
        }
        None => {
            warnings.push(format!("logo {name:?} is not configured on this node; drawn without it"));
            None
        }
    });
    let highlight_argb = match branding.highlight.as_deref() {
        Some("none") => None,
        Some(colour) => parse_colour(colour).or(builtin.highlight_argb),
        None => builtin.highlight_argb,
    };
    let look = Look {
        names: branding.names.unwrap_or(builtin.names),
        font: branding.font.unwrap_or(builtin.font),
        name_points: builtin.name_points,
        background_argb: branding.background.as_deref().and_then(parse_colour).unwrap_or(builtin.background_argb),
        highlight_argb,
        title: branding.title.filter(|t| !t.trim().is_empty()),
        logo,
        tile_gap: branding.tile_gap.unwrap_or(builtin.tile_gap),
    };
    (look, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TranscoderConfig;
    use crate::config::LogoConfig;

    #[test]
    fn the_jobs_branding_then_the_nodes_then_the_builtin_look() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acme.png");
        std::fs::write(&file, b"png").unwrap();
        let mut config = TranscoderConfig {
            branding: Branding { background: Some("#102030".into()), logo: Some("acme".into()), ..Default::default() },
            ..Default::default()
        };
        config.logos.insert("acme".into(), LogoConfig { file: file.clone(), corner: Default::default(), width: 160, margin: 24 });
        let (look, warnings) = look_for(None, &config.branding, &config.logos, 1080);
        assert!(warnings.is_empty());
        assert_eq!(look.background_argb, 0xff102030);
        assert_eq!(look.logo.as_ref().map(|l| (l.width, l.margin)), Some((240, 36)), "scaled to 1080 lines");
        assert!(look.names && look.highlight_argb.is_some(), "built-in defaults");

        let job = Branding {
            title: Some("Q3".into()),
            highlight: Some("none".into()),
            names: Some(false),
            logo: Some("other".into()),
            ..Default::default()
        };
        let (look, warnings) = look_for(Some(&job), &config.branding, &config.logos, 720);
        assert_eq!((look.title.as_deref(), look.highlight_argb, look.names), (Some("Q3"), None, false));
        assert_eq!(look.background_argb, 0xff102030, "the node's background where the job says nothing");
        assert!(look.logo.is_none() && warnings.len() == 1 && warnings[0].contains("\"other\""), "{warnings:?}");
    }
}
