-- The Citus form of lock_rooms.sql (docs/scaling.md#citus): the same parameters and rows, one
-- routed statement a room (migrations: lock_rooms_by_row), so that a batch whose rooms share a
-- node commits there in one phase. Bound by lock.rs.
SELECT sdk_app_id AS "sdk_app_id!", room_id AS "room_id!", last_destroy_at, citus
FROM lock_rooms_by_row($1, $2, $3, $4, $5, $6, $7, $8, $9)
