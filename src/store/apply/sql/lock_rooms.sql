-- Locks (creating if needed) the batch's rooms in (app, room) order and makes the bumps that
-- arrival order cannot change. One row per room. Bound by lock.rs; also run by bench/run's
-- pgbench references, which fill the parameters in (bench/pgbench-script).
-- $1..$9: one array element per room. No parameter in DO UPDATE SET: Citus sends that clause
-- to the workers without the parameters' types (42P18), so the Live product is a literal
-- (rooms_product_known lists the two).
INSERT INTO rooms AS r (sdk_app_id, room_id, product, last_event_at, last_revive_at,
                        last_destroy_at, member_count, member_count_at, member_count_rank)
SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[], $6::timestamptz[], $7::int4[],
                     $8::timestamptz[], $9::int2[])
     AS t(a, id, p, e, v, d, c, ca, ck)
ORDER BY a, id
ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
    product = CASE WHEN EXCLUDED.product = 'Live' THEN 'Live' ELSE r.product END,
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
-- Whether the room tables are distributed by Citus (docs/scaling.md#citus): an init plan, run once.
RETURNING sdk_app_id, room_id, last_destroy_at,
    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus
