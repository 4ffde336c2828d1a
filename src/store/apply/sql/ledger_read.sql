-- The attendance ledger's state for a batch (docs/attendance.md): per room ($1, $2) its place
-- and newest session ('room'), with every open stay where $3 says ('open': a destroy is
-- coming); per named member ($4..$6) its newest stay ('stay'). One index probe per row whatever
-- the statistics say (LATERAL … LIMIT 1, as in insert_events.sql). Bound by ledger.rs; also
-- run by bench/run's pgbench references (bench/pgbench-script). Citus: ledger_read_citus.sql.
SELECT 'room'::text AS "kind!", ro.sdk_app_id AS "sdk_app_id!", ro.room_id AS "room_id!",
       NULL::text AS user_id, ro.ledger_at, ro.ledger_rank, ro.ledger_backfill,
       se.session_no, se.started_at, se.ended_at, se.end_cause, se.peak_members, se.peak_at,
       se.unique_members, se.member_ms, se.open_stays, NULL::timestamptz AS joined_at,
       NULL::timestamptz AS left_at, NULL::text AS leave_type, NULL::text AS leave_reason,
       NULL::int4 AS merged_gaps, NULL::int8 AS gap_ms
FROM UNNEST($1::int8[], $2::text[]) AS t(a, r)
CROSS JOIN LATERAL (
    SELECT * FROM rooms WHERE sdk_app_id = t.a AND room_id = t.r LIMIT 1
) AS ro
LEFT JOIN LATERAL (
    SELECT * FROM room_sessions s WHERE s.sdk_app_id = t.a AND s.room_id = t.r
    ORDER BY s.session_no DESC LIMIT 1
) AS se ON true
UNION ALL
SELECT 'open', s.sdk_app_id, s.room_id, s.user_id, NULL, NULL, NULL, s.session_no, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, s.joined_at, s.left_at, s.leave_type, s.leave_reason,
       s.merged_gaps, s.gap_ms
FROM UNNEST($1::int8[], $2::text[], $3::bool[]) AS t(a, r, o)
CROSS JOIN LATERAL (
    SELECT * FROM room_stays s
    WHERE t.o AND s.sdk_app_id = t.a AND s.room_id = t.r AND s.left_at IS NULL
) AS s
UNION ALL
SELECT 'stay', s.sdk_app_id, s.room_id, s.user_id, NULL, NULL, NULL, s.session_no, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, s.joined_at, s.left_at, s.leave_type, s.leave_reason,
       s.merged_gaps, s.gap_ms
FROM UNNEST($4::int8[], $5::text[], $6::text[]) AS t(a, r, u)
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
