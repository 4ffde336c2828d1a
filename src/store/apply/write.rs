//! The batch's one write of members' rows, with its notifications, as one array per column:
//! written by the batch's last statement on plain PostgreSQL ([`super::finish`]), by its own
//! routed statements on Citus.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Effects, Notify, notify::payloads};

/// Every member's new row, and the payloads that announce the batch's changes. Room ids are
/// the callbacks' own; the rest is moved out of the batch's effects (nothing is copied).
#[derive(Default)]
pub(super) struct MembersWrite<'a> {
    pub(super) apps: Vec<i64>,
    pub(super) rooms: Vec<&'a str>,
    pub(super) users: Vec<String>,
    pub(super) in_room: Vec<bool>,
    pub(super) entered_at: Vec<Option<DateTime<Utc>>>,
    pub(super) left_at: Vec<Option<DateTime<Utc>>>,
    pub(super) leave_type: Vec<Option<String>>,
    pub(super) leave_reason: Vec<Option<String>>,
    pub(super) last_at: Vec<DateTime<Utc>>,
    pub(super) rank: Vec<i16>,
    pub(super) payloads: Vec<String>,
}

impl<'a> MembersWrite<'a> {
    pub(super) fn of(effects: Effects<'a>, notify: Notify) -> Self {
        let mut write = Self {
            payloads: match notify {
                Notify::Yes => payloads(&effects.notices),
                Notify::No => Vec::new(),
            },
            ..Self::default()
        };
        for ((room, user), state) in effects.states {
            write.apps.push(room.app);
            write.rooms.push(room.id);
            write.users.push(user);
            write.in_room.push(state.in_room);
            write.entered_at.push(state.entered_at);
            write.left_at.push(state.left_at);
            write.leave_type.push(state.leave_type);
            write.leave_reason.push(state.leave_reason);
            write.last_at.push(state.last_event_at);
            write.rank.push(state.last_event_rank);
        }
        write
    }

    pub(super) fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.payloads.is_empty()
    }

    /// Citus: one routed statement a member, then the notifications (PostgreSQL delivers them
    /// at commit, so listeners never hear of a change that was rolled back).
    pub(super) async fn execute_citus(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        sqlx::query_file!(
            "src/store/apply/sql/write_members_citus.sql",
            &self.apps,
            &self.rooms as &[&str],
            &self.users,
            &self.in_room,
            &self.entered_at as &[Option<DateTime<Utc>>],
            &self.left_at as &[Option<DateTime<Utc>>],
            &self.leave_type as &[Option<String>],
            &self.leave_reason as &[Option<String>],
            &self.last_at,
            &self.rank,
            &self.payloads,
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}
