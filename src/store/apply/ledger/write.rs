//! The ledger's changes of a batch as one array per column, and their write (by the batch's
//! last statement, or row by row when a room is folded again); with the feed's rows of the
//! sessions that started, ended or changed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::store::{
    apply::{
        Dialect, Room,
        feed::{Feed, Kind},
    },
    attendance::{RoomLedger, Session, Stay},
};

/// A session's start and end as the feed tells them: `was`, the same session as the ledger
/// held it before the batch (`None`: the batch started it).
pub(super) fn feed_session<'a>(
    feed: &mut Feed<'a>,
    room: Room<'a>,
    was: Option<&Session>,
    now: &Session,
) {
    if was.is_none() {
        feed.add(room, now.started_at, Kind::SessionStarted, &[]);
    }
    if let Some(ended) = now.ended_at
        && was.is_none_or(|old| old.ended_at.is_none())
    {
        feed.add(room, ended, Kind::SessionEnded, &[]);
    }
}

/// The ledger's changes of a batch, one array per column. On plain PostgreSQL, when no room
/// is cut, the batch's last statement writes the rows (`finish.sql`, which reads the fields);
/// otherwise [`LedgerWrite::write_apart`] does.
#[derive(Default)]
pub(in crate::store::apply) struct LedgerWrite {
    cut_apps: Vec<i64>,
    cut_rooms: Vec<String>,
    cut_from: Vec<i32>,
    pub(in crate::store::apply) s_apps: Vec<i64>,
    pub(in crate::store::apply) s_rooms: Vec<String>,
    pub(in crate::store::apply) s_users: Vec<String>,
    pub(in crate::store::apply) s_joined: Vec<DateTime<Utc>>,
    pub(in crate::store::apply) s_no: Vec<i32>,
    pub(in crate::store::apply) s_left: Vec<Option<DateTime<Utc>>>,
    pub(in crate::store::apply) s_type: Vec<Option<String>>,
    pub(in crate::store::apply) s_reason: Vec<Option<String>>,
    pub(in crate::store::apply) s_gaps: Vec<i32>,
    pub(in crate::store::apply) s_gap_ms: Vec<i64>,
    pub(in crate::store::apply) n_apps: Vec<i64>,
    pub(in crate::store::apply) n_rooms: Vec<String>,
    pub(in crate::store::apply) n_no: Vec<i32>,
    pub(in crate::store::apply) n_started: Vec<DateTime<Utc>>,
    pub(in crate::store::apply) n_ended: Vec<Option<DateTime<Utc>>>,
    pub(in crate::store::apply) n_cause: Vec<Option<String>>,
    pub(in crate::store::apply) n_peak: Vec<i32>,
    pub(in crate::store::apply) n_peak_at: Vec<DateTime<Utc>>,
    pub(in crate::store::apply) n_unique: Vec<i32>,
    pub(in crate::store::apply) n_member_ms: Vec<i64>,
    pub(in crate::store::apply) n_open: Vec<i32>,
    pub(in crate::store::apply) r_apps: Vec<i64>,
    pub(in crate::store::apply) r_rooms: Vec<String>,
    pub(in crate::store::apply) r_at: Vec<Option<DateTime<Utc>>>,
    pub(in crate::store::apply) r_rank: Vec<Option<i16>>,
    /// Rows a refold no longer has: stays by key, sessions by number.
    d_apps: Vec<i64>,
    d_rooms: Vec<String>,
    d_users: Vec<String>,
    d_joined: Vec<DateTime<Utc>>,
    e_apps: Vec<i64>,
    e_rooms: Vec<String>,
    e_no: Vec<i32>,
}

