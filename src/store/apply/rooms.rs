//! The room info, merged field by field.

use super::*;

/// Merges the fields present into `room_info`; per field, the newest event wins.
pub(super) async fn merge_room_info(
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
