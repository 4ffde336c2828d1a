//! The change feed's rows (`room_changes`, docs/feed.md), gathered while the batch applies
//! and written by its last statement, in the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Effects, Room, room_of};
use crate::callback::{Callback, Command, Event};

/// What changed, in the order a room's changes at one EventTime are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    RoomCreated,
    SessionStarted,
    MemberEntered,
    RoomUpdated,
    SeatsChanged,
    StaysRevised,
    MemberLeft,
    SessionEnded,
    RoomDestroyed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomCreated => "room.created",
            Self::SessionStarted => "session.started",
            Self::MemberEntered => "member.entered",
            Self::RoomUpdated => "room.updated",
            Self::SeatsChanged => "seats.changed",
            Self::StaysRevised => "stays.revised",
            Self::MemberLeft => "member.left",
            Self::SessionEnded => "session.ended",
            Self::RoomDestroyed => "room.destroyed",
        }
    }
}

/// Who made the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Callback,
    Reconcile,
    Rebuild,
}

impl Cause {
    fn of(callback: &Callback) -> Self {
        if callback.command == Command::Reconcile {
            Self::Reconcile
        } else {
            Self::Callback
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Callback => "callback",
            Self::Reconcile => "reconcile",
            Self::Rebuild => "rebuild",
        }
    }
}

/// How a transaction announces its changes (`NOTIFY_MODE`, docs/sql.md#listen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotifyMode {
    /// `room_members`: who entered and left, as before the feed.
    #[default]
    Members,
    /// `room_changes`: the newest `seq`, once per transaction.
    Wakeup,
    Off,
}

/// The changes of one transaction, keyed so that each room's come out in order and the
/// members of one kind at one time make one row.
#[derive(Default)]
pub(super) struct Feed<'a> {
    rows: BTreeMap<(Room<'a>, DateTime<Utc>, Kind), Vec<String>>,
    /// The history row and cause of each (room, EventTime) of the batch.
    sources: HashMap<(Room<'a>, DateTime<Utc>), (Option<i64>, Cause)>,
    /// When no callback of the batch has the time (a rebuild's diff): this cause.
    default_cause: Option<Cause>,
}

impl<'a> Feed<'a> {
    /// The batch's new callbacks with their history ids (`None` in a replay).
    pub(super) fn of(callbacks: &[(&'a Callback, Option<i64>)]) -> Self {
        let mut feed = Self::default();
        for (callback, id) in callbacks {
            let Some(room) = room_of(callback) else {
                continue;
            };
            let at = callback.event_time.to_datetime();
            let source = feed
                .sources
                .entry((room, at))
                .or_insert((*id, Cause::of(callback)));
            // Several callbacks at one time: the newest history row names them.
            source.0 = source.0.max(*id);
            let kind = match &callback.event {
                Event::CreateRoom { .. } => Kind::RoomCreated,
                Event::UpdateRoomInfo { .. } => Kind::RoomUpdated,
                Event::DestroyRoom => Kind::RoomDestroyed,
                _ => continue,
            };
            feed.rows.entry((room, at, kind)).or_default();
        }
        feed
    }

    /// A feed whose rows all have one cause and no history row (a rebuild's diff).
    pub(super) fn caused_by(cause: Cause) -> Self {
        Self {
            default_cause: Some(cause),
            ..Self::default()
        }
    }

    pub(super) fn add(&mut self, room: Room<'a>, at: DateTime<Utc>, kind: Kind, users: &[String]) {
        self.rows
            .entry((room, at, kind))
            .or_default()
            .extend(users.iter().cloned());
    }

    /// The members whose `in_room` the batch changed: the state before the batch against the
    /// state written.
    pub(super) fn members(&mut self, effects: &Effects<'a>) {
        for ((room, user), (at, announced)) in &effects.notices {
            let now = effects
                .states
                .get(&(*room, user.clone()))
                .map_or(*announced, |state| state.in_room);
            let before = effects.before.get(&(*room, user.clone())).copied();
            if before == Some(now) || (before.is_none() && !now) {
                continue;
            }
            let kind = if now {
                Kind::MemberEntered
            } else {
                Kind::MemberLeft
            };
            self.rows
                .entry((*room, *at, kind))
                .or_default()
                .push(user.clone());
        }
    }

    /// Writes the rows; the caller's transaction commits next (the head's row lock is held
    /// from here to the end of the commit: docs/feed.md#order).
    pub(super) async fn record(
        self,
        conn: &mut PgConnection,
        notify: NotifyMode,
    ) -> Result<Option<i64>, sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let n = self.rows.len();
        let (mut apps, mut rooms, mut kinds) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut users, mut counts, mut at, mut ids, mut causes) = (
            Vec::new(),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((room, time, kind), mut names) in self.rows {
            let (id, cause) = self
                .sources
                .get(&(room, time))
                .copied()
                .unwrap_or((None, self.default_cause.unwrap_or(Cause::Callback)));
            names.sort_unstable();
            names.dedup();
            apps.push(room.app);
            rooms.push(room.id);
            kinds.push(kind.as_str());
            counts.push(i32::try_from(names.len()).expect("a batch's members fit in i32"));
            users.extend(names);
            at.push(time);
            ids.push(id);
            causes.push(cause.as_str());
        }
        sqlx::query_file_scalar!(
            "src/store/apply/sql/record_changes.sql",
            &apps,
            &rooms as &[&str],
            &kinds as &[&str],
            &users,
            &counts,
            &at,
            &ids as &[Option<i64>],
            &causes as &[&str],
            notify == NotifyMode::Wakeup,
        )
        .fetch_one(conn)
        .await
    }
}
