//! What the video platform's adapter says about the audience (docs/protocol.md, "Audience
//! events"), as the journal keeps it: one record holds a checked batch.

use serde::{Deserialize, Serialize};

/// What a viewer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AudienceKind {
    /// Entered the room (with where from).
    Enter,
    /// Left it.
    Leave,
    /// Liked (`count` times).
    Like,
    /// Commented.
    Comment,
    /// Shared the stream.
    Share,
    /// Followed the host.
    Follow,
    /// Tapped a product card (`sku`).
    Click,
}

impl AudienceKind {
    /// Every kind, in the order of its wire names.
    pub const ALL: [AudienceKind; 7] = [
        AudienceKind::Enter,
        AudienceKind::Leave,
        AudienceKind::Like,
        AudienceKind::Comment,
        AudienceKind::Share,
        AudienceKind::Follow,
        AudienceKind::Click,
    ];

    /// The wire name (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            AudienceKind::Enter => "enter",
            AudienceKind::Leave => "leave",
            AudienceKind::Like => "like",
            AudienceKind::Comment => "comment",
            AudienceKind::Share => "share",
            AudienceKind::Follow => "follow",
            AudienceKind::Click => "click",
        }
    }

    /// The kind a wire name names.
    pub fn parse(s: &str) -> Option<AudienceKind> {
        AudienceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One audience event, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceEvent {
    /// What happened.
    pub kind: AudienceKind,
    /// Who (the platform's user id).
    pub user: Box<str>,
    /// When, by the platform's clock (Unix ms).
    pub ts_ms: i64,
    /// `enter`: where the viewer came from (`recommend`, `follow`, `share`, ...).
    pub source: Option<Box<str>>,
    /// `enter`: who shared the stream to them, when they came by a share.
    pub referrer: Option<Box<str>>,
    /// `like`: how many likes (1 when not given).
    pub count: u32,
    /// `click`: the product card tapped.
    pub sku: Option<Box<str>>,
}
