-- The attendance ledger's read on Citus (docs/scaling.md#citus; plain PostgreSQL reads it in
-- insert_events.sql): one routed statement a room or member (migration
-- 20261204000001_attendance.sql). Bound by ledger/read.rs.
SELECT kind AS "kind!", sdk_app_id AS "sdk_app_id!", room_id AS "room_id!", user_id,
       ledger_at, ledger_rank, ledger_backfill, session_no, started_at, ended_at, end_cause,
       peak_members, peak_at, unique_members, member_ms, open_stays, joined_at, left_at,
       leave_type, leave_reason, merged_gaps, gap_ms
FROM ledger_read($1, $2, $3, $4, $5, $6)
