-- The attendance ledger's changes of a batch whose events all went after what it held (no
-- session replaced): the changed stays ($1..$10) and sessions ($11..$21) upserted, and each
-- room's place moved on ($22..$25), in one statement (three tables, no row twice). Bound by
-- ledger.rs; also run by bench/run's pgbench references (bench/pgbench-script). A batch that
-- folds a room again, and Citus, use ledger_write_rows.sql.
WITH stays AS (
    INSERT INTO room_stays AS s (sdk_app_id, room_id, user_id, joined_at, session_no, left_at,
                                 leave_type, leave_reason, merged_gaps, gap_ms)
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[],
                         $6::timestamptz[], $7::text[], $8::text[], $9::int4[], $10::int8[])
    ON CONFLICT (sdk_app_id, room_id, user_id, joined_at) DO UPDATE SET
        session_no = EXCLUDED.session_no, left_at = EXCLUDED.left_at,
        leave_type = EXCLUDED.leave_type, leave_reason = EXCLUDED.leave_reason,
        merged_gaps = EXCLUDED.merged_gaps, gap_ms = EXCLUDED.gap_ms
    RETURNING 1
), sessions AS (
    INSERT INTO room_sessions AS s (sdk_app_id, room_id, session_no, started_at, ended_at,
                                    end_cause, peak_members, peak_at, unique_members, member_ms,
                                    open_stays)
    SELECT * FROM UNNEST($11::int8[], $12::text[], $13::int4[], $14::timestamptz[],
                         $15::timestamptz[], $16::text[], $17::int4[], $18::timestamptz[],
                         $19::int4[], $20::int8[], $21::int4[])
    ON CONFLICT (sdk_app_id, room_id, session_no) DO UPDATE SET
        started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
        end_cause = EXCLUDED.end_cause, peak_members = EXCLUDED.peak_members,
        peak_at = EXCLUDED.peak_at, unique_members = EXCLUDED.unique_members,
        member_ms = EXCLUDED.member_ms, open_stays = EXCLUDED.open_stays
    RETURNING 1
)
UPDATE rooms ro SET ledger_at = t.at, ledger_rank = t.k, ledger_backfill = false
FROM UNNEST($22::int8[], $23::text[], $24::timestamptz[], $25::int2[]) AS t(a, r, at, k)
-- The two upserts run to completion whether or not this statement reads them.
WHERE ro.sdk_app_id = t.a AND ro.room_id = t.r
