//! The attendance ledger (`room_stays`, `room_sessions`), kept in the batch's transaction
//! (docs/attendance.md). Per room, the batch's member events either go after everything the
//! ledger has folded, and the fold goes on from its rows (one read and one write for the whole
//! batch), or some go before, and the room's ledger is folded again from the start of the
//! session they fall in: the work is in proportion to that session and those after it, never
//! to the room's whole history.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    Dialect, Room,
    encoding::member_event_of,
    feed::{Feed, Kind},
    late::{Start, Windows, starts_of},
    room_of,
};
use crate::{
    callback::{Callback, Command, Event},
    store::{
        attendance::{Policy, RoomEvent, RoomLedger, Session, Stay, goes_after},
        membership::MemberEvent,
    },
};

/// Folds the batch's new member events into each room's ledger and writes what changed.
/// `callbacks`: the batch's callbacks that are new to history (or replayed by a rebuild);
/// `windows`: the late rooms' events the members' recompute read already (shared).
pub(super) async fn keep_ledger<'a>(
    conn: &mut PgConnection,
    dialect: Dialect,
    callbacks: &[&'a Callback],
    policy: Policy,
    windows: &mut Windows<'a>,
    feed: &mut Feed<'a>,
) -> Result<(), sqlx::Error> {
    let events = room_events(callbacks);
    if events.is_empty() {
        return Ok(());
    }
    let state = read_state(conn, &events, dialect).await?;
    let mut write = LedgerWrite::default();
    // Rooms with an event before the ledger's place: each folded again below, all at once.
    let mut late: Vec<(Room<'a>, DateTime<Utc>)> = Vec::new();
    let mut late_places = Vec::new();
    for (room, room_events) in events {
        let Some(place) = state.places.get(&(room.app, room.id.to_owned())) else {
            // Every room of the batch is locked, hence there; nothing to fold into otherwise.
            continue;
        };
        // A room older than the ledger: the background pass folds its whole history, these
        // events included (they are in history now), so a callback never pays for it.
        if place.backfill {
            continue;
        }
        let in_order = room_events.iter().all(|event| {
            let (at, rank, _, _) = event.order_key();
            goes_after(place.folded, at, rank)
        });
        if !in_order {
            let earliest = room_events
                .iter()
                .map(|event| event.order_key().0)
                .min()
                .expect("a room here has events");
            late.push((room, earliest));
            late_places.push(place.folded);
            continue;
        }
        let mut stays: Vec<Stay> = Vec::new();
        for event in &room_events {
            for user in &event.users {
                let key = (room.app, room.id.to_owned(), user.clone());
                if let Some(stay) = state.stays.get(&key) {
                    stays.push(stay.clone());
                }
            }
        }
        if let Some(open) = state.open.get(&(room.app, room.id.to_owned())) {
            stays.extend(open.iter().cloned());
        }
        let mut ledger = RoomLedger::resume(policy, place.session.clone(), stays);
        ledger.fold(room_events);
        for session in ledger.changes().sessions {
            let was = place.session.as_ref().filter(|old| old.no == session.no);
            feed_session(feed, room, was, session);
        }
        write.push(room, None, &ledger, place.folded);
    }
    if !late.is_empty() {
        let starts = starts_of(conn, dialect, &late).await?;
        let from: Vec<_> = late
            .iter()
            .zip(&starts)
            .map(|((room, _), start)| (*room, start.ledger_from))
            .collect();
        windows.read(conn, dialect, &from).await?;
        let cut: Vec<_> = late
            .iter()
            .zip(&starts)
            .map(|((room, _), start)| (*room, start.first_no))
            .collect();
        let mut old = match dialect {
            Dialect::Postgres => old_rows(conn, &cut).await?,
            Dialect::Citus => HashMap::new(),
        };
        for (((room, at), start), folded) in late.into_iter().zip(&starts).zip(late_places) {
            let ledger = refold(windows, room, start, policy);
            match dialect {
                // Only what the late event changed is written: a long session's other stays
                // stay as they are.
                Dialect::Postgres => {
                    let rows = old.remove(&room).unwrap_or_default();
                    write.push_diff(room, &ledger, rows, folded, (at, feed));
                }
                // The old rows are not read on Citus: every member of the refolded sessions
                // is named (docs/feed.md#kinds).
                Dialect::Citus => {
                    let users: Vec<String> = ledger
                        .changes()
                        .stays
                        .iter()
                        .map(|s| s.user.clone())
                        .collect();
                    feed.add(room, at, Kind::StaysRevised, &users);
                    write.push(room, Some(start.first_no), &ledger, folded);
                }
            }
        }
    }
    write.execute(conn, dialect).await
}

/// A session's start and end as the feed tells them: `was`, the same session as the ledger
/// held it before the batch (`None`: the batch started it).
fn feed_session<'a>(feed: &mut Feed<'a>, room: Room<'a>, was: Option<&Session>, now: &Session) {
    if was.is_none() {
        feed.add(room, now.started_at, Kind::SessionStarted, &[]);
    }
    if let Some(ended) = now.ended_at
        && was.is_none_or(|old| old.ended_at.is_none())
    {
        feed.add(room, ended, Kind::SessionEnded, &[]);
    }
}

