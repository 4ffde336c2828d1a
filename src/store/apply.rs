//! One callback's effects, inside the caller's transaction.
//!
//! Every callback with a room first locks that room's `rooms` row; so all writes for one room
//! are serialized, whichever process makes them, and batches that lock rooms in sorted order
//! cannot deadlock. Member rows are updated incrementally when an event is the newest for the
//! member (the common case); otherwise the member is recomputed from the room's history with
//! the sequential fold of [`super::membership`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use super::membership::{self, MemberEvent, MemberState, RANK_ENTER, RANK_LEAVE};
use crate::callback::{Callback, Command, Event, MemberChange, Product, RoomInfo, Seat};
use crate::callback::{RECONCILE_COMMAND, RECONCILED, ROOM_DESTROYED};

const ENTER: &str = "Room.CallbackAfterMemberEnter";
const LEAVE: &str = "Room.CallbackAfterMemberLeave";
const DESTROY: &str = "Room.CallbackAfterDestroyRoom";
/// Live member events: `event_type` `Online` (an enter) or `Offline` (a leave whose
/// `leave_type` is the `EventCause`, kept in `reason`).
const LIVE_MEMBER: &str = "Live.CallbackAfterMemberStateChanged";
const LIVE_DESTROY: &str = "Live.CallbackAfterDestroyRoom";
/// Corrections: `event_type` `Enter`, `Leave` or `Destroy` act as those events.
const RECONCILE: &str = RECONCILE_COMMAND;

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const NOTIFY_MAX_PAYLOAD: usize = 7999;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First delivery: the new `room_events.id`.
    Stored { id: i64 },
    /// Identical to a callback already stored: nothing changed.
    Duplicate,
}

#[derive(Clone, Copy)]
struct Room<'a> {
    app: i64,
    id: &'a str,
}

