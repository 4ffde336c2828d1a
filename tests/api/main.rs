//! HTTP integration tests: the real application on port 0 against a fresh PostgreSQL
//! database per test (`#[sqlx::test]`). One binary, one link step.

mod accounting;
mod attendance;
mod attendance_model;
mod batches;
mod callback;
mod citus;
mod connection;
mod console;
mod drift;
mod durability;
mod edges;
mod failures;
mod fake_tencent;
mod feed;
mod hardening;
mod helpers;
mod intake;
mod jsonb;
mod lifecycle;
mod live;
mod model;
mod monitoring;
mod operations;
mod process;
mod reapply;
mod rows;
mod seams;
mod server;
mod tencent_client;
mod tencent_setup;
mod tls;
