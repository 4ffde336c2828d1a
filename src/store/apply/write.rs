//! The batch's one write of members' rows, with its notifications.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Dialect, Effects, Notify, notify::payloads};
use crate::store::membership::MemberState;

/// Writes every member's new row and sends the batch's notifications, in one statement.
/// PostgreSQL delivers the notifications at commit, so listeners never hear of a change that
/// was rolled back.
pub(super) async fn write_members(
    conn: &mut PgConnection,
    dialect: Dialect,
    effects: &Effects<'_>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let payloads = match notify {
        Notify::Yes => payloads(&effects.notices),
        Notify::No => Vec::new(),
    };
    if effects.states.is_empty() && payloads.is_empty() {
        return Ok(());
    }
    let states = &effects.states;
    let column =
        |f: fn(&MemberState) -> Option<DateTime<Utc>>| states.values().map(f).collect::<Vec<_>>();
    let text = |f: fn(&MemberState) -> Option<&str>| states.values().map(f).collect::<Vec<_>>();
    let apps: Vec<i64> = states.keys().map(|(room, _)| room.app).collect();
    let rooms: Vec<&str> = states.keys().map(|(room, _)| room.id).collect();
    let users: Vec<&str> = states.keys().map(|(_, user)| user.as_str()).collect();
    let in_room: Vec<bool> = states.values().map(|s| s.in_room).collect();
    let last_at: Vec<DateTime<Utc>> = states.values().map(|s| s.last_event_at).collect();
    let rank: Vec<i16> = states.values().map(|s| s.last_event_rank).collect();
    // One statement, in the database's form: the same parameters.
    macro_rules! write_members {
        ($file:literal) => {
            sqlx::query_file!(
                $file,
                &apps,
                &rooms as &[&str],
                &users as &[&str],
                &in_room,
                &column(|s| s.entered_at) as &[Option<DateTime<Utc>>],
                &column(|s| s.left_at) as &[Option<DateTime<Utc>>],
                &text(|s| s.leave_type.as_deref()) as &[Option<&str>],
                &text(|s| s.leave_reason.as_deref()) as &[Option<&str>],
                &last_at,
                &rank,
                &payloads,
            )
            .execute(conn)
            .await?
        };
    }
    match dialect {
        Dialect::Postgres => write_members!("src/store/apply/sql/write_members.sql"),
        Dialect::Citus => write_members!("src/store/apply/sql/write_members_citus.sql"),
    };
    Ok(())
}
