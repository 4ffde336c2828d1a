//! The bounds of a callback body, in one place: the parser and the parse-time checks both
//! apply them (docs/protocol.md#bounds, docs/limits.md#the-callback).

/// Most entries any list may hold (docs/protocol.md#bounds).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// At most this many values (every array, object and scalar) are built for the fields roomsync
/// reads, over the whole body: a `SeatList` of 10,000 seats with every field roomsync reads of
/// a seat takes 60,001, a Live `MemberList` of 10,000 members about 20,000.
pub const MAX_READ_VALUES: usize = 70_000;
/// Longest `Type` and `EventCause` (a word from a short list, kept as sent when unknown) and
/// `Operator_Account` (an account, like an id), in bytes: they are copied into the view rows.
pub const MAX_TYPE_BYTES: usize = 256;
/// Longest `Reason` of a leave, in bytes (free text, copied into `room_members.leave_reason`).
pub const MAX_REASON_BYTES: usize = 1024;
