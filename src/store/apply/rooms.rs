//! The room info, merged field by field.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use super::{Dialect, Room};
use crate::callback::{Id, RoomInfo};

/// A create's or an update's room info, at its EventTime.
pub(super) struct InfoChange<'a> {
    pub room: Room<'a>,
    pub at: DateTime<Utc>,
    pub info: &'a RoomInfo,
    pub is_create: bool,
    /// A Room create's invitees (distinct, sorted); the newest create's are the room's.
    pub invitees: Option<&'a [Id]>,
}

/// Merges the fields present into each room's `room_info` (per field, the newest event wins):
/// one read of every room concerned, the merges in memory, one write; on Citus, one routed
/// read and write per room (a statement over a list of rooms would go to every shard).
pub(super) async fn merge_room_info(
    conn: &mut PgConnection,
    dialect: Dialect,
    changes: &[InfoChange<'_>],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut by_room: BTreeMap<Room<'_>, Vec<&InfoChange<'_>>> = BTreeMap::new();
    for change in changes {
        by_room.entry(change.room).or_default().push(change);
    }
    let rooms: Vec<Room<'_>> = by_room.keys().copied().collect();
    let mut current = current_info(conn, dialect, &rooms).await?;
    let mut rows = InfoRows::default();
    for (room, changes) in &by_room {
        // Every room of the batch is locked, hence there.
        let (mut info, mut versions) = current
            .remove(&(room.app, room.id.to_owned()))
            .unwrap_or((None, json!({})));
        let mut created = None;
        // The newest create's invitees; at one time the larger list, whatever the arrival.
        let mut invitees: Option<(DateTime<Utc>, &[Id])> = None;
        for change in changes {
            if let Some(list) = change.invitees {
                invitees = invitees.max(Some((change.at, list)));
            }
            let (merged, merged_versions) =
                merge_fields(info, versions, change.info, change.at.timestamp_millis());
            (info, versions) = (
                Some(Value::Object(merged.fields)),
                Value::Object(merged_versions),
            );
            if change.is_create {
                created = created.max(Some(change.at));
            }
        }
        rows.push(*room, info.unwrap_or_default(), versions, created);
        if let Some(invitees) = invitees {
            rows.invitees.push((*room, invitees));
        }
    }
    rows.write(conn, dialect).await?;
    // Creates with invitees are rare: one statement per room that has one, routed to it.
    for (room, (at, list)) in &rows.invitees {
        let list: Vec<&str> = list.iter().map(Id::as_str).collect();
        sqlx::query!(
            r#"UPDATE rooms SET invitees = $3, invitees_at = $4
               WHERE sdk_app_id = $1 AND room_id = $2
                 AND (invitees_at IS NULL OR invitees_at < $4
                      OR (invitees_at = $4 AND invitees COLLATE "C" < $3::text[] COLLATE "C"))"#,
            room.app,
            room.id,
            &list as &[&str],
            at,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Each room's `room_info` and its fields' versions, as locked by the batch.
async fn current_info(
    conn: &mut PgConnection,
    dialect: Dialect,
    rooms: &[Room<'_>],
) -> Result<HashMap<(i64, String), (Option<Value>, Value)>, sqlx::Error> {
    let mut current = HashMap::with_capacity(rooms.len());
    match dialect {
        Dialect::Postgres => {
            let apps: Vec<i64> = rooms.iter().map(|room| room.app).collect();
            let ids: Vec<&str> = rooms.iter().map(|room| room.id).collect();
            let rows = sqlx::query!(
                r#"SELECT r.sdk_app_id, r.room_id, r.room_info, r.room_info_versions
                   FROM UNNEST($1::int8[], $2::text[]) AS t(a, id)
                   JOIN rooms r ON r.sdk_app_id = t.a AND r.room_id = t.id"#,
                &apps,
                &ids as &[&str],
            )
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                let state = (row.room_info, row.room_info_versions);
                current.insert((row.sdk_app_id, row.room_id), state);
            }
        }
        Dialect::Citus => {
            for room in rooms {
                let row = sqlx::query!(
                    r#"SELECT room_info, room_info_versions FROM rooms
                       WHERE sdk_app_id = $1 AND room_id = $2"#,
                    room.app,
                    room.id,
                )
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(row) = row {
                    let state = (row.room_info, row.room_info_versions);
                    current.insert((room.app, room.id.to_owned()), state);
                }
            }
        }
    }
    Ok(current)
}

/// A create's invitees: its time, the list.
type Invitees<'a> = (DateTime<Utc>, &'a [Id]);

/// The merged room info of each room, one array per column.
#[derive(Default)]
struct InfoRows<'a> {
    apps: Vec<i64>,
    ids: Vec<&'a str>,
    info: Vec<Value>,
    versions: Vec<Value>,
    names: Vec<Option<String>>,
    kinds: Vec<Option<String>>,
    owners: Vec<Option<String>>,
    max_members: Vec<Option<i32>>,
    created: Vec<Option<DateTime<Utc>>>,
    /// The newest create's invitees of each room that has one.
    invitees: Vec<(Room<'a>, Invitees<'a>)>,
}

impl<'a> InfoRows<'a> {
    fn push(
        &mut self,
        room: Room<'a>,
        info: Value,
        versions: Value,
        created: Option<DateTime<Utc>>,
    ) {
        let fields = match info {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let merged = RoomInfo { fields };
        let text = |key: &str| merged.text(key).map(str::to_owned);
        self.names.push(text("RoomName"));
        self.kinds.push(text("RoomType"));
        self.owners.push(text("Owner_Account"));
        self.max_members.push(
            merged
                .integer("MaxMemberCount")
                .and_then(|n| i32::try_from(n).ok()),
        );
        self.apps.push(room.app);
        self.ids.push(room.id);
        self.info.push(Value::Object(merged.fields));
        self.versions.push(versions);
        self.created.push(created);
    }

    /// Writes each room's merged info.
    async fn write(&self, conn: &mut PgConnection, dialect: Dialect) -> Result<(), sqlx::Error> {
        if dialect == Dialect::Citus {
            for i in 0..self.apps.len() {
                sqlx::query!(
                    r#"UPDATE rooms SET
                           room_info = $3, room_info_versions = $4, room_name = $5,
                           room_type = $6, owner_account = $7, max_member_count = $8,
                           created_at = GREATEST(created_at, $9)
                       WHERE sdk_app_id = $1 AND room_id = $2"#,
                    self.apps[i],
                    self.ids[i],
                    &self.info[i],
                    &self.versions[i],
                    self.names[i].as_deref(),
                    self.kinds[i].as_deref(),
                    self.owners[i].as_deref(),
                    self.max_members[i],
                    self.created[i],
                )
                .execute(&mut *conn)
                .await?;
            }
            return Ok(());
        }
        sqlx::query!(
            r#"UPDATE rooms r SET
                   room_info = t.info, room_info_versions = t.versions, room_name = t.name,
                   room_type = t.kind, owner_account = t.owner, max_member_count = t.max_members,
                   created_at = GREATEST(r.created_at, t.created)
               FROM UNNEST($1::int8[], $2::text[], $3::jsonb[], $4::jsonb[], $5::text[],
                           $6::text[], $7::text[], $8::int4[], $9::timestamptz[])
                    AS t(a, id, info, versions, name, kind, owner, max_members, created)
               WHERE r.sdk_app_id = t.a AND r.room_id = t.id"#,
            &self.apps,
            &self.ids as &[&str],
            &self.info,
            &self.versions,
            &self.names as &[Option<String>],
            &self.kinds as &[Option<String>],
            &self.owners as &[Option<String>],
            &self.max_members as &[Option<i32>],
            &self.created as &[Option<DateTime<Utc>>],
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Field-by-field merge. A field's version is the EventTime (ms) that set it; at equal
/// versions the larger JSON text wins, so arrival order never matters.
pub(super) fn merge_fields(
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
    fn equal_versions_are_ordered_by_value() {
        let a = info(json!({"RoomName": "a"}));
        let b = info(json!({"RoomName": "b"}));
        let (m, v) = merge_fields(None, json!({}), &b, 5);
        let (m, _) = merge_fields(Some(Value::Object(m.fields)), Value::Object(v), &a, 5);
        assert_eq!(m.text("RoomName"), Some("b"));
    }
}
