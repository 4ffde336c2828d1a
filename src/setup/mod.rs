//! Tencent's callback configuration of each app, compared with what roomsync needs:
//! `roomsync tencent check` and `roomsync tencent configure`
//! (docs/operations.md#checking-tencents-configuration).
//!
//! Each product (TUIRoomKit's `Room`, TUILiveKit's `Live`) has at most one callback
//! configuration per app: a URL and the commands switched on. The comparison is pure
//! ([`compare_app`], [`plan`]); [`check`] and [`configure`] ask Tencent with the drift-repair
//! credentials and never touch the database.
//!
//! - A finding ([`Finding`]) is something that loses or exposes callbacks: no configuration,
//!   another URL, plain `http://`, a handled command switched off.
//! - A note ([`Note`]) is worth knowing but costs nothing: the URL was not compared
//!   (`PUBLIC_CALLBACK_URL` unset), commands are on that roomsync ignores, a product is not in
//!   use.
//! - The callback token cannot be compared: Tencent's API does not expose it.
//!
//! An app may use only one product, so a product without any configuration is a finding only
//! when it was asked for by name (`--product`), or when the app has neither.

//! - [`compare`]: the pure comparison and plan;
//! - [`run`]: asking Tencent and the reports the commands print;
//! - [`watch`]: the console's setup check, the same check made in the background.

mod compare;
mod run;
mod watch;

pub use compare::*;
pub use run::*;
pub use watch::{Checked, Watch};

/// Exit status of `check` with a finding, and of `configure` when Tencent refused a change.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status when Tencent could not be asked (or there are no credentials to ask with).
pub const EXIT_NOT_ASKED: u8 = 2;
