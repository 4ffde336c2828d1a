//! The wire protocol (docs/protocol.md): query string, signature, and the body parsed into domain types;
//! beside them, Tencent's REST answers ([`answer`]) and drift-repair corrections decoded into the
//! same types (docs/drift-repair.md).
//!
//! Everything past this module works with [`Callback`]: once parsed, nothing is checked again.

pub mod answer;
mod correction;
mod domain;
mod parse;
mod query;
mod signature;

pub use correction::{CorrectionError, StoredCorrection, correction_at};
pub use domain::{
    Callback, CallbackParts, Command, Event, EventTime, Id, IdError, MemberChange, Meta, Product,
    RECONCILE_COMMAND, RECONCILED, RESERVED_PREFIX, ROOM_DESTROYED, RoomInfo, SdkAppId, Seat,
    event_types,
};
pub use parse::{
    MAX_LIST_ENTRIES, Rejection, RejectionKind, account_id, numeric::fits as numeric_fits,
    parse_body, parse_stored, printable, seat_list_of,
};
pub use query::CallbackQuery;
pub use signature::{SignatureError, sign, verify_signature};
