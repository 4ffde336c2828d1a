//! Tencent's Room REST API, for drift repair: the views that callbacks keep can drift from
//! Tencent's own state when a callback is lost, and these calls tell what Tencent sees. Also
//! the callback configuration of each product (`get_callback` and its kin), for
//! `roomsync tencent check` and `configure` ([`crate::setup`]).
//!
//! - [`usersig`]: the UserSig every call is signed with, cached per app ([`UserSigCache`]).
//! - `transport`: the calls themselves ([`TencentClient`]) and the rate bound they pass
//!   ([`RateGate`]).
//! - `answers`: Tencent's answer envelope, into typed answers ([`Answer`]); [`answer`]: what
//!   the answers hold, decoded into the domain types.
//! - `errors`: what a call fails with ([`TencentError`]) and how a failure is classed.
//!
//! ```no_run
//! # async fn example(config: &roomsync::config::DriftRepairConfig) {
//! use roomsync::{callback::Id, tencent::{TencentClient, TencentError}};
//!
//! let client = TencentClient::new(config).expect("TLS set-up");
//! let room = Id::parse("room-1").unwrap();
//! for app in client.apps().collect::<Vec<_>>() {
//!     match client.get_room_member_list(app, &room).await {
//!         Ok(answer) => println!("{} members; payload {}", answer.data.len(), answer.raw),
//!         Err(TencentError::RoomNotFound) => println!("room gone"),
//!         Err(e) if e.is_auth_error() => eprintln!("fix the key: {e}"),
//!         Err(e) => eprintln!("skip this turn ({}): {e}", e.error_code_label()),
//!     }
//! }
//! # }
//! ```

pub mod answer;
mod answers;
mod errors;
mod transport;
pub mod usersig;

pub use crate::callback::Product;
pub use answer::CallbackConfig;
pub use answers::Answer;
pub use errors::{
    BudgetError, CALLBACK_CONFIG_EXISTS, NO_CALLBACK_CONFIG, ROOM_NOT_FOUND, TencentError,
};
pub use transport::{ClientOptions, RateGate, TencentClient, callback_service};
pub use usersig::UserSigCache;
