-- The current rows of the members a batch names. Bound by members.rs; also run by bench/run's
-- pgbench references (bench/pgbench-script).
SELECT m.sdk_app_id, m.room_id, m.user_id, m.in_room, m.entered_at, m.left_at,
       m.leave_type, m.leave_reason, m.last_event_at, m.last_event_rank
FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS t(a, r, u)
JOIN room_members m ON m.sdk_app_id = t.a AND m.room_id = t.r AND m.user_id = t.u
