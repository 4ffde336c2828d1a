//! An async client for the three Tencent Room REST calls drift repair needs.
//!
//! Every call is `POST {base}/v4/{service}/{api}?sdkappid=…&identifier=…&usersig=…&random=…&contenttype=json`
//! with a JSON body. Tencent answers HTTP 200 with
//! `{"ActionStatus":"OK"|"FAIL","ErrorCode":0,"ErrorInfo":"","RequestId":"…","Response":{…}}`
//! (other statuses only for network-level failures); [`TencentClient`] turns that into a typed
//! [`Answer`](crate::tencent::Answer) or a [`TencentError`](crate::tencent::TencentError).
//!
//! One `reqwest::Client` serves all calls, so connections are reused; each call has a timeout
//! (5 s by default). The URL carries the UserSig, a credential, so no URL ever reaches an error
//! text or a log line.
//!
//! - `client`: the client, its tuning, and one signed call ([`TencentClient::call`]).
//! - `rooms`: the reads of drift repair (room info, member lists, seats).
//! - `callbacks`: the callback configuration of each product.

mod callbacks;
mod client;
mod rooms;

pub use callbacks::callback_service;
pub use client::{ClientOptions, RateGate, TencentClient};
