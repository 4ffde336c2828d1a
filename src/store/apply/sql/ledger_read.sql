-- The attendance ledger's state for a batch (migration 20261204000001_attendance.sql): per
-- room ($1, $2) its place and newest session, with every open stay where $3 says (a destroy is
-- coming); per named member ($4..$6) its newest stay. Bound by ledger.rs; also run by bench/run's
-- pgbench references (bench/pgbench-script).
SELECT kind AS "kind!", sdk_app_id AS "sdk_app_id!", room_id AS "room_id!", user_id,
       ledger_at, ledger_rank, ledger_backfill, session_no, started_at, ended_at, end_cause,
       peak_members, peak_at, unique_members, member_ms, open_stays, joined_at, left_at,
       leave_type, leave_reason, merged_gaps, gap_ms
FROM ledger_read($1, $2, $3, $4, $5, $6)