impl LedgerWrite {
    /// A room's changes; `cut`: the first session number a refold replaces.
    pub(super) fn push(
        &mut self,
        room: Room<'_>,
        cut: Option<i32>,
        ledger: &RoomLedger,
        before: Option<(DateTime<Utc>, i16)>,
    ) {
        if let Some(no) = cut {
            self.cut_apps.push(room.app);
            self.cut_rooms.push(room.id.to_owned());
            self.cut_from.push(no);
        }
        let changes = ledger.changes();
        self.push_rows(room, &changes.stays, &changes.sessions);
        // The place only moves on (a refold's window may start after the newest event); a
        // refold always writes it, which also marks a room's ledger as made.
        let place = changes.folded.max(before);
        if place.is_some() || cut.is_some() {
            self.r_apps.push(room.app);
            self.r_rooms.push(room.id.to_owned());
            self.r_at.push(place.map(|p| p.0));
            self.r_rank.push(place.map(|p| p.1));
        }
    }

    fn push_rows(&mut self, room: Room<'_>, stays: &[&Stay], sessions: &[&Session]) {
        for stay in stays {
            self.s_apps.push(room.app);
            self.s_rooms.push(room.id.to_owned());
            self.s_users.push(stay.user.clone());
            self.s_joined.push(stay.joined_at);
            self.s_no.push(stay.session_no);
            self.s_left.push(stay.left_at);
            self.s_type.push(stay.leave_type.clone());
            self.s_reason.push(stay.leave_reason.clone());
            self.s_gaps.push(stay.merged_gaps);
            self.s_gap_ms.push(stay.gap_ms);
        }
        for session in sessions {
            self.n_apps.push(room.app);
            self.n_rooms.push(room.id.to_owned());
            self.n_no.push(session.no);
            self.n_started.push(session.started_at);
            self.n_ended.push(session.ended_at);
            self.n_cause.push(session.end_cause.clone());
            self.n_peak.push(session.peak_members);
            self.n_peak_at.push(session.peak_at);
            self.n_unique.push(session.unique_members);
            self.n_member_ms.push(session.member_ms);
            self.n_open.push(session.open_stays);
        }
    }

    /// A refold's changes against the rows it replaces: the stays and sessions that differ
    /// (upserted), those it no longer has (deleted), and the room's place.
    pub(super) fn push_diff<'a>(
        &mut self,
        room: Room<'a>,
        ledger: &RoomLedger,
        old: (Vec<Stay>, Vec<Session>),
        before: Option<(DateTime<Utc>, i16)>,
        (at, feed): (DateTime<Utc>, &mut Feed<'a>),
    ) {
        let (old_stays, old_sessions) = old;
        let mut old_stays: HashMap<(String, DateTime<Utc>), Stay> = old_stays
            .into_iter()
            .map(|stay| ((stay.user.clone(), stay.joined_at), stay))
            .collect();
        let mut old_sessions: HashMap<i32, Session> =
            old_sessions.into_iter().map(|s| (s.no, s)).collect();
        let changes = ledger.changes();
        let mut stays = Vec::new();
        for stay in changes.stays {
            let old = old_stays.remove(&(stay.user.clone(), stay.joined_at));
            if old.as_ref() != Some(stay) {
                stays.push(stay);
            }
        }
        let mut sessions = Vec::new();
        for session in changes.sessions {
            let was = old_sessions.remove(&session.no);
            if was.as_ref() != Some(session) {
                feed_session(feed, room, was.as_ref(), session);
                sessions.push(session);
            }
        }
        let mut revised: Vec<String> = stays.iter().map(|stay| stay.user.clone()).collect();
        revised.extend(old_stays.keys().map(|(user, _)| user.clone()));
        if !revised.is_empty() {
            feed.add(room, at, Kind::StaysRevised, &revised);
        }
        for (user, joined) in old_stays.into_keys() {
            self.d_apps.push(room.app);
            self.d_rooms.push(room.id.to_owned());
            self.d_users.push(user);
            self.d_joined.push(joined);
        }
        for no in old_sessions.into_keys() {
            self.e_apps.push(room.app);
            self.e_rooms.push(room.id.to_owned());
            self.e_no.push(no);
        }
        self.push_rows(room, &stays, &sessions);
        let place = changes.folded.max(before);
        self.r_apps.push(room.app);
        self.r_rooms.push(room.id.to_owned());
        self.r_at.push(place.map(|p| p.0));
        self.r_rank.push(place.map(|p| p.1));
    }

