-- The console's setup check (docs/console.md) without reading the history: it counted each
-- command's arrivals of the last 24 hours from room_events, a scan that grows with the traffic
-- (at 1,000 callbacks a second, 86 million rows) and ran every few seconds while a console
-- was open. Now the counting upsert that already runs in every storing transaction also keeps
-- the time of the newest arrival, and the check reads a few rows of ingest_counts.

-- When this slot last stored (or found already stored) this command on this day: the
-- transaction's time, as room_events.received_at. NULL on rows counted only by refusals.
ALTER TABLE ingest_counts ADD COLUMN last_at timestamptz;

-- The setup check reads recent days only.
CREATE INDEX ingest_counts_day ON ingest_counts (day);

-- The view gains the column (at the end, so that CREATE OR REPLACE keeps the others).
CREATE OR REPLACE VIEW ingest_daily AS
SELECT sdk_app_id, day, callback_command,
       sum(accepted)::bigint    AS accepted,
       sum(duplicates)::bigint  AS duplicates,
       sum(refused)::bigint     AS refused,
       sum(reapplied)::bigint   AS reapplied,
       sum(corrections)::bigint AS corrections,
       max(last_at)             AS last_at
FROM ingest_counts
GROUP BY sdk_app_id, day, callback_command;
