-- Locks (creating if needed) the batch's rooms in (app, room) order and makes the bumps that
-- arrival order cannot change. One row per room. Bound by lock.rs; also run by bench/run's
-- pgbench references, which fill the parameters in (bench/pgbench-script).
-- $1..$9: one array element per room; $10: the product that marks a Live room.
INSERT INTO rooms AS r (sdk_app_id, room_id, product, last_event_at, last_revive_at,
                        last_destroy_at, member_count, member_count_at, member_count_rank)
SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[], $6::timestamptz[], $7::int4[],
                     $8::timestamptz[], $9::int2[])
     AS t(a, id, p, e, v, d, c, ca, ck)
ORDER BY a, id
ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
    product = CASE WHEN EXCLUDED.product = $10 THEN $10 ELSE r.product END,
    last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
    last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
    last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at),
    (member_count, member_count_at, member_count_rank) = (
        SELECT c, ca, ck FROM (VALUES
            (r.member_count, r.member_count_at, r.member_count_rank),
            (EXCLUDED.member_count, EXCLUDED.member_count_at, EXCLUDED.member_count_rank)
        ) AS v(c, ca, ck)
        ORDER BY ca DESC NULLS LAST, ck DESC, c DESC
        LIMIT 1)
RETURNING sdk_app_id, room_id, last_destroy_at