    /// Whether there is no row to upsert and no place to move.
    pub(in crate::store::apply) fn is_empty(&self) -> bool {
        self.s_apps.is_empty() && self.n_apps.is_empty() && self.r_apps.is_empty()
    }

    /// Whether the batch's last statement writes the rows: plain PostgreSQL, no room cut.
    pub(in crate::store::apply) fn set_based(&self, dialect: Dialect) -> bool {
        dialect == Dialect::Postgres && self.cut_apps.is_empty()
    }

    /// Writes what the batch's last statement does not: a refold's rows it no longer has
    /// (deleted), and, on Citus or when a room is cut (a backfill), the changed rows
    /// (`ledger_write`, one routed statement a row on Citus).
    pub(in crate::store::apply) async fn write_apart(
        &self,
        conn: &mut PgConnection,
        dialect: Dialect,
    ) -> Result<(), sqlx::Error> {
        // Disjoint from what is upserted next: a refold's rows it no longer has (rare). On
        // Citus one routed statement a row: a statement over a list would go to every shard.
        if dialect == Dialect::Citus {
            for i in 0..self.d_apps.len() {
                sqlx::query!(
                    r#"DELETE FROM room_stays
                       WHERE sdk_app_id = $1 AND room_id = $2 AND user_id = $3
                         AND joined_at = $4"#,
                    self.d_apps[i],
                    self.d_rooms[i],
                    self.d_users[i],
                    self.d_joined[i],
                )
                .execute(&mut *conn)
                .await?;
            }
            for i in 0..self.e_apps.len() {
                sqlx::query!(
                    r#"DELETE FROM room_sessions
                       WHERE sdk_app_id = $1 AND room_id = $2 AND session_no = $3"#,
                    self.e_apps[i],
                    self.e_rooms[i],
                    self.e_no[i],
                )
                .execute(&mut *conn)
                .await?;
            }
        } else if !self.d_apps.is_empty() || !self.e_apps.is_empty() {
            sqlx::query!(
                r#"WITH stays AS (
                       DELETE FROM room_stays s
                       USING UNNEST($1::int8[], $2::text[], $3::text[], $4::timestamptz[])
                             AS d(a, r, u, j)
                       WHERE s.sdk_app_id = d.a AND s.room_id = d.r AND s.user_id = d.u
                         AND s.joined_at = d.j)
                   DELETE FROM room_sessions s
                   USING UNNEST($5::int8[], $6::text[], $7::int4[]) AS d(a, r, n)
                   WHERE s.sdk_app_id = d.a AND s.room_id = d.r AND s.session_no = d.n"#,
                &self.d_apps,
                &self.d_rooms,
                &self.d_users,
                &self.d_joined,
                &self.e_apps,
                &self.e_rooms,
                &self.e_no,
            )
            .execute(&mut *conn)
            .await?;
        }
        if self.set_based(dialect) || (self.r_apps.is_empty() && self.cut_apps.is_empty()) {
            return Ok(());
        }
        sqlx::query_file!(
            "src/store/apply/sql/ledger_write_rows.sql",
            &self.cut_apps,
            &self.cut_rooms,
            &self.cut_from,
            &self.s_apps,
            &self.s_rooms,
            &self.s_users,
            &self.s_joined,
            &self.s_no,
            &self.s_left as &[Option<DateTime<Utc>>],
            &self.s_type as &[Option<String>],
            &self.s_reason as &[Option<String>],
            &self.s_gaps,
            &self.s_gap_ms,
            &self.n_apps,
            &self.n_rooms,
            &self.n_no,
            &self.n_started,
            &self.n_ended as &[Option<DateTime<Utc>>],
            &self.n_cause as &[Option<String>],
            &self.n_peak,
            &self.n_peak_at,
            &self.n_unique,
            &self.n_member_ms,
            &self.n_open,
            &self.r_apps,
            &self.r_rooms,
            &self.r_at as &[Option<DateTime<Utc>>],
            &self.r_rank as &[Option<i16>],
        )
        .fetch_one(conn)
        .await?;
        Ok(())
    }
}
