-- The Citus form of insert_events.sql, for a database whose room tables are distributed
-- (docs/scaling.md#citus); the same parameters and rows. Citus cannot push down a LATERAL
-- subquery with LIMIT over UNNEST, so the probes are plain joins, and each names its rooms with
-- `room_id = ANY` so that only their shards are read. A row without a room goes under '' (the
-- distribution column cannot be NULL). Bound by history.rs.
WITH ev AS (
    INSERT INTO room_events
        (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
         member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
    SELECT a, c, COALESCE(r, ''), o, t, ($6::text[])[lo : hi], mc, rs, at, ip, pf, p::jsonb, k
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $7::int4[],
                $8::int4[], $9::int4[], $10::text[], $11::timestamptz[], $12::text[],
                $13::text[], $14::text[], $15::bytea[], $19::bytea[])
         AS u(a, c, r, o, t, lo, hi, mc, rs, at, ip, pf, p, k, lk)
    WHERE u.lk IS NULL OR (u.a, COALESCE(u.r, ''), u.lk, u.p::jsonb) NOT IN (
        SELECT e.sdk_app_id, e.room_id, e.dedup_key, e.payload FROM room_events e
        WHERE e.room_id = ANY($3::text[]) AND e.dedup_key = ANY($19::bytea[])
    )
    ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
    RETURNING id, sdk_app_id, room_id, dedup_key
)
SELECT id, sdk_app_id, room_id, dedup_key, NULL::text AS user_id, NULL::bool AS in_room,
       NULL::timestamptz AS entered_at, NULL::timestamptz AS left_at, NULL::text AS leave_type,
       NULL::text AS leave_reason, NULL::timestamptz AS last_event_at,
       NULL::int2 AS last_event_rank
FROM ev
UNION ALL
SELECT NULL, m.sdk_app_id, m.room_id, NULL, m.user_id, m.in_room, m.entered_at, m.left_at,
       m.leave_type, m.leave_reason, m.last_event_at, m.last_event_rank
FROM UNNEST($16::int8[], $17::text[], $18::text[]) AS t(a, r, u)
JOIN room_members m ON m.sdk_app_id = t.a AND m.room_id = t.r AND m.user_id = t.u
WHERE m.room_id = ANY($17::text[])
