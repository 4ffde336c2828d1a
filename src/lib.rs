//! roomsync: receives Tencent Cloud Room callbacks and keeps a synchronized membership view
//! in PostgreSQL.

pub mod callback;
pub mod cli;
pub mod codes;
pub mod config;
pub mod feed;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod reapply;
pub mod rebuild;
pub mod reconcile;
pub mod setup;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tencent;
