//! A batch's last statement: the members' rows and notifications, the ledger's set-based
//! changes and the change feed's rows. One round trip on plain PostgreSQL (`finish.sql`);
//! each in its own routed statement on Citus, as its forms need (docs/scaling.md#citus).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    Dialect,
    feed::{Feed, NotifyMode},
    ledger::LedgerWrite,
    write::MembersWrite,
};

/// Writes what the batch gathered; the caller's transaction commits next (the feed's head is
/// locked from here to the end of the commit: docs/feed.md#order). The newest `seq` written,
/// `None` when the batch changed nothing the feed tells.
pub(super) async fn finish(
    conn: &mut PgConnection,
    dialect: Dialect,
    members: MembersWrite<'_>,
    ledger: LedgerWrite,
    feed: Feed<'_>,
    notify: NotifyMode,
) -> Result<Option<i64>, sqlx::Error> {
    if dialect == Dialect::Citus {
        members.execute_citus(conn).await?;
        // The ledger's rows were written apart (`LedgerWrite::write_apart`).
        return feed.record(conn, notify).await;
    }
    // A room folded again was written apart: the statement takes no ledger rows then.
    let ledger = if ledger.set_based(dialect) {
        ledger
    } else {
        LedgerWrite::default()
    };
    let rows = feed.into_rows();
    if members.is_empty() && ledger.is_empty() && rows.apps.is_empty() {
        return Ok(None);
    }
    let done = sqlx::query_file!(
        "src/store/apply/sql/finish.sql",
        &members.apps,
        &members.rooms as &[&str],
        &members.users,
        &members.in_room,
        &members.entered_at as &[Option<DateTime<Utc>>],
        &members.left_at as &[Option<DateTime<Utc>>],
        &members.leave_type as &[Option<String>],
        &members.leave_reason as &[Option<String>],
        &members.last_at,
        &members.rank,
        &members.payloads,
        &ledger.s_apps,
        &ledger.s_rooms,
        &ledger.s_users,
        &ledger.s_joined,
        &ledger.s_no,
        &ledger.s_left as &[Option<DateTime<Utc>>],
        &ledger.s_type as &[Option<String>],
        &ledger.s_reason as &[Option<String>],
        &ledger.s_gaps,
        &ledger.s_gap_ms,
        &ledger.n_apps,
        &ledger.n_rooms,
        &ledger.n_no,
        &ledger.n_started,
        &ledger.n_ended as &[Option<DateTime<Utc>>],
        &ledger.n_cause as &[Option<String>],
        &ledger.n_peak,
        &ledger.n_peak_at,
        &ledger.n_unique,
        &ledger.n_member_ms,
        &ledger.n_open,
        &ledger.r_apps,
        &ledger.r_rooms,
        &ledger.r_at as &[Option<DateTime<Utc>>],
        &ledger.r_rank as &[Option<i16>],
        &rows.apps,
        &rows.rooms as &[&str],
        &rows.kinds as &[&str],
        &rows.users,
        &rows.counts,
        &rows.at,
        &rows.ids as &[Option<i64>],
        &rows.causes as &[&str],
        notify == NotifyMode::Wakeup,
    )
    .fetch_one(conn)
    .await?;
    Ok(done.seq)
}