/// Stores a batch of callbacks in history and applies their effects, each exactly once. One
/// statement locks every room of the batch, in one global order (so concurrent batches, from
/// any process, cannot deadlock); enters and leaves then take one statement each.
pub async fn apply_batch(
    conn: &mut PgConnection,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let last_destroys = lock_rooms(conn, callbacks).await?;
    let mut outcomes = Vec::with_capacity(callbacks.len());
    for callback in callbacks {
        let at = callback.event_time.to_datetime();
        // Commands without a room, and commands roomsync does not know, touch only history.
        let Some(room_id) = callback
            .room_id
            .as_ref()
            .filter(|_| callback.event.changes_state())
        else {
            let id = insert_event(conn, callback, at).await?;
            outcomes.push(id.map_or(Outcome::Duplicate, |id| Outcome::Stored { id }));
            continue;
        };
        let room = Room {
            app: callback.sdk_app_id.get(),
            id: room_id.as_str(),
        };
        let last_destroy_at = last_destroys.get(&(room.app, room.id)).copied().flatten();
        let outcome = match &callback.event {
            Event::MemberEnter(change) => {
                member_event(conn, callback, room, change, Some(last_destroy_at)).await?
            }
            Event::MemberLeave(change) => member_event(conn, callback, room, change, None).await?,
            _ => match insert_event(conn, callback, at).await? {
                None => Outcome::Duplicate,
                Some(id) => {
                    apply_effects(conn, callback, room, last_destroy_at, Notify::Yes).await?;
                    Outcome::Stored { id }
                }
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Locks (creating if needed) the rows of every room in the batch, in (app, room) order, and
/// makes the idempotent bumps (a duplicate changes nothing); returns each room's newest destroy
/// known now (in this batch or before), a hint that an enter may be ended again.
async fn lock_rooms<'a>(
    conn: &mut PgConnection,
    callbacks: &[&'a Callback],
) -> Result<HashMap<(i64, &'a str), Option<DateTime<Utc>>>, sqlx::Error> {
    // One row per room: the statement may not touch a row twice.
    let mut rooms: BTreeMap<(i64, &str), [DateTime<Utc>; 3]> = BTreeMap::new();
    for callback in callbacks {
        let Some(room_id) = callback
            .room_id
            .as_ref()
            .filter(|_| callback.event.changes_state())
        else {
            continue;
        };
        let at = callback.event_time.to_datetime();
        // The epoch stands for "none": EventTime is always after it.
        let revive = if matches!(
            callback.event,
            Event::MemberEnter(_) | Event::CreateRoom { .. }
        ) {
            at
        } else {
            DateTime::UNIX_EPOCH
        };
        let destroy = if matches!(callback.event, Event::DestroyRoom) {
            at
        } else {
            DateTime::UNIX_EPOCH
        };
        let slot = rooms
            .entry((callback.sdk_app_id.get(), room_id.as_str()))
            .or_insert([at, DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH]);
        slot[0] = slot[0].max(at);
        slot[1] = slot[1].max(revive);
        slot[2] = slot[2].max(destroy);
    }
    if rooms.is_empty() {
        return Ok(HashMap::new());
    }
    let apps: Vec<i64> = rooms.keys().map(|(app, _)| *app).collect();
    let ids: Vec<String> = rooms.keys().map(|(_, id)| (*id).to_owned()).collect();
    let column = |i: usize| rooms.values().map(|times| times[i]).collect::<Vec<_>>();
    let (last, revive, destroy) = (column(0), column(1), column(2));
    let locked = sqlx::query!(
        r#"INSERT INTO rooms AS r (sdk_app_id, room_id, last_event_at, last_revive_at, last_destroy_at)
           SELECT a, id, e, NULLIF(v, 'epoch'), NULLIF(d, 'epoch')
           FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
                AS t(a, id, e, v, d)
           ORDER BY a, id
           ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
               last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
               last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
               last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at)
           RETURNING sdk_app_id, room_id, last_destroy_at"#,
        &apps,
        &ids,
        &last,
        &revive,
        &destroy,
    )
    .fetch_all(&mut *conn)
    .await?;
    // Rooms start as TUIRoomKit rooms; a Live callback makes its room a Live room (a seat
    // change alone says neither).
    let live: Vec<(i64, &str)> = callbacks
        .iter()
        .filter(|c| c.command.product() == Some(Product::Live) && c.event.changes_state())
        .filter_map(|c| Some((c.sdk_app_id.get(), c.room_id.as_ref()?.as_str())))
        .collect();
    if !live.is_empty() {
        mark_live(conn, &live).await?;
    }
    let mut out = HashMap::with_capacity(locked.len());
    for row in locked {
        if let Some(key) = rooms
            .keys()
            .find(|(app, id)| *app == row.sdk_app_id && *id == row.room_id)
        {
            out.insert(*key, row.last_destroy_at);
        }
    }
    Ok(out)
}

/// `rooms.product = 'Live'` for these (locked) rooms.
async fn mark_live(conn: &mut PgConnection, rooms: &[(i64, &str)]) -> Result<(), sqlx::Error> {
    let apps: Vec<i64> = rooms.iter().map(|(app, _)| *app).collect();
    let ids: Vec<&str> = rooms.iter().map(|(_, id)| *id).collect();
    sqlx::query!(
        r#"UPDATE rooms r SET product = 'Live'
           FROM UNNEST($1::int8[], $2::text[]) AS t(a, id)
           WHERE r.sdk_app_id = t.a AND r.room_id = t.id AND r.product <> 'Live'"#,
        &apps,
        &ids as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An enter (`last_destroy_at` given) or a leave: the history row, `member_count` and the
/// members' rows in one statement; late members recomputed; then NOTIFY.
async fn member_event(
    conn: &mut PgConnection,
    callback: &Callback,
    room: Room<'_>,
    change: &MemberChange,
    enter_after: Option<Option<DateTime<Utc>>>,
) -> Result<Outcome, sqlx::Error> {
    let at = callback.event_time.to_datetime();
    let users = user_ids(change);
    let as_sent: Vec<String> = change
        .members
        .iter()
        .map(|m| m.as_str().to_owned())
        .collect();
    let (id, applied, in_room) = match enter_after {
        Some(last_destroy_at) => {
            // The first destroy at or after this enter ends it again (docs/semantics.md#destroy).
            let ended_by = match last_destroy_at {
                Some(d) if d >= at => first_destroy_since(conn, room, at).await?,
                _ => None,
            };
            let (ended_at, exit) = ended_by.unzip();
            let row = sqlx::query!(
                r#"WITH ev AS (
                       INSERT INTO room_events
                           (sdk_app_id, callback_command, room_id, operator_account, event_type,
                            member_list, member_count, reason, event_at, client_ip, opt_platform,
                            payload, dedup_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $16, $8, $9, $10, $11::text::jsonb, $12)
                       ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
                       RETURNING id
                   ), counted AS (
                       UPDATE rooms SET member_count = $7, member_count_at = $8, member_count_rank = 0
                       WHERE sdk_app_id = $1 AND room_id = $3 AND $7::int4 IS NOT NULL
                         AND EXISTS (SELECT 1 FROM ev)
                         AND (member_count_at IS NULL
                              OR (member_count_at, member_count_rank, member_count) < ($8, 0::int2, $7))
                   ), applied AS (
                       INSERT INTO room_members AS m
                           (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                            last_event_at, last_event_rank)
                       SELECT $1, $3, u, $14::timestamptz IS NULL, $8, $14, $15, $8, 0
                       FROM UNNEST($13::text[]) AS t(u)
                       WHERE EXISTS (SELECT 1 FROM ev)
                       ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
                           in_room = EXCLUDED.in_room,
                           entered_at = EXCLUDED.entered_at,
                           left_at = COALESCE(EXCLUDED.left_at, m.left_at),
                           leave_type = COALESCE(EXCLUDED.leave_type, m.leave_type),
                           last_event_at = EXCLUDED.last_event_at,
                           last_event_rank = 0
                       WHERE (m.last_event_at, m.last_event_rank) <= (EXCLUDED.last_event_at, 0::smallint)
                       RETURNING user_id
                   )
                   SELECT (SELECT id FROM ev) AS id, ARRAY(SELECT user_id FROM applied) AS "applied!""#,
                room.app,
                callback.command.as_str(),
                room.id,
                callback.operator.as_deref(),
                callback.event_type(),
                &as_sent,
                change.member_count,
                at,
                callback.meta.client_ip.as_deref(),
                callback.meta.opt_platform.as_deref(),
                callback.payload.as_str(),
                &callback.dedup_key[..],
                &users,
                ended_at,
                exit,
                callback.history_reason(),
            )
            .fetch_one(&mut *conn)
            .await?;
            (row.id, row.applied, ended_at.is_none())
        }
        None => {
            // At equal time two leaves are ordered by (Type, Reason), as in membership::fold.
            let row = sqlx::query!(
                r#"WITH ev AS (
                       INSERT INTO room_events
                           (sdk_app_id, callback_command, room_id, operator_account, event_type,
                            member_list, member_count, reason, event_at, client_ip, opt_platform,
                            payload, dedup_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $16, $8, $9, $10, $11::text::jsonb, $12)
                       ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
                       RETURNING id
                   ), counted AS (
                       UPDATE rooms SET member_count = $7, member_count_at = $8, member_count_rank = 1
                       WHERE sdk_app_id = $1 AND room_id = $3 AND $7::int4 IS NOT NULL
                         AND EXISTS (SELECT 1 FROM ev)
                         AND (member_count_at IS NULL
                              OR (member_count_at, member_count_rank, member_count) < ($8, 1::int2, $7))
                   ), applied AS (
                       INSERT INTO room_members AS m
                           (sdk_app_id, room_id, user_id, in_room, left_at, leave_type, leave_reason,
                            last_event_at, last_event_rank)
                       SELECT $1, $3, u, false, $8, $15, $14, $8, 1
                       FROM UNNEST($13::text[]) AS t(u)
                       WHERE EXISTS (SELECT 1 FROM ev)
                       ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
                           in_room = false,
                           left_at = EXCLUDED.left_at,
                           leave_type = EXCLUDED.leave_type,
                           leave_reason = EXCLUDED.leave_reason,
                           last_event_at = EXCLUDED.last_event_at,
                           last_event_rank = 1
                       WHERE (m.last_event_at, m.last_event_rank) < (EXCLUDED.last_event_at, 1::smallint)
                          OR ((m.last_event_at, m.last_event_rank) = (EXCLUDED.last_event_at, 1::smallint)
                              AND (COALESCE(m.leave_type, '') COLLATE "C", COALESCE(m.leave_reason, '') COLLATE "C")
                               <= (COALESCE(EXCLUDED.leave_type, '') COLLATE "C", COALESCE(EXCLUDED.leave_reason, '') COLLATE "C"))
                       RETURNING user_id
                   )
                   SELECT (SELECT id FROM ev) AS id, ARRAY(SELECT user_id FROM applied) AS "applied!""#,
                room.app,
                callback.command.as_str(),
                room.id,
                callback.operator.as_deref(),
                callback.event_type(),
                &as_sent,
                change.member_count,
                at,
                callback.meta.client_ip.as_deref(),
                callback.meta.opt_platform.as_deref(),
                callback.payload.as_str(),
                &callback.dedup_key[..],
                &users,
                change.reason.as_deref(),
                callback.exit_type(),
                callback.history_reason(),
            )
            .fetch_one(&mut *conn)
            .await?;
            (row.id, row.applied, false)
        }
    };
    let Some(id) = id else {
        return Ok(Outcome::Duplicate);
    };
    let mut changes = Changes::new(room, at);
    changes.add(applied, in_room);
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    changes.notify(conn).await?;
    Ok(Outcome::Stored { id })
}

/// Applies a stored callback's effects again, without history or notifications (rebuild).
pub async fn replay_callback(
    conn: &mut PgConnection,
    callback: &Callback,
) -> Result<(), sqlx::Error> {
    let Some(id) = callback
        .room_id
        .as_ref()
        .filter(|_| callback.event.changes_state())
    else {
        return Ok(());
    };
    let room = Room {
        app: callback.sdk_app_id.get(),
        id: id.as_str(),
    };
    let at = callback.event_time.to_datetime();
    let last_destroy_at = lock_room(conn, room, at, &callback.event).await?;
    if callback.command.product() == Some(Product::Live) {
        mark_live(conn, &[(room.app, room.id)]).await?;
    }
    apply_effects(conn, callback, room, last_destroy_at, Notify::No).await
}

/// Whether membership changes are announced with NOTIFY.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Notify {
    Yes,
    No,
}

async fn apply_effects(
    conn: &mut PgConnection,
    callback: &Callback,
    room: Room<'_>,
    last_destroy_at: Option<DateTime<Utc>>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let at = callback.event_time.to_datetime();
    match &callback.event {
        Event::MemberEnter(change) => {
            set_member_count(conn, room, at, RANK_ENTER, change).await?;
            enter(conn, room, at, change, last_destroy_at, notify).await?;
        }
        Event::MemberLeave(change) => {
            set_member_count(conn, room, at, RANK_LEAVE, change).await?;
            leave(conn, room, at, change, callback.exit_type(), notify).await?;
        }
        Event::DestroyRoom => {
            let exit = callback.exit_type().unwrap_or(ROOM_DESTROYED);
            destroy(conn, room, at, exit, notify).await?
        }
        Event::CreateRoom { info, .. } => merge_room_info(conn, room, at, info, true).await?,
        Event::UpdateRoomInfo { info } => merge_room_info(conn, room, at, info, false).await?,
        Event::SeatInfoChanged { seats } => {
            // A destroy at or after this change has already cleared the seats.
            if last_destroy_at.is_none_or(|d| d < at) {
                change_seats(conn, room, at, seats).await?;
                // A correction is Tencent's whole list: seats it does not list are gone.
                if callback.command == Command::Reconcile {
                    remove_unlisted_seats(conn, room, at, seats).await?;
                }
            }
        }
        Event::Other => {}
    }
    Ok(())
}

/// Locks (creating if needed) the room row; returns the newest destroy seen so far.
async fn lock_room(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    event: &Event,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let revive = matches!(event, Event::MemberEnter(_) | Event::CreateRoom { .. }).then_some(at);
    let destroy = matches!(event, Event::DestroyRoom).then_some(at);
    sqlx::query_scalar!(
        r#"INSERT INTO rooms AS r (sdk_app_id, room_id, last_event_at, last_revive_at, last_destroy_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
               last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
               last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
               last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at)
           RETURNING last_destroy_at"#,
        room.app,
        room.id,
        at,
        revive,
        destroy,
    )
    .fetch_one(conn)
    .await
}

/// Inserts the history row; `None` when an identical callback is already there.
async fn insert_event(
    conn: &mut PgConnection,
    callback: &Callback,
    at: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let change = callback.member_change();
    let members: Vec<String> = change
        .map(|c| c.members.iter().map(|m| m.as_str().to_owned()).collect())
        .unwrap_or_default();
    sqlx::query_scalar!(
        r#"INSERT INTO room_events
               (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
                member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb, $13)
           ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
           RETURNING id"#,
        callback.sdk_app_id.get(),
        callback.command.as_str(),
        callback.room_id.as_ref().map(|r| r.as_str()),
        callback.operator.as_deref(),
        callback.event_type(),
        &members,
        change.and_then(|c| c.member_count),
        callback.history_reason(),
        at,
        callback.meta.client_ip.as_deref(),
        callback.meta.opt_platform.as_deref(),
        callback.payload.as_str(),
        &callback.dedup_key[..],
    )
    .fetch_optional(conn)
    .await
}

/// `rooms.member_count` follows the newest member event (ties: the larger count).
async fn set_member_count(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    rank: i16,
    change: &MemberChange,
) -> Result<(), sqlx::Error> {
    let Some(count) = change.member_count else {
        return Ok(());
    };
    sqlx::query!(
        r#"UPDATE rooms SET member_count = $3, member_count_at = $4, member_count_rank = $5
           WHERE sdk_app_id = $1 AND room_id = $2
             AND (member_count_at IS NULL
                  OR (member_count_at, member_count_rank, member_count) < ($4, $5, $3))"#,
        room.app,
        room.id,
        count,
        at,
        rank,
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn enter(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    change: &MemberChange,
    last_destroy_at: Option<DateTime<Utc>>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let users = user_ids(change);
    // The first destroy at or after this enter ends it again (docs/semantics.md#destroy).
    let ended_by = match last_destroy_at {
        Some(d) if d >= at => first_destroy_since(conn, room, at).await?,
        _ => None,
    };
    let (ended_at, exit) = ended_by.unzip();
    let applied = sqlx::query_scalar!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                last_event_at, last_event_rank)
           SELECT $1, $2, u, $4::timestamptz IS NULL, $3, $4, $6, $3, 0
           FROM UNNEST($5::text[]) AS t(u)
           ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
               in_room = EXCLUDED.in_room,
               entered_at = EXCLUDED.entered_at,
               left_at = COALESCE(EXCLUDED.left_at, m.left_at),
               leave_type = COALESCE(EXCLUDED.leave_type, m.leave_type),
               last_event_at = EXCLUDED.last_event_at,
               last_event_rank = 0
           WHERE (m.last_event_at, m.last_event_rank) <= (EXCLUDED.last_event_at, 0::smallint)
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        ended_at,
        &users,
        exit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = Changes::new(room, at);
    changes.add(applied, ended_at.is_none());
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}

async fn leave(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    change: &MemberChange,
    exit: Option<&str>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let users = user_ids(change);
    // At equal time two leaves are ordered by (Type, Reason), as in membership::fold.
    let applied = sqlx::query_scalar!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, left_at, leave_type, leave_reason,
                last_event_at, last_event_rank)
           SELECT $1, $2, u, false, $3, $4, $5, $3, 1
           FROM UNNEST($6::text[]) AS t(u)
           ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
               in_room = false,
               left_at = EXCLUDED.left_at,
               leave_type = EXCLUDED.leave_type,
               leave_reason = EXCLUDED.leave_reason,
               last_event_at = EXCLUDED.last_event_at,
               last_event_rank = 1
           WHERE (m.last_event_at, m.last_event_rank) < (EXCLUDED.last_event_at, 1::smallint)
              OR ((m.last_event_at, m.last_event_rank) = (EXCLUDED.last_event_at, 1::smallint)
                  AND (COALESCE(m.leave_type, '') COLLATE "C", COALESCE(m.leave_reason, '') COLLATE "C")
                   <= (COALESCE(EXCLUDED.leave_type, '') COLLATE "C", COALESCE(EXCLUDED.leave_reason, '') COLLATE "C"))
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        exit,
        change.reason.as_deref(),
        &users,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = Changes::new(room, at);
    changes.add(applied, false);
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}

async fn destroy(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    exit: &str,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    // Members whose newest event is an enter before this destroy, and who are in the room or
    // were ended by a later destroy: this one ends them (docs/semantics.md#destroy).
    let ended = sqlx::query_scalar!(
        r#"UPDATE room_members SET in_room = false, left_at = $3, leave_type = $4
           WHERE sdk_app_id = $1 AND room_id = $2
             AND last_event_rank = 0 AND last_event_at <= $3
             AND (in_room
                  OR (leave_type IN ($5, $6)
                      AND (left_at > $3
                           -- At one time a destroy callback goes before a correction.
                           OR (left_at = $3 AND leave_type = $6 AND $4 = $5))))
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        exit,
        ROOM_DESTROYED,
        RECONCILED,
    )
    .fetch_all(&mut *conn)
    .await?;
    // Members who entered again after this destroy: it may be the latest exit before that
    // enter, which only their history tells. An exit by a later destroy can be superseded too
    // (this earlier destroy may have ended the membership first).
    let later = sqlx::query_scalar!(
        r#"SELECT user_id FROM room_members
           WHERE sdk_app_id = $1 AND room_id = $2 AND in_room AND last_event_at > $3
             AND (left_at IS NULL OR left_at <= $3 OR leave_type IN ($4, $5))"#,
        room.app,
        room.id,
        at,
        ROOM_DESTROYED,
        RECONCILED,
    )
    .fetch_all(&mut *conn)
    .await?;
    // Seats end with the room; changes older than this destroy stay out (see apply_effects).
    sqlx::query!(
        r#"DELETE FROM room_seats
           WHERE sdk_app_id = $1 AND room_id = $2 AND last_event_at <= $3"#,
        room.app,
        room.id,
        at,
    )
    .execute(&mut *conn)
    .await?;
    let mut changes = Changes::new(room, at);
    changes.add(ended, false);
    changes.recompute(conn, later).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}

/// The first destroy (callback or correction) at or after `at`, and the exit it gives.
async fn first_destroy_since(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, &'static str)>, sqlx::Error> {
    let first = sqlx::query!(
        r#"SELECT event_at, callback_command = $4 AS "reconciled!" FROM room_events
           WHERE sdk_app_id = $1 AND room_id = $2 AND event_at >= $3
             AND (callback_command IN ($5, $6) OR (callback_command = $4 AND event_type = 'Destroy'))
           ORDER BY event_at, callback_command = $4
           LIMIT 1"#,
        room.app,
        room.id,
        at,
        RECONCILE,
        DESTROY,
        LIVE_DESTROY,
    )
    .fetch_optional(conn)
    .await?;
    // At one time a destroy callback applies before a correction (the fold's order).
    Ok(first.map(|row| (row.event_at, exit_of(row.reconciled))))
}

fn exit_of(reconciled: bool) -> &'static str {
    if reconciled {
        RECONCILED
    } else {
        ROOM_DESTROYED
    }
}

