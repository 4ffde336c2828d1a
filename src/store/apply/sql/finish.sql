-- A batch's last statement before COMMIT on plain PostgreSQL, one round trip for what were
-- three (BENCHMARKS.md, "Fewer round trips"): every member's new row and the batch's
-- notifications ($1..$11, delivered at commit), the attendance ledger's changes when its events
-- all went after what it held ($12..$36: stays, sessions, each room's place; three tables, no
-- row twice), then the change feed's rows ($37..$45, docs/feed.md#order). An empty part writes
-- nothing. Bound by finish.rs; also run by bench/run's pgbench references
-- (bench/pgbench-script). Citus runs write_members_citus.sql, ledger_write_rows.sql and
-- record_changes.sql instead.
WITH members AS (
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
    RETURNING 1
), stays AS (
    INSERT INTO room_stays AS s (sdk_app_id, room_id, user_id, joined_at, session_no, left_at,
                                 leave_type, leave_reason, merged_gaps, gap_ms)
    SELECT * FROM UNNEST($12::int8[], $13::text[], $14::text[], $15::timestamptz[],
                         $16::int4[], $17::timestamptz[], $18::text[], $19::text[],
                         $20::int4[], $21::int8[])
    ON CONFLICT (sdk_app_id, room_id, user_id, joined_at) DO UPDATE SET
        session_no = EXCLUDED.session_no, left_at = EXCLUDED.left_at,
        leave_type = EXCLUDED.leave_type, leave_reason = EXCLUDED.leave_reason,
        merged_gaps = EXCLUDED.merged_gaps, gap_ms = EXCLUDED.gap_ms
    RETURNING 1
), sessions AS (
    INSERT INTO room_sessions AS s (sdk_app_id, room_id, session_no, started_at, ended_at,
                                    end_cause, peak_members, peak_at, unique_members, member_ms,
                                    open_stays)
    SELECT * FROM UNNEST($22::int8[], $23::text[], $24::int4[], $25::timestamptz[],
                         $26::timestamptz[], $27::text[], $28::int4[], $29::timestamptz[],
                         $30::int4[], $31::int8[], $32::int4[])
    ON CONFLICT (sdk_app_id, room_id, session_no) DO UPDATE SET
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
        end_cause = EXCLUDED.end_cause, peak_members = EXCLUDED.peak_members,
        peak_at = EXCLUDED.peak_at, unique_members = EXCLUDED.unique_members,
        member_ms = EXCLUDED.member_ms, open_stays = EXCLUDED.open_stays
    RETURNING 1
), places AS (
    UPDATE rooms ro SET ledger_at = t.at, ledger_rank = t.k, ledger_backfill = false
    FROM UNNEST($33::int8[], $34::text[], $35::timestamptz[], $36::int2[]) AS t(a, r, at, k)
    WHERE ro.sdk_app_id = t.a AND ro.room_id = t.r
    RETURNING 1
)
-- The counts are read, so every write above is done before the feed's function takes the
-- head's row lock, held from there to the end of the commit: the serialized section stays
-- as short as with the feed's statement on its own.
SELECT room_changes_record($37::int8[], $38::text[], $39::text[], $40::text[], $41::int4[],
                           $42::timestamptz[], $43::int8[], $44::text[], $45::bool) AS seq,
       w.n + s.n + n.n + p.n + t.n AS "written!"
FROM (SELECT count(*) AS n FROM members) AS w,
     (SELECT count(*) AS n FROM stays) AS s,
     (SELECT count(*) AS n FROM sessions) AS n,
     (SELECT count(*) AS n FROM places) AS p,
     (SELECT count(pg_notify('room_members', x)) AS n FROM UNNEST($11::text[]) AS u(x)) AS t
