//! Why a callback body was refused: the kind that fixes its ErrorCode and a message that names
//! the field, made printable once (docs/http.md#error-codes).

use crate::codes;

/// Why a body was refused: the kind fixes the ErrorCode, `info` names the field or problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{info}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub info: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    NotJson,
    MissingField,
    WrongType,
    OutOfBounds,
    NulCharacter,
    /// A UTF-16 surrogate escape that is not half of a pair, anywhere in the body.
    LoneSurrogate,
    CommandMismatch,
    MissingCommand,
    /// `EventTime` further ahead of the arrival than the configured skew.
    FutureEventTime,
}

impl Rejection {
    /// The ErrorCode of this refusal (docs/http.md#error-codes).
    pub fn code(&self) -> u32 {
        match self.kind {
            RejectionKind::NotJson => codes::NOT_JSON,
            RejectionKind::MissingField => codes::MISSING_FIELD,
            RejectionKind::WrongType => codes::WRONG_TYPE,
            RejectionKind::OutOfBounds => codes::OUT_OF_BOUNDS,
            RejectionKind::NulCharacter => codes::NUL_CHARACTER,
            RejectionKind::LoneSurrogate => codes::LONE_SURROGATE,
            RejectionKind::CommandMismatch => codes::COMMAND_MISMATCH,
            RejectionKind::MissingCommand => codes::MISSING_COMMAND,
            RejectionKind::FutureEventTime => codes::FUTURE_EVENT_TIME,
        }
    }

    /// `info` goes to logs and to `rejected_callbacks`; it quotes what the sender chose (JSON
    /// keys), so it is made printable here, once.
    pub(super) fn new(kind: RejectionKind, info: impl AsRef<str>) -> Self {
        Self {
            kind,
            info: printable(info.as_ref(), MAX_INFO_CHARS),
        }
    }
    pub(super) fn missing(path: &str) -> Self {
        Self::new(RejectionKind::MissingField, format!("{path} is required"))
    }
    pub(super) fn wrong_type(path: &str, expected: &str) -> Self {
        Self::new(
            RejectionKind::WrongType,
            format!("{path} must be {expected}"),
        )
    }
    pub(super) fn bounds(path: &str, problem: &str) -> Self {
        Self::new(RejectionKind::OutOfBounds, format!("{path} {problem}"))
    }
}

/// Longest `ErrorInfo`; a JSON key quoted in a path is cut sooner (see [`key_in_path`]).
const MAX_INFO_CHARS: usize = 512;
const MAX_KEY_CHARS: usize = 64;

/// Escapes control and bidirectional-override characters (a key with `\n` must not forge a
/// log line) and cuts the text at `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let risky = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if risky {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON key as it appears in a field path of a message.
pub(super) fn key_in_path(key: &str) -> String {
    printable(key, MAX_KEY_CHARS)
}