/// Rooms' stays and sessions from a session number on, as they are before a refold: two
/// statements for every room.
async fn old_rows<'a>(
    conn: &mut PgConnection,
    rooms: &[(Room<'a>, i32)],
) -> Result<HashMap<Room<'a>, (Vec<Stay>, Vec<Session>)>, sqlx::Error> {
    let apps: Vec<i64> = rooms.iter().map(|(room, _)| room.app).collect();
    let ids: Vec<&str> = rooms.iter().map(|(room, _)| room.id).collect();
    let from: Vec<i32> = rooms.iter().map(|(_, no)| *no).collect();
    let mut old: HashMap<Room<'a>, (Vec<Stay>, Vec<Session>)> = HashMap::new();
    let index = |i: i64| usize::try_from(i - 1).expect("an ordinality is positive");
    let stays = sqlx::query!(
        r#"SELECT t.i AS "i!", s.user_id, s.joined_at, s.session_no, s.left_at, s.leave_type,
                  s.leave_reason, s.merged_gaps, s.gap_ms
           FROM UNNEST($1::int8[], $2::text[], $3::int4[]) WITH ORDINALITY AS t(a, r, n, i)
           JOIN room_stays s ON s.sdk_app_id = t.a AND s.room_id = t.r AND s.session_no >= t.n"#,
        &apps,
        &ids as &[&str],
        &from,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in stays {
        let room = rooms[index(row.i)].0;
        old.entry(room).or_default().0.push(Stay {
            user: row.user_id,
            joined_at: row.joined_at,
            session_no: row.session_no,
            left_at: row.left_at,
            leave_type: row.leave_type,
            leave_reason: row.leave_reason,
            merged_gaps: row.merged_gaps,
            gap_ms: row.gap_ms,
        });
    }
    let sessions = sqlx::query!(
        r#"SELECT t.i AS "i!", s.session_no, s.started_at, s.ended_at, s.end_cause,
                  s.peak_members, s.peak_at, s.unique_members, s.member_ms, s.open_stays
           FROM UNNEST($1::int8[], $2::text[], $3::int4[]) WITH ORDINALITY AS t(a, r, n, i)
           JOIN room_sessions s ON s.sdk_app_id = t.a AND s.room_id = t.r
                               AND s.session_no >= t.n"#,
        &apps,
        &ids as &[&str],
        &from,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in sessions {
        let room = rooms[index(row.i)].0;
        old.entry(room).or_default().1.push(Session {
            no: row.session_no,
            started_at: row.started_at,
            ended_at: row.ended_at,
            end_cause: row.end_cause,
            peak_members: row.peak_members,
            peak_at: row.peak_at,
            unique_members: row.unique_members,
            member_ms: row.member_ms,
            open_stays: row.open_stays,
        });
    }
    Ok(old)
}

/// Makes the ledger of a room that existed before the ledger did, from its whole history, in
/// the caller's transaction; `false` when it is made already (by a callback, or another
/// instance). The room's row is locked first, as a batch would lock it.
pub(super) async fn backfill(
    conn: &mut PgConnection,
    room: Room<'_>,
    policy: Policy,
) -> Result<bool, sqlx::Error> {
    let pending = sqlx::query_scalar!(
        r#"SELECT ledger_backfill FROM rooms WHERE sdk_app_id = $1 AND room_id = $2 FOR UPDATE"#,
        room.app,
        room.id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if pending != Some(true) {
        return Ok(false);
    }
    let mut windows = Windows::default();
    // One room: its routed form serves both forms of the database.
    windows
        .read(conn, Dialect::Citus, &[(room, Start::WHOLE.ledger_from)])
        .await?;
    let ledger = refold(&windows, room, &Start::WHOLE, policy);
    let mut write = LedgerWrite::default();
    write.push(room, Some(1), &ledger, None);
    // A refold is written row by row whatever the database's form.
    write.execute(conn, Dialect::Postgres).await?;
    fill_invitees(conn, room).await?;
    Ok(true)
}

/// Folds a room's ledger again from `start`, from the room's window read before.
fn refold(windows: &Windows<'_>, room: Room<'_>, start: &Start, policy: Policy) -> RoomLedger {
    let mut ledger = RoomLedger::empty(policy, start.first_no);
    ledger.fold(windows.events(room, start.ledger_from).cloned().collect());
    ledger
}

/// The invitees of a room's newest create that lists them, for a room created before the
/// ledger existed (a create that arrives later sets them itself, see `rooms.rs`).
async fn fill_invitees(conn: &mut PgConnection, room: Room<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE rooms r SET invitees = i.list, invitees_at = i.event_at
           FROM (SELECT event_at,
                        ARRAY(SELECT DISTINCT x FROM jsonb_array_elements_text(
                                  payload -> 'ScheduleInviteeList_Account') AS x
                              ORDER BY x) AS list
                 FROM room_events
                 WHERE sdk_app_id = $1 AND room_id = $2 AND callback_command = $3
                   AND jsonb_typeof(payload -> 'ScheduleInviteeList_Account') = 'array'
                 ORDER BY event_at DESC, id DESC LIMIT 1) i
           WHERE r.sdk_app_id = $1 AND r.room_id = $2 AND cardinality(i.list) > 0
             AND (r.invitees_at IS NULL OR r.invitees_at < i.event_at)"#,
        room.app,
        room.id,
        Command::CreateRoom.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The batch's member events, per room.
fn room_events<'a>(callbacks: &[&'a Callback]) -> BTreeMap<Room<'a>, Vec<RoomEvent>> {
    let mut events: BTreeMap<Room<'a>, Vec<RoomEvent>> = BTreeMap::new();
    for callback in callbacks {
        let (Some(room), Some(event)) = (room_of(callback), member_event_of(callback)) else {
            continue;
        };
        let users = match (&callback.event, callback.member_change()) {
            (Event::DestroyRoom, _) | (_, None) => Vec::new(),
            (_, Some(change)) => change
                .distinct_members()
                .into_iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
        };
        events
            .entry(room)
            .or_default()
            .push(RoomEvent { event, users });
    }
    events
}

/// A room's place in its ledger.
struct Place {
    folded: Option<(DateTime<Utc>, i16)>,
    backfill: bool,
    session: Option<Session>,
}

/// What the ledger holds for a batch's rooms and members.
#[derive(Default)]
struct State {
    places: HashMap<(i64, String), Place>,
    /// Named members' newest stays.
    stays: HashMap<(i64, String, String), Stay>,
    /// Every open stay of the rooms with a destroy in the batch.
    open: HashMap<(i64, String), Vec<Stay>>,
}

/// A row of `ledger_read`, as both forms return it.
struct StateRow {
    kind: String,
    sdk_app_id: i64,
    room_id: String,
    user_id: Option<String>,
    ledger_at: Option<DateTime<Utc>>,
    ledger_rank: Option<i16>,
    ledger_backfill: Option<bool>,
    session_no: Option<i32>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    end_cause: Option<String>,
    peak_members: Option<i32>,
    peak_at: Option<DateTime<Utc>>,
    unique_members: Option<i32>,
    member_ms: Option<i64>,
    open_stays: Option<i32>,
    joined_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    leave_type: Option<String>,
    leave_reason: Option<String>,
    merged_gaps: Option<i32>,
    gap_ms: Option<i64>,
}

async fn read_state(
    conn: &mut PgConnection,
    events: &BTreeMap<Room<'_>, Vec<RoomEvent>>,
    dialect: Dialect,
) -> Result<State, sqlx::Error> {
    let apps: Vec<i64> = events.keys().map(|room| room.app).collect();
    let ids: Vec<&str> = events.keys().map(|room| room.id).collect();
    let open: Vec<bool> = events
        .values()
        .map(|list| {
            list.iter()
                .any(|e| matches!(e.event, MemberEvent::Destroy { .. }))
        })
        .collect();
    let mut named: Vec<(i64, &str, &str)> = events
        .iter()
        .flat_map(|(room, list)| {
            list.iter()
                .flat_map(move |e| e.users.iter().map(move |u| (room.app, room.id, u.as_str())))
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    let user_apps: Vec<i64> = named.iter().map(|n| n.0).collect();
    let user_rooms: Vec<&str> = named.iter().map(|n| n.1).collect();
    let users: Vec<&str> = named.iter().map(|n| n.2).collect();
    // One statement, in the database's form: the same parameters, the same rows.
    macro_rules! ledger_read {
        ($file:literal) => {
            sqlx::query_file!(
                $file,
                &apps,
                &ids as &[&str],
                &open,
                &user_apps,
                &user_rooms as &[&str],
                &users as &[&str],
            )
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| StateRow {
                kind: row.kind,
                sdk_app_id: row.sdk_app_id,
                room_id: row.room_id,
                user_id: row.user_id,
                ledger_at: row.ledger_at,
                ledger_rank: row.ledger_rank,
                ledger_backfill: row.ledger_backfill,
                session_no: row.session_no,
                started_at: row.started_at,
                ended_at: row.ended_at,
                end_cause: row.end_cause,
                peak_members: row.peak_members,
                peak_at: row.peak_at,
                unique_members: row.unique_members,
                member_ms: row.member_ms,
                open_stays: row.open_stays,
                joined_at: row.joined_at,
                left_at: row.left_at,
                leave_type: row.leave_type,
                leave_reason: row.leave_reason,
                merged_gaps: row.merged_gaps,
                gap_ms: row.gap_ms,
            })
            .collect::<Vec<StateRow>>()
        };
    }
    let rows = match dialect {
        Dialect::Postgres => ledger_read!("src/store/apply/sql/ledger_read.sql"),
        Dialect::Citus => ledger_read!("src/store/apply/sql/ledger_read_citus.sql"),
    };
    let mut state = State::default();
    for row in rows {
        let stay = || -> Option<Stay> {
            Some(Stay {
                user: row.user_id.clone()?,
                joined_at: row.joined_at?,
                session_no: row.session_no?,
                left_at: row.left_at,
                leave_type: row.leave_type.clone(),
                leave_reason: row.leave_reason.clone(),
                merged_gaps: row.merged_gaps?,
                gap_ms: row.gap_ms?,
            })
        };
        match row.kind.as_str() {
            "room" => {
                let session = (|| {
                    Some(Session {
                        no: row.session_no?,
                        started_at: row.started_at?,
                        ended_at: row.ended_at,
                        end_cause: row.end_cause.clone(),
                        peak_members: row.peak_members?,
                        peak_at: row.peak_at?,
                        unique_members: row.unique_members?,
                        member_ms: row.member_ms?,
                        open_stays: row.open_stays?,
                    })
                })();
                let folded = row.ledger_at.zip(row.ledger_rank);
                let place = Place {
                    folded,
                    backfill: row.ledger_backfill.unwrap_or(false),
                    session,
                };
                state.places.insert((row.sdk_app_id, row.room_id), place);
            }
            "open" => {
                if let Some(stay) = stay() {
                    let key = (row.sdk_app_id, row.room_id.clone());
                    state.open.entry(key).or_default().push(stay);
                }
            }
            _ => {
                if let Some(stay) = stay() {
                    let key = (row.sdk_app_id, row.room_id.clone(), stay.user.clone());
                    state.stays.insert(key, stay);
                }
            }
        }
    }
    Ok(state)
}

/// The ledger's changes of a batch, one array per column, for `ledger_write`.
#[derive(Default)]
struct LedgerWrite {
    cut_apps: Vec<i64>,
    cut_rooms: Vec<String>,
    cut_from: Vec<i32>,
    s_apps: Vec<i64>,
    s_rooms: Vec<String>,
    s_users: Vec<String>,
    s_joined: Vec<DateTime<Utc>>,
    s_no: Vec<i32>,
    s_left: Vec<Option<DateTime<Utc>>>,
    s_type: Vec<Option<String>>,
    s_reason: Vec<Option<String>>,
    s_gaps: Vec<i32>,
    s_gap_ms: Vec<i64>,
    n_apps: Vec<i64>,
    n_rooms: Vec<String>,
    n_no: Vec<i32>,
    n_started: Vec<DateTime<Utc>>,
    n_ended: Vec<Option<DateTime<Utc>>>,
    n_cause: Vec<Option<String>>,
    n_peak: Vec<i32>,
    n_peak_at: Vec<DateTime<Utc>>,
    n_unique: Vec<i32>,
    n_member_ms: Vec<i64>,
    n_open: Vec<i32>,
    r_apps: Vec<i64>,
    r_rooms: Vec<String>,
    r_at: Vec<Option<DateTime<Utc>>>,
    r_rank: Vec<Option<i16>>,
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
    fn push(
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
    fn push_diff<'a>(
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

    /// Writes the changes: a refold's rows it no longer has deleted, then one statement,
    /// set-based on plain PostgreSQL when no room is cut, else row by row (`ledger_write`, one
    /// routed statement a row on Citus).
    async fn execute(self, conn: &mut PgConnection, dialect: Dialect) -> Result<(), sqlx::Error> {
        if !self.d_apps.is_empty() || !self.e_apps.is_empty() {
            // Disjoint from what is upserted next: a refold's rows it no longer has.
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
        if self.r_apps.is_empty() && self.cut_apps.is_empty() {
            return Ok(());
        }
        if self.cut_apps.is_empty() && dialect == Dialect::Postgres {
            // Nothing folded again: the set-based upserts, one statement.
            sqlx::query_file!(
                "src/store/apply/sql/ledger_write.sql",
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
            .execute(conn)
            .await?;
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