/// Recomputes members from the room's history (late or reordered events): one read of the
/// room's events that name any of them, the fold per member in memory, one write for all, so a
/// late event of 10,000 members costs a few statements, not 10,000 round trips.
async fn recompute_members(
    conn: &mut PgConnection,
    room: Room<'_>,
    users: &[String],
) -> Result<Vec<(String, MemberState)>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"SELECT callback_command, event_at, event_type, reason, member_list FROM room_events
           WHERE sdk_app_id = $1 AND room_id = $2
             AND (callback_command IN ($3, $9)
                  OR (callback_command = $7 AND event_type = 'Destroy')
                  OR (callback_command IN ($4, $5, $7, $8) AND member_list && $6::text[]))"#,
        room.app,
        room.id,
        DESTROY,
        ENTER,
        LEAVE,
        users,
        RECONCILE,
        LIVE_MEMBER,
        LIVE_DESTROY,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut destroys = Vec::new();
    let mut events: HashMap<&str, Vec<MemberEvent>> =
        users.iter().map(|u| (u.as_str(), Vec::new())).collect();
    for row in &rows {
        let at = row.event_at;
        let event = match (row.callback_command.as_str(), row.event_type.as_deref()) {
            (ENTER, _) | (RECONCILE, Some("Enter")) | (LIVE_MEMBER, Some("Online")) => {
                MemberEvent::Enter { at }
            }
            (LIVE_MEMBER, _) => MemberEvent::Leave {
                at,
                kind: row.reason.clone(),
                reason: None,
            },
            (LEAVE, _) => MemberEvent::Leave {
                at,
                kind: row.event_type.clone(),
                reason: row.reason.clone(),
            },
            (RECONCILE, Some("Leave")) => MemberEvent::Leave {
                at,
                kind: Some(RECONCILED.to_owned()),
                reason: row.reason.clone(),
            },
            (command, _) => {
                let exit = exit_of(command == RECONCILE);
                destroys.push(MemberEvent::Destroy { at, exit });
                continue;
            }
        };
        // A list may name a member twice; the fold treats a repeated event as one anyway.
        for member in &row.member_list {
            if let Some(list) = events.get_mut(member.as_str()) {
                list.push(event.clone());
            }
        }
    }
    let states: Vec<(String, MemberState)> = users
        .iter()
        .filter_map(|user| {
            let mut own = events.remove(user.as_str()).unwrap_or_default();
            own.extend(destroys.iter().cloned());
            membership::fold(own).map(|state| (user.clone(), state))
        })
        .collect();
    write_members(conn, room, &states).await?;
    Ok(states)
}

