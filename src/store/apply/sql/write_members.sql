-- Every member's new row, and the batch's notifications (delivered at commit). Data-modifying
-- WITH runs to completion whether or not the SELECT reads it. Bound by write.rs; also run by
-- bench/run's pgbench references (bench/pgbench-script).
WITH written AS (
    INSERT INTO room_members AS m
        (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
         leave_reason, last_event_at, last_event_rank)
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::bool[],
                         $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[],
                         $9::timestamptz[], $10::int2[])
    ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
        in_room = EXCLUDED.in_room, entered_at = EXCLUDED.entered_at,
        left_at = EXCLUDED.left_at, leave_type = EXCLUDED.leave_type,
        leave_reason = EXCLUDED.leave_reason, last_event_at = EXCLUDED.last_event_at,
        last_event_rank = EXCLUDED.last_event_rank
)
SELECT pg_notify('room_members', p) FROM UNNEST($11::text[]) AS t(p)
