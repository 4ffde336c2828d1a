//! The `ErrorCode` catalogue (docs/http.md#error-codes): every code of an HTTP answer and of a
//! `rejected_callbacks` row, defined once. The HTTP layer maps its errors onto these; the ingest
//! path writes the `rejected_callbacks` ones. A leaf module, so that every layer can use it.

/// The body is not JSON (or not an object).
pub const NOT_JSON: u32 = 40001;
/// A required field is missing.
pub const MISSING_FIELD: u32 = 40002;
/// A field has the wrong type.
pub const WRONG_TYPE: u32 = 40003;
/// A value is out of bounds (too long, too many, a reserved name, …).
pub const OUT_OF_BOUNDS: u32 = 40004;
/// A text holds a NUL character.
pub const NUL_CHARACTER: u32 = 40005;
/// The body's `CallbackCommand` differs from the query's.
pub const COMMAND_MISMATCH: u32 = 40006;
/// No `CallbackCommand` anywhere.
pub const MISSING_COMMAND: u32 = 40007;
/// The body could not be read.
pub const BODY_READ: u32 = 40008;
/// The body did not arrive in time.
pub const BODY_TIMEOUT: u32 = 40009;
/// `EventTime` further ahead of the arrival than `EVENT_TIME_MAX_FUTURE_SECS`.
pub const FUTURE_EVENT_TIME: u32 = 40010;
/// A string of the body holds a lone surrogate escape, which PostgreSQL cannot store.
pub const LONE_SURROGATE: u32 = 40011;

/// Read API: `after` is not a non-negative integer.
pub const AFTER_INVALID: u32 = 40020;
/// Read API: `limit` is not an integer from 1 to its maximum.
pub const LIMIT_INVALID: u32 = 40021;
/// Read API: `wait` is not an integer from 0 to 30.
pub const WAIT_INVALID: u32 = 40022;
/// Read API: the room id or app id of the path is not one roomsync could hold.
pub const ROOM_INVALID: u32 = 40024;

/// Read API: no `Authorization: Bearer` header.
pub const TOKEN_MISSING: u32 = 40120;
/// Read API: the bearer token is not `API_TOKEN`.
pub const TOKEN_WRONG: u32 = 40121;

/// `Sign` or `RequestTime` missing while a token is set.
pub const SIGNATURE_MISSING: u32 = 40101;
/// `RequestTime` is not a number.
pub const SIGNATURE_BAD_REQUEST_TIME: u32 = 40102;
/// `RequestTime` is further from now than `SIGNATURE_MAX_SKEW_SECS`.
pub const SIGNATURE_EXPIRED: u32 = 40103;
/// `Sign` does not match.
pub const SIGNATURE_MISMATCH: u32 = 40104;

/// No `SdkAppid` in the query string.
pub const APP_ID_MISSING: u32 = 40301;
/// `SdkAppid` is not one of `SDK_APP_ID`.
pub const APP_ID_UNKNOWN: u32 = 40302;

/// Read API: the app is not one of `SDK_APP_ID`.
pub const APP_NOT_SERVED: u32 = 40401;

/// Read API: `after` is past the newest change (a position of another database, or one
/// restored from an older backup).
pub const AFTER_AHEAD: u32 = 40901;

/// Read API: the position is older than the oldest change kept (`CHANGES_RETENTION_HOURS`).
pub const CHANGES_GONE: u32 = 41001;

/// The body is larger than `MAX_BODY_BYTES`.
pub const TOO_LARGE: u32 = 41301;

/// PostgreSQL is down and the journal could not take the callback either.
pub const STORE_UNAVAILABLE: u32 = 50301;
/// The commit took longer than `COMMIT_TIMEOUT_MS`.
pub const STORE_TIMEOUT: u32 = 50302;
/// The writer is shutting down.
pub const STORE_CLOSED: u32 = 50303;
/// PostgreSQL refused this callback's data (SQLSTATE classes 22, 23); also the code of its
/// `rejected_callbacks` row.
pub const STORE_REFUSED: u32 = 50304;
/// The journal is full (`JOURNAL_MAX_BYTES`).
pub const JOURNAL_FULL: u32 = 50305;
/// The journal could not be written.
pub const JOURNAL_FAILED: u32 = 50306;
/// Never an HTTP answer: the `rejected_callbacks` row of a journal record that no longer parses.
pub const JOURNAL_UNPARSABLE: u32 = 50307;
/// PostgreSQL is busy (no connection in time, a deadlock, a cancelled statement).
pub const STORE_BUSY: u32 = 50308;
/// Any other failure of PostgreSQL.
pub const STORE_FAILED: u32 = 50309;
/// Too many callback bodies in flight at once (`HTTP_MAX_INFLIGHT_BODY_BYTES`).
pub const BODIES_IN_FLIGHT: u32 = 50310;
/// Read API: `FEED_MAX_WAITERS` readers wait already.
pub const FEED_BUSY: u32 = 50311;
/// Read API: PostgreSQL could not answer.
pub const FEED_UNAVAILABLE: u32 = 50312;

/// The codes of refusals that came after the app and signature checks: the body's own (400)
/// and what PostgreSQL or a journal record's decoding refused (50304, 50307). The body of
/// those was read whole, so a later parser may take it (`roomsync rejected reapply`), and
/// `ingest_daily` counts them under their app (the others under app 0: anyone can send them).
pub const PAST_APP_CHECKS: [u32; 11] = [
    NOT_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
    OUT_OF_BOUNDS,
    NUL_CHARACTER,
    COMMAND_MISMATCH,
    MISSING_COMMAND,
    FUTURE_EVENT_TIME,
    LONE_SURROGATE,
    STORE_REFUSED,
    JOURNAL_UNPARSABLE,
];

#[cfg(test)]
mod tests {
    /// Every code of the catalogue appears in docs/http.md, and no two share a value.
    #[test]
    fn every_code_is_documented_once() {
        let source = include_str!("codes.rs");
        let docs = include_str!("../docs/http.md");
        let codes: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub const "))
            .filter(|rest| !rest.starts_with("PAST_APP_CHECKS"))
            .map(|rest| rest.rsplit(' ').next().unwrap().trim_end_matches(';'))
            .collect();
        assert_eq!(codes.len(), 39);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        for code in codes {
            assert!(docs.contains(code), "{code} is not in docs/http.md");
        }
    }
}