/// Writes members' whole state (recompute and rebuild), all in one statement.
async fn write_members(
    conn: &mut PgConnection,
    room: Room<'_>,
    states: &[(String, MemberState)],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&MemberState) -> Option<DateTime<Utc>>| {
        states.iter().map(|(_, s)| f(s)).collect::<Vec<_>>()
    };
    let text = |f: fn(&MemberState) -> Option<&str>| {
        states
            .iter()
            .map(|(_, s)| f(s).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let users: Vec<&str> = states.iter().map(|(u, _)| u.as_str()).collect();
    let in_room: Vec<bool> = states.iter().map(|(_, s)| s.in_room).collect();
    let last_at: Vec<DateTime<Utc>> = states.iter().map(|(_, s)| s.last_event_at).collect();
    let rank: Vec<i16> = states.iter().map(|(_, s)| s.last_event_rank).collect();
    sqlx::query!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                leave_reason, last_event_at, last_event_rank)
           SELECT $1, $2, u, i, e, l, lt, lr, la, lk
           FROM UNNEST($3::text[], $4::bool[], $5::timestamptz[], $6::timestamptz[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::int2[])
                AS t(u, i, e, l, lt, lr, la, lk)
           ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
               in_room = EXCLUDED.in_room, entered_at = EXCLUDED.entered_at,
               left_at = EXCLUDED.left_at, leave_type = EXCLUDED.leave_type,
               leave_reason = EXCLUDED.leave_reason, last_event_at = EXCLUDED.last_event_at,
               last_event_rank = EXCLUDED.last_event_rank"#,
        room.app,
        room.id,
        &users as &[&str],
        &in_room,
        &column(|s| s.entered_at) as &[Option<DateTime<Utc>>],
        &column(|s| s.left_at) as &[Option<DateTime<Utc>>],
        &text(|s| s.leave_type.as_deref()) as &[Option<String>],
        &text(|s| s.leave_reason.as_deref()) as &[Option<String>],
        &last_at,
        &rank,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Merges the fields present into `room_info`; per field, the newest event wins.
async fn merge_room_info(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    info: &RoomInfo,
    is_create: bool,
) -> Result<(), sqlx::Error> {
    let current = sqlx::query!(
        r#"SELECT room_info, room_info_versions FROM rooms WHERE sdk_app_id = $1 AND room_id = $2"#,
        room.app,
        room.id,
    )
    .fetch_one(&mut *conn)
    .await?;
    let (merged, versions) = merge_fields(
        current.room_info,
        current.room_info_versions,
        info,
        at.timestamp_millis(),
    );
    let text = |key: &str| merged.text(key).map(str::to_owned);
    let max_members = merged
        .integer("MaxMemberCount")
        .and_then(|n| i32::try_from(n).ok());
    sqlx::query!(
        r#"UPDATE rooms SET
               room_info = $3, room_info_versions = $4, room_name = $5, room_type = $6,
               owner_account = $7, max_member_count = $8,
               created_at = CASE WHEN $9 THEN GREATEST(created_at, $10) ELSE created_at END
           WHERE sdk_app_id = $1 AND room_id = $2"#,
        room.app,
        room.id,
        Value::Object(merged.fields.clone()),
        Value::Object(versions),
        text("RoomName"),
        text("RoomType"),
        text("Owner_Account"),
        max_members,
        is_create,
        at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Field-by-field merge. A field's version is the EventTime (ms) that set it; at equal
/// versions the larger JSON text wins, so arrival order never matters.
fn merge_fields(
    current: Option<Value>,
    versions: Value,
    info: &RoomInfo,
    at_ms: i64,
) -> (RoomInfo, Map<String, Value>) {
    let mut merged = match current {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let mut versions = match versions {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (key, value) in &info.fields {
        let newer = match versions.get(key).and_then(Value::as_i64) {
            None => true,
            Some(v) if v < at_ms => true,
            Some(v) if v == at_ms => merged
                .get(key)
                .is_none_or(|old| value.to_string().cmp(&old.to_string()).is_ge()),
            Some(_) => false,
        };
        if newer {
            merged.insert(key.clone(), value.clone());
            versions.insert(key.clone(), json!(at_ms));
        }
    }
    (RoomInfo { fields: merged }, versions)
}

async fn change_seats(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    seats: &[Seat],
) -> Result<(), sqlx::Error> {
    let index: Vec<i32> = seats.iter().map(|s| s.index).collect();
    // '' stands for a free seat in the array (NULLIF below); ids are never empty.
    let member: Vec<String> = seats
        .iter()
        .map(|s| s.member.as_ref().map_or("", |m| m.as_str()).to_owned())
        .collect();
    let taken: Vec<bool> = seats.iter().map(|s| s.is_taken_disabled).collect();
    let video: Vec<bool> = seats.iter().map(|s| s.is_video_disabled).collect();
    let audio: Vec<bool> = seats.iter().map(|s| s.is_audio_disabled).collect();
    sqlx::query!(
        r#"INSERT INTO room_seats AS s
               (sdk_app_id, room_id, seat_index, member_account, is_taken_disabled,
                is_video_disabled, is_audio_disabled, last_event_at)
           SELECT $1, $2, i, NULLIF(m, ''), tk, vd, ad, $3
           FROM UNNEST($4::int4[], $5::text[], $6::bool[], $7::bool[], $8::bool[]) AS t(i, m, tk, vd, ad)
           ON CONFLICT (sdk_app_id, room_id, seat_index) DO UPDATE SET
               member_account = EXCLUDED.member_account,
               is_taken_disabled = EXCLUDED.is_taken_disabled,
               is_video_disabled = EXCLUDED.is_video_disabled,
               is_audio_disabled = EXCLUDED.is_audio_disabled,
               last_event_at = EXCLUDED.last_event_at
           WHERE s.last_event_at <= EXCLUDED.last_event_at"#,
        room.app,
        room.id,
        at,
        &index,
        &member,
        &taken,
        &video,
        &audio,
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn remove_unlisted_seats(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    seats: &[Seat],
) -> Result<(), sqlx::Error> {
    let listed: Vec<i32> = seats.iter().map(|s| s.index).collect();
    sqlx::query!(
        r#"DELETE FROM room_seats
           WHERE sdk_app_id = $1 AND room_id = $2 AND last_event_at <= $3
             AND seat_index <> ALL($4::int4[])"#,
        room.app,
        room.id,
        at,
        &listed,
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn user_ids(change: &MemberChange) -> Vec<String> {
    change
        .distinct_members()
        .into_iter()
        .map(|m| m.as_str().to_owned())
        .collect()
}

fn missing(users: &[String], changes: &Changes<'_>) -> Vec<String> {
    users
        .iter()
        .filter(|u| !changes.contains(u))
        .cloned()
        .collect()
}

/// Members whose row changed in this callback, for `NOTIFY room_members`.
struct Changes<'a> {
    room: Room<'a>,
    at: DateTime<Utc>,
    entered: Vec<String>,
    left: Vec<String>,
}

impl<'a> Changes<'a> {
    fn new(room: Room<'a>, at: DateTime<Utc>) -> Self {
        Self {
            room,
            at,
            entered: Vec::new(),
            left: Vec::new(),
        }
    }

    fn add(&mut self, users: Vec<String>, in_room: bool) {
        if in_room {
            &mut self.entered
        } else {
            &mut self.left
        }
        .extend(users);
    }

    fn contains(&self, user: &str) -> bool {
        self.entered.iter().chain(&self.left).any(|u| u == user)
    }

    async fn recompute(
        &mut self,
        conn: &mut PgConnection,
        users: Vec<String>,
    ) -> Result<(), sqlx::Error> {
        for (user, state) in recompute_members(conn, self.room, &users).await? {
            self.add(vec![user], state.in_room);
        }
        Ok(())
    }

    /// One NOTIFY per direction, split to stay under PostgreSQL's payload limit. Delivered by
    /// PostgreSQL at commit, so listeners never see a change that was rolled back.
    async fn notify(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let payloads = self.payloads();
        if !payloads.is_empty() {
            sqlx::query!(
                "SELECT pg_notify('room_members', p) FROM UNNEST($1::text[]) AS t(p)",
                &payloads
            )
            .execute(conn)
            .await?;
        }
        Ok(())
    }

    /// The payloads, each under [`NOTIFY_MAX_PAYLOAD`] bytes as encoded: sizes are those of
    /// the JSON text (an escaped byte takes up to six), room id included. At the bounds of
    /// the ids (256 bytes, every byte escaped) one payload holds at least four users.
    fn payloads(&self) -> Vec<String> {
        let event_at = self.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut payloads = Vec::new();
        for (users, in_room) in [(&self.entered, true), (&self.left, false)] {
            let empty = self.payload(&[], in_room, &event_at).len();
            let mut chunk: Vec<&str> = Vec::new();
            let mut size = empty;
            for user in users.iter() {
                // The user's JSON string, and a comma unless it is the first.
                let cost = json_string_len(user) + usize::from(!chunk.is_empty());
                if size + cost > NOTIFY_MAX_PAYLOAD && !chunk.is_empty() {
                    payloads.push(self.payload(&chunk, in_room, &event_at));
                    chunk.clear();
                    size = empty;
                    size += json_string_len(user);
                } else {
                    size += cost;
                }
                chunk.push(user);
            }
            if !chunk.is_empty() {
                payloads.push(self.payload(&chunk, in_room, &event_at));
            }
        }
        payloads
    }

    fn payload(&self, users: &[&str], in_room: bool, event_at: &str) -> String {
        json!({
            "sdk_app_id": self.room.app,
            "room_id": self.room.id,
            "user_ids": users,
            "in_room": in_room,
            "event_at": event_at,
        })
        .to_string()
    }
}

/// Length of `text` as a JSON string literal, quotes included.
fn json_string_len(text: &str) -> usize {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, text).expect("counting cannot fail");
    counter.0
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fields: Value) -> RoomInfo {
        RoomInfo {
            fields: fields.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn newest_field_wins_whatever_the_order() {
        let a = info(json!({"RoomName": "a", "MaxMemberCount": 10}));
        let b = info(json!({"RoomName": "b"}));
        let (m1, v1) = merge_fields(None, json!({}), &a, 100);
        let (m1, _) = merge_fields(Some(Value::Object(m1.fields)), Value::Object(v1), &b, 200);
        let (m2, v2) = merge_fields(None, json!({}), &b, 200);
        let (m2, _) = merge_fields(Some(Value::Object(m2.fields)), Value::Object(v2), &a, 100);
        assert_eq!(m1, m2);
        assert_eq!(m1.text("RoomName"), Some("b"));
        assert_eq!(m1.integer("MaxMemberCount"), Some(10));
    }

    #[test]
    fn notify_payloads_stay_under_the_limit_at_the_worst_case() {
        // The worst case of the bounds: 256-byte ids whose every byte is escaped (\u0001).
        let worst = |i: usize| {
            let mut id = format!("{i:05}");
            id.extend(std::iter::repeat_n('\u{1}', 251));
            id
        };
        let room_id: String = std::iter::repeat_n('\u{1f}', 256).collect();
        let mut changes = Changes::new(
            Room {
                app: i64::MAX,
                id: &room_id,
            },
            DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        );
        changes.add((0..10_000).map(worst).collect(), true);
        changes.add(vec![r#"q"00001"#.to_owned(), "plain".into()], false);
        let payloads = changes.payloads();
        let mut seen = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000, "{} bytes", payload.len());
            let value: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(value["room_id"], json!(room_id));
            for user in value["user_ids"].as_array().unwrap() {
                seen.push((user.as_str().unwrap().to_owned(), value["in_room"].clone()));
            }
        }
        assert_eq!(seen.len(), 10_002, "every user announced once");
        // Four such users fit in one payload; the leaves take one more.
        assert_eq!(payloads.len(), 10_000 / 4 + 1, "chunks are filled");
        assert_eq!(seen[10_000], (r#"q"00001"#.to_owned(), json!(false)));
    }

    #[test]
    fn equal_versions_are_ordered_by_value() {
        let a = info(json!({"RoomName": "a"}));
        let b = info(json!({"RoomName": "b"}));
        let (m, v) = merge_fields(None, json!({}), &b, 5);
        let (m, _) = merge_fields(Some(Value::Object(m.fields)), Value::Object(v), &a, 5);
        assert_eq!(m.text("RoomName"), Some("b"));
    }
}
