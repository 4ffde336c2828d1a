//! The wire protocol (docs/protocol.md): query string, signature, and the body parsed into domain types.
//!
//! Everything past this module works with [`Callback`]: once parsed, nothing is checked again.

mod domain;
mod parse;
mod query;
mod signature;

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
