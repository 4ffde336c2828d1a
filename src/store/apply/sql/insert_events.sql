-- The batch's history rows (the dedup constraint keeps out what is already there), and the
-- current rows of the members the batch names ($16..$18; read after the rooms are locked, so
-- no other transaction changes them). Rows of the first kind have an id, of the second a
-- user_id. Bound by history.rs; also run by bench/run's pgbench references
-- (bench/pgbench-script).
-- $6 is every member list of the batch in one flat array; row i's list is $6[$7[i] : $8[i]]
-- (spaced: pgbench would read ":hi" as one of its variables).
-- $19 is each row's first-version key, or NULL when it equals $15's: a row stored under it,
-- before the key covered content, with the same body makes a redelivery a duplicate (the same
-- body, as the first-version key also matches different callbacks; docs/semantics.md).
WITH ev AS (
    INSERT INTO room_events
        (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
         member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
    SELECT a, c, r, o, t, ($6::text[])[lo : hi], mc, rs, at, ip, pf, p::jsonb, k
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $7::int4[],
                $8::int4[], $9::int4[], $10::text[], $11::timestamptz[], $12::text[],
                $13::text[], $14::text[], $15::bytea[], $19::bytea[])
         AS u(a, c, r, o, t, lo, hi, mc, rs, at, ip, pf, p, k, lk)
    -- One index probe per row, as for the members below (a NOT EXISTS planned while the table
    -- was empty hashes all of room_events, and a cached plan keeps doing so).
    LEFT JOIN LATERAL (
        SELECT true AS seen FROM room_events e
        WHERE u.lk IS NOT NULL AND e.sdk_app_id = u.a AND e.room_id = u.r
          -- The first-version key covers EventTime: with it, whichever index the plan takes
          -- finds the one row (with the room alone, a stale plan walked its whole history).
          AND e.event_at = u.at AND e.dedup_key = u.lk AND e.payload = u.p::jsonb
        LIMIT 1
    ) AS old ON true
    WHERE old.seen IS NULL
    ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
    RETURNING id, sdk_app_id, room_id, dedup_key, callback_command
),
-- ingest_daily's counts (migrations: ingest_counted): per app and command, the batch's callbacks
-- and those of them stored now; the rest were duplicates. A drift-repair correction
-- (roomsync.Reconcile) counts as a correction. last_at: the newest arrival, for the console's
-- setup check. Both sides are counted before they are joined, so the join is of a few rows
-- whatever its plan: joined callback by callback, the plan (made without the arrays' lengths)
-- merged on the app id alone and compared every callback with every stored row, the batch's
-- size squared (BENCHMARKS.md, "The daily counts' join").
-- Written here rather than through ingest_counted (the rare paths' form) so that the plan is
-- prepared once with the statement: a SQL function's INSERT is planned again at every call,
-- which cost 17% of full-load throughput (BENCHMARKS.md#ingest_daily).
counted AS (
    INSERT INTO ingest_counts AS t
        (sdk_app_id, day, callback_command, slot, accepted, duplicates, corrections, last_at)
    SELECT i.a, (now() AT TIME ZONE 'UTC')::date, i.c, (pg_backend_pid() % 64)::int2,
           CASE WHEN i.c <> 'roomsync.Reconcile' THEN coalesce(e.n, 0) ELSE 0 END,
           i.n - coalesce(e.n, 0),
           CASE WHEN i.c = 'roomsync.Reconcile' THEN coalesce(e.n, 0) ELSE 0 END, now()
    FROM (SELECT a, c, count(*) AS n FROM UNNEST($1::int8[], $2::text[]) AS u(a, c)
          GROUP BY 1, 2) AS i
    LEFT JOIN (SELECT sdk_app_id, callback_command, count(*) AS n FROM ev GROUP BY 1, 2) AS e
        ON e.sdk_app_id = i.a AND e.callback_command = i.c
    ORDER BY i.a, i.c
    ON CONFLICT (sdk_app_id, day, callback_command, slot) DO UPDATE SET
        accepted = t.accepted + EXCLUDED.accepted,
        duplicates = t.duplicates + EXCLUDED.duplicates,
        corrections = t.corrections + EXCLUDED.corrections,
        last_at = greatest(t.last_at, EXCLUDED.last_at)
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
-- One index probe per member whatever the statistics say: as a plain join, a plan made while
-- room_members was small hashes the whole table, and a cached plan keeps doing so as it grows.
CROSS JOIN LATERAL (
    SELECT * FROM room_members
    WHERE sdk_app_id = t.a AND room_id = t.r AND user_id = t.u
    LIMIT 1
) AS m
