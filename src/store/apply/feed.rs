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
        self.into_rows().record(conn, notify).await
    }

    /// The rows as one array per column (a batch's last statement writes them).
    pub(super) fn into_rows(self) -> FeedRows<'a> {
        let n = self.rows.len();
        let mut rows = FeedRows {
            apps: Vec::with_capacity(n),
            rooms: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            users: Vec::new(),
            counts: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            causes: Vec::with_capacity(n),
        };
        for ((room, time, kind), mut names) in self.rows {
            let (id, cause) = self
                .sources
                .get(&(room, time))
                .copied()
                .unwrap_or((None, self.default_cause.unwrap_or(Cause::Callback)));
            names.sort_unstable();
            names.dedup();
            rows.apps.push(room.app);
            rows.rooms.push(room.id);
            rows.kinds.push(kind.as_str());
            rows.counts
                .push(i32::try_from(names.len()).expect("a batch's members fit in i32"));
            rows.users.extend(names);
            rows.at.push(time);
            rows.ids.push(id);
            rows.causes.push(cause.as_str());
        }
        rows
    }
}

/// A transaction's feed rows, one array per column, as `room_changes_record` takes them.
pub(super) struct FeedRows<'a> {
    pub(super) apps: Vec<i64>,
    pub(super) rooms: Vec<&'a str>,
    pub(super) kinds: Vec<&'static str>,
    /// Every row's members in one flat array; row i has `counts[i]` of them.
    pub(super) users: Vec<String>,
    pub(super) counts: Vec<i32>,
    pub(super) at: Vec<DateTime<Utc>>,
    pub(super) ids: Vec<Option<i64>>,
    pub(super) causes: Vec<&'static str>,
}

impl FeedRows<'_> {
    /// Writes the rows in a statement of their own; the newest `seq`, `None` when there are
    /// none.
    async fn record(
        self,
        conn: &mut PgConnection,
        notify: NotifyMode,
    ) -> Result<Option<i64>, sqlx::Error> {
        if self.apps.is_empty() {
            return Ok(None);
        }
        sqlx::query_file_scalar!(
            "src/store/apply/sql/record_changes.sql",
            &self.apps,
            &self.rooms as &[&str],
            &self.kinds as &[&str],
            &self.users,
            &self.counts,
            &self.at,
            &self.ids as &[Option<i64>],
            &self.causes as &[&str],
            notify == NotifyMode::Wakeup,
        )
        .fetch_one(conn)
        .await
    }
}
