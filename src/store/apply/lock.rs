//! Locking the rooms' rows of a batch, in one global order, with the bumps that do not depend
//! on arrival order.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Destroys, Dialect, Room, room_of};
use crate::{
    callback::{Callback, Event, Product},
    store::membership::{RANK_ENTER, RANK_LEAVE},
};

/// Locks (creating if needed) the row of every room in the batch, in (app, room) order, and
/// makes the bumps that arrival order cannot change, so a duplicate re-applies them harmlessly:
/// the newest event, revival and destroy times, `member_count` (the newest member event's,
/// ties to the larger count) and `product` (a Live callback makes a room a Live room; a seat
/// change says neither). Returns each room's newest destroy known now, and whether the database
/// is distributed by Citus (asked in the same round trip; the next statements' form depends on
/// it). `known`: the form to lock in, when the caller knows it (docs/scaling.md#citus).
pub(super) async fn lock_rooms<'a>(
    conn: &mut PgConnection,
    callbacks: &[&'a Callback],
    known: Option<Dialect>,
) -> Result<(Destroys<'a>, Dialect), sqlx::Error> {
    // One row per room: the statement may not touch a row twice.
    let mut rooms: BTreeMap<Room<'a>, RoomTimes> = BTreeMap::new();
    for callback in callbacks {
        if let Some(room) = room_of(callback) {
            let at = callback.event_time.to_datetime();
            rooms
                .entry(room)
                .or_insert_with(|| RoomTimes::new(at))
                .add(callback, at);
        }
    }
    if rooms.is_empty() {
        if let Some(dialect) = known {
            return Ok((HashMap::new(), dialect));
        }
        let citus = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS "citus!""#
        )
        .fetch_one(&mut *conn)
        .await?;
        return Ok((HashMap::new(), Dialect::of(citus)));
    }
    let column =
        |f: fn(&RoomTimes) -> Option<DateTime<Utc>>| rooms.values().map(f).collect::<Vec<_>>();
    let apps: Vec<i64> = rooms.keys().map(|room| room.app).collect();
    let ids: Vec<&str> = rooms.keys().map(|room| room.id).collect();
    let product: Vec<&str> = rooms.values().map(|t| t.product.as_str()).collect();
    let last: Vec<DateTime<Utc>> = rooms.values().map(|t| t.last).collect();
    let count: Vec<Option<i32>> = rooms.values().map(|t| t.count.map(|c| c.2)).collect();
    let count_rank: Vec<Option<i16>> = rooms.values().map(|t| t.count.map(|c| c.1)).collect();
    // Arrays with NULLs: sqlx binds `Option` elements as SQL NULL.
    macro_rules! lock_rooms {
        ($file:literal) => {
            sqlx::query_file_as!(
                Locked,
                $file,
                &apps,
                &ids as &[&str],
                &product as &[&str],
                &last,
                &column(|t| t.revive) as &[Option<DateTime<Utc>>],
                &column(|t| t.destroy) as &[Option<DateTime<Utc>>],
                &count as &[Option<i32>],
                &column(|t| t.count.map(|c| c.0)) as &[Option<DateTime<Utc>>],
                &count_rank as &[Option<i16>],
            )
            .fetch_all(&mut *conn)
            .await?
        };
    }
    let locked = match known {
        Some(Dialect::Citus) => lock_rooms!("src/store/apply/sql/lock_rooms_citus.sql"),
        _ => lock_rooms!("src/store/apply/sql/lock_rooms.sql"),
    };
    let dialect = Dialect::of(locked.first().and_then(|row| row.citus).unwrap_or(false));
    let mut destroys: HashMap<(i64, String), Option<DateTime<Utc>>> = locked
        .into_iter()
        .map(|row| ((row.sdk_app_id, row.room_id), row.last_destroy_at))
        .collect();
    let destroys = rooms
        .into_keys()
        .map(|room| {
            let destroy = destroys.remove(&(room.app, room.id.to_owned())).flatten();
            (room, destroy)
        })
        .collect();
    Ok((destroys, dialect))
}

/// A locked room's row, as both forms of the statement return it.
struct Locked {
    sdk_app_id: i64,
    room_id: String,
    last_destroy_at: Option<DateTime<Utc>>,
    citus: Option<bool>,
}

/// What a batch says of one room.
struct RoomTimes {
    last: DateTime<Utc>,
    /// Newest enter or create, and newest destroy.
    revive: Option<DateTime<Utc>>,
    destroy: Option<DateTime<Utc>>,
    /// `member_count`'s version: (EventTime, rank, count) of the newest member event with one.
    count: Option<(DateTime<Utc>, i16, i32)>,
    product: Product,
}

impl RoomTimes {
    fn new(at: DateTime<Utc>) -> Self {
        Self {
            last: at,
            revive: None,
            destroy: None,
            count: None,
            product: Product::Room,
        }
    }

    fn add(&mut self, callback: &Callback, at: DateTime<Utc>) {
        self.last = self.last.max(at);
        // Option's order puts None first: max keeps the newest, if any.
        let count = |rank: i16, change: &crate::callback::MemberChange| {
            change.member_count.map(|count| (at, rank, count))
        };
        match &callback.event {
            Event::MemberEnter(change) => {
                self.revive = self.revive.max(Some(at));
                self.count = self.count.max(count(RANK_ENTER, change));
            }
            Event::MemberLeave(change) => self.count = self.count.max(count(RANK_LEAVE, change)),
            Event::CreateRoom { .. } => self.revive = self.revive.max(Some(at)),
            Event::DestroyRoom => self.destroy = self.destroy.max(Some(at)),
            _ => {}
        }
        if callback.command.product() == Some(Product::Live) {
            self.product = Product::Live;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_product_in_the_statement_is_the_domain_s() {
        let sql = include_str!("sql/lock_rooms.sql");
        assert!(sql.contains(&format!("'{}'", Product::Live.as_str())));
    }
}
