//! Release-note entities, value objects and the rules on their fields.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use keel_kernel::UserId;
use keel_kernel::validation::FieldErrors;
use serde::{Deserialize, Serialize};

keel_kernel::define_id!(
    /// Identifies a release note.
    ReleaseNoteId
);

/// Longest title, in characters.
pub const TITLE_MAX_CHARS: usize = 200;
/// Longest markdown body, in characters.
pub const BODY_MAX_CHARS: usize = 100_000;
/// Longest version string, in characters.
pub const VERSION_MAX_CHARS: usize = 64;

/// What kind of change a release note announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// Something new.
    Feature,
    /// Something better.
    Improvement,
    /// Something fixed.
    Bugfix,
    /// Something that needs action from users.
    Breaking,
}

impl ChangeType {
    /// The wire and storage names, in declaration order.
    pub const NAMES: &'static [&'static str] = &["feature", "improvement", "bugfix", "breaking"];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Improvement => "improvement",
            Self::Bugfix => "bugfix",
            Self::Breaking => "breaking",
        }
    }
}

impl FromStr for ChangeType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "feature" => Ok(Self::Feature),
            "improvement" => Ok(Self::Improvement),
            "bugfix" => Ok(Self::Bugfix),
            "breaking" => Ok(Self::Breaking),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// Whether a release note is visible to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Being written; only writers see it.
    Draft,
    /// Public.
    Published,
}

impl ReleaseStatus {
    /// The wire and storage names.
    pub const NAMES: &'static [&'static str] = &["draft", "published"];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
        }
    }
}

impl FromStr for ReleaseStatus {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "draft" => Ok(Self::Draft),
            "published" => Ok(Self::Published),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// A stored enum value this version of Keel does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownName(pub String);

/// A semantic version such as `1.4.0` or `2.0.0-rc.1`, kept in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl TryFrom<String> for Version {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Version> for String {
    fn from(version: Version) -> Self {
        version.0
    }
}

impl Version {
    /// Parses a semantic version; a leading `v` (as in git tags) is accepted and dropped.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        let bare = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        if bare.chars().count() > VERSION_MAX_CHARS {
            return Err(format!("must be at most {VERSION_MAX_CHARS} characters"));
        }
        semver::Version::parse(bare)
            .map(|v| Self(v.to_string()))
            .map_err(|_| "must be a semantic version such as 1.4.0 or 2.0.0-rc.1".to_owned())
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A release note as stored (and as cached: hence serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseNote {
    /// Identity.
    pub id: ReleaseNoteId,
    /// The version it describes; unique.
    pub version: Version,
    /// A one-line summary.
    pub title: String,
    /// The details, in Markdown (rendered by clients; stored as given).
    pub body: String,
    /// The kind of change.
    pub change_type: ChangeType,
    /// Draft or published.
    pub status: ReleaseStatus,
    /// When it was (last) published; set exactly when `status` is published.
    pub published_at: Option<DateTime<Utc>>,
    /// Who wrote it; `None` when Keel itself did (seeding).
    pub created_by: Option<UserId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl ReleaseNote {
    /// Makes the note public as of `now`. Publishing a published note changes nothing.
    pub fn publish(&mut self, now: DateTime<Utc>) {
        if self.status != ReleaseStatus::Published {
            self.status = ReleaseStatus::Published;
            self.published_at = Some(now);
        }
    }

    /// Takes the note back to draft.
    pub fn unpublish(&mut self) {
        self.status = ReleaseStatus::Draft;
        self.published_at = None;
    }
}

/// Input for a new release note (always created as a draft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReleaseNote {
    /// A semantic version.
    pub version: String,
    /// 1 to 200 characters, no control characters.
    pub title: String,
    /// Markdown, up to 100 000 characters.
    pub body: String,
    /// The kind of change.
    pub change_type: ChangeType,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseNotePatch {
    /// New version.
    pub version: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New body.
    pub body: Option<String>,
    /// New change type.
    pub change_type: Option<ChangeType>,
    /// `true` publishes, `false` returns to draft.
    pub published: Option<bool>,
}

impl ReleaseNotePatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Checks a title and returns its stored form (trimmed).
pub(crate) fn check_title(raw: &str, errors: &mut FieldErrors) -> String {
    let title = raw.trim();
    let length = title.chars().count();
    if length == 0 || length > TITLE_MAX_CHARS {
        errors.add(
            "title",
            "length",
            format!("must be between 1 and {TITLE_MAX_CHARS} characters long"),
        );
    } else if title.chars().any(char::is_control) {
        errors.add(
            "title",
            "control_characters",
            "must not contain control characters",
        );
    }
    title.to_owned()
}

/// Checks a body and returns its stored form (unchanged: whitespace is meaningful in Markdown).
pub(crate) fn check_body(raw: &str, errors: &mut FieldErrors) -> String {
    if raw.chars().count() > BODY_MAX_CHARS {
        errors.add(
            "body",
            "length",
            format!("must be at most {BODY_MAX_CHARS} characters long"),
        );
    }
    if raw.contains('\0') {
        errors.add(
            "body",
            "control_characters",
            "must not contain NUL characters",
        );
    }
    raw.to_owned()
}

/// Checks a version and returns its canonical form (empty when invalid: the recorded error
/// stops the use case before the value is used).
pub(crate) fn check_version(raw: &str, errors: &mut FieldErrors) -> Version {
    Version::parse(raw).unwrap_or_else(|message| {
        errors.add("version", "format", message);
        Version(String::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_semantic_and_canonical() {
        assert_eq!(Version::parse("1.2.3").unwrap().as_str(), "1.2.3");
        assert_eq!(
            Version::parse(" v2.0.0-rc.1 ").unwrap().as_str(),
            "2.0.0-rc.1"
        );
        for bad in [
            "",
            "1",
            "1.2",
            "latest",
            "1.2.3.4",
            "01.2.3",
            &"9".repeat(80),
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn enum_names_round_trip() {
        for name in ChangeType::NAMES {
            assert_eq!(name.parse::<ChangeType>().unwrap().as_str(), *name);
        }
        for name in ReleaseStatus::NAMES {
            assert_eq!(name.parse::<ReleaseStatus>().unwrap().as_str(), *name);
        }
        assert!("major".parse::<ChangeType>().is_err());
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        let mut errors = FieldErrors::new();
        assert_eq!(
            check_title("  Faster search  ", &mut errors),
            "Faster search"
        );
        assert!(errors.is_empty());
        check_title("   ", &mut errors);
        check_title(&"x".repeat(201), &mut errors);
        check_title("bell\u{7}", &mut errors);
        assert_eq!(errors.into_vec().len(), 3);
    }
}
