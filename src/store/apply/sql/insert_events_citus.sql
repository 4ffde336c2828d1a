-- The Citus form of insert_events.sql (docs/scaling.md#citus): the same parameters and rows,
-- one routed statement a history row (migrations: insert_events_by_row), so that a batch whose
-- rooms share a node commits there in one phase. A row without a room goes under '' (the
-- distribution column cannot be NULL). Bound by history.rs.
SELECT id, sdk_app_id, room_id, dedup_key, user_id, in_room, entered_at, left_at, leave_type,
       leave_reason, last_event_at, last_event_rank
FROM insert_events_by_row($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                          $16, $17, $18, $19)
