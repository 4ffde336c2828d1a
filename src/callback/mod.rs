//! The wire protocol (docs/protocol.md): query string, signature, and the body parsed into domain
//! types. Tencent's REST answers are decoded into the same types in `tencent::answer`, and
//! drift-repair corrections in `reconcile::correction`.
//!
//! Everything past this module works with [`Callback`]: once parsed, nothing is checked again.

mod domain;
mod identity;
mod limits;
pub mod numeric;
mod parse;
mod query;
mod rejection;
mod signature;
mod storable;

pub use domain::{
    Callback, CallbackParts, Command, Event, EventTime, Id, IdError, MemberChange, Meta, Product,
    RECONCILE_COMMAND, RECONCILED, RESERVED_PREFIX, ROOM_DESTROYED, RoomInfo, SdkAppId, Seat,
    event_types,
};
pub use limits::MAX_LIST_ENTRIES;
pub use numeric::fits as numeric_fits;
pub use parse::{account_id, parse_body, parse_stored, seat_list_of};
pub use query::CallbackQuery;
pub use rejection::{Rejection, RejectionKind, printable};
pub use signature::{SignatureError, sign, verify_signature};
