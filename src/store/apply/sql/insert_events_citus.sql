-- The Citus form of insert_events.sql (docs/scaling.md#citus): the same parameters and rows,
-- one routed statement a history row (migrations: insert_events_by_row), so that a batch whose
-- rooms share a node commits there in one phase. A row without a room goes under '' (the
-- distribution column cannot be NULL). Bound by history.rs.
-- ingest_daily's counts as in insert_events.sql (a row without a room comes back under '').
WITH ev AS (
    SELECT * FROM insert_events_by_row($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                       $14, $15, $16, $17, $18, $19)
),
counted AS (
    INSERT INTO ingest_counts AS t
        (sdk_app_id, day, callback_command, slot, accepted, duplicates, corrections, last_at)
    SELECT i.a, (now() AT TIME ZONE 'UTC')::date, i.c, (pg_backend_pid() % 64)::int2,
           count(e.id) FILTER (WHERE i.c <> 'roomsync.Reconcile'),
           sum(i.n) - count(e.id),
           count(e.id) FILTER (WHERE i.c = 'roomsync.Reconcile'), now()
    FROM (SELECT a, c, COALESCE(r, '') AS r, k, count(*) AS n
          FROM UNNEST($1::int8[], $2::text[], $3::text[], $15::bytea[]) AS u(a, c, r, k)
          GROUP BY 1, 2, 3, 4) AS i
    LEFT JOIN ev AS e
        ON e.id IS NOT NULL AND e.sdk_app_id = i.a AND e.dedup_key = i.k AND e.room_id = i.r
    GROUP BY i.a, i.c
    ORDER BY i.a, i.c
    ON CONFLICT (sdk_app_id, day, callback_command, slot) DO UPDATE SET
        accepted = t.accepted + EXCLUDED.accepted,
        duplicates = t.duplicates + EXCLUDED.duplicates,
        corrections = t.corrections + EXCLUDED.corrections,
        last_at = greatest(t.last_at, EXCLUDED.last_at)
)
SELECT id, sdk_app_id, room_id, dedup_key, user_id, in_room, entered_at, left_at, leave_type,
       leave_reason, last_event_at, last_event_rank
FROM ev
