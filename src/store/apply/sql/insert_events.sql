-- The batch's history rows (the dedup constraint keeps out what is already there), the
-- current rows of the members the batch names ($16..$18), and what the attendance ledger holds
-- for them and the batch's rooms ($20..$22; docs/attendance.md), all read after the rooms are
-- locked, so no other transaction changes them. Each row says its kind: 'event' (an id),
-- 'member' (its state), and the ledger's 'room' (its place and newest session), 'open' (every
-- open stay of a room where $22 says: a destroy is coming) and 'stay' (a named member's newest
-- stay). One statement rather than two saves the batch a round trip (BENCHMARKS.md, "The ledger
-- read with the history"). Bound by history.rs; also run by bench/run's pgbench references
-- (bench/pgbench-script). Citus: insert_events_citus.sql, and the ledger apart.
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
SELECT 'event'::text AS "kind!", id, sdk_app_id, room_id, dedup_key, NULL::text AS user_id,
       NULL::bool AS in_room, NULL::timestamptz AS entered_at, NULL::timestamptz AS left_at,
       NULL::text AS leave_type, NULL::text AS leave_reason, NULL::timestamptz AS last_event_at,
       NULL::int2 AS last_event_rank, NULL::timestamptz AS ledger_at, NULL::int2 AS ledger_rank,
       NULL::bool AS ledger_backfill, NULL::int4 AS session_no, NULL::timestamptz AS started_at,
       NULL::timestamptz AS ended_at, NULL::text AS end_cause, NULL::int4 AS peak_members,
       NULL::timestamptz AS peak_at, NULL::int4 AS unique_members, NULL::int8 AS member_ms,
       NULL::int4 AS open_stays, NULL::timestamptz AS joined_at, NULL::int4 AS merged_gaps,
       NULL::int8 AS gap_ms
FROM ev
UNION ALL
SELECT 'member', NULL, m.sdk_app_id, m.room_id, NULL, m.user_id, m.in_room, m.entered_at,
       m.left_at, m.leave_type, m.leave_reason, m.last_event_at, m.last_event_rank, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM UNNEST($16::int8[], $17::text[], $18::text[]) AS t(a, r, u)
-- One index probe per member whatever the statistics say: as a plain join, a plan made while
-- room_members was small hashes the whole table, and a cached plan keeps doing so as it grows.
CROSS JOIN LATERAL (
    SELECT * FROM room_members
    WHERE sdk_app_id = t.a AND room_id = t.r AND user_id = t.u
    LIMIT 1
) AS m
UNION ALL
-- The ledger's rows, as ledger_read (migrations) gives them on Citus: one index probe per row
-- whatever the statistics say (LATERAL … LIMIT 1).
SELECT 'room', NULL, ro.sdk_app_id, ro.room_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, ro.ledger_at, ro.ledger_rank, ro.ledger_backfill, se.session_no, se.started_at,
       se.ended_at, se.end_cause, se.peak_members, se.peak_at, se.unique_members, se.member_ms,
       se.open_stays, NULL, NULL, NULL
FROM UNNEST($20::int8[], $21::text[]) AS t(a, r)
CROSS JOIN LATERAL (
    SELECT * FROM rooms WHERE sdk_app_id = t.a AND room_id = t.r LIMIT 1
) AS ro
LEFT JOIN LATERAL (
    SELECT * FROM room_sessions s WHERE s.sdk_app_id = t.a AND s.room_id = t.r
    ORDER BY s.session_no DESC LIMIT 1
) AS se ON true
UNION ALL
SELECT 'open', NULL, s.sdk_app_id, s.room_id, NULL, s.user_id, NULL, NULL, s.left_at,
       s.leave_type, s.leave_reason, NULL, NULL, NULL, NULL, NULL, s.session_no, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, s.joined_at, s.merged_gaps, s.gap_ms
FROM UNNEST($20::int8[], $21::text[], $22::bool[]) AS t(a, r, o)
CROSS JOIN LATERAL (
    SELECT * FROM room_stays s
    WHERE t.o AND s.sdk_app_id = t.a AND s.room_id = t.r AND s.left_at IS NULL
) AS s
UNION ALL
SELECT 'stay', NULL, s.sdk_app_id, s.room_id, NULL, s.user_id, NULL, NULL, s.left_at,
       s.leave_type, s.leave_reason, NULL, NULL, NULL, NULL, NULL, s.session_no, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, s.joined_at, s.merged_gaps, s.gap_ms
FROM UNNEST($16::int8[], $17::text[], $18::text[]) AS t(a, r, u)
-- The member's newest stay is the greatest primary key at or below (app, room, user, infinity):
-- one probe, kept only if it is the member's. With plain equalities on the room, a plan made
-- while room_stays was small or never analyzed took room_stays_session and sorted the room's
-- every stay, for each member (BENCHMARKS.md, "A plan that read every stay of the room"); only
-- the primary key gives this order, and a bound below (the row comparison's later columns do
-- not end a backward scan) would walk the index down to the next match.
CROSS JOIN LATERAL (
    SELECT * FROM room_stays s
    WHERE (s.sdk_app_id, s.room_id, s.user_id, s.joined_at) <= (t.a, t.r, t.u, 'infinity')
    ORDER BY s.sdk_app_id DESC, s.room_id DESC, s.user_id DESC, s.joined_at DESC LIMIT 1
) AS s
WHERE s.sdk_app_id = t.a AND s.room_id = t.r AND s.user_id = t.u
