-- What arrived and what became of it, per app, day and command (docs/sql.md#ingest_daily):
-- counted in the transactions that store, refuse or reapply a callback, so the counts agree
-- with room_events and rejected_callbacks, and reading them never scans the history.
--
-- Each writing backend adds to its own row (`slot`, from its process id), so that concurrent
-- batches do not queue on one counter row; the view adds the slots up. The table stays small:
-- a row per app, day, command and slot that wrote. On Citus it stays on the coordinator, like
-- room_changes (docs/scaling.md#citus).
CREATE TABLE ingest_counts (
    sdk_app_id       bigint   NOT NULL,
    -- The UTC day the transaction stored it (not the callback's EventTime).
    day              date     NOT NULL,
    callback_command text     NOT NULL,
    slot             smallint NOT NULL,
    accepted         bigint   NOT NULL DEFAULT 0,
    duplicates       bigint   NOT NULL DEFAULT 0,
    refused          bigint   NOT NULL DEFAULT 0,
    reapplied        bigint   NOT NULL DEFAULT 0,
    corrections      bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (sdk_app_id, day, callback_command, slot)
);

CREATE VIEW ingest_daily AS
SELECT sdk_app_id, day, callback_command,
       sum(accepted)::bigint    AS accepted,
       sum(duplicates)::bigint  AS duplicates,
       sum(refused)::bigint     AS refused,
       sum(reapplied)::bigint   AS reapplied,
       sum(corrections)::bigint AS corrections
FROM ingest_counts
GROUP BY sdk_app_id, day, callback_command;

-- Adds counts, one array element per (app, command); repeated pairs are summed first (one
-- upsert may not touch a row twice) and rows are taken in key order (two backends that share
-- a slot then wait for each other instead of deadlocking). A NULL array counts as zeros.
-- Returns the number of rows it touched. Called by rejected.rs and reapply.rs; the hot path,
-- insert_events.sql (both forms), writes the same upsert inline, where its plan is prepared
-- once with the statement.
CREATE FUNCTION ingest_counted(
    _apps int8[], _commands text[], _accepted int8[], _duplicates int8[], _refused int8[],
    _reapplied int8[], _corrections int8[])
RETURNS int4
LANGUAGE sql AS $$
    WITH added AS (
        INSERT INTO ingest_counts AS t
            (sdk_app_id, day, callback_command, slot, accepted, duplicates, refused,
             reapplied, corrections)
        SELECT a, (now() AT TIME ZONE 'UTC')::date, c, (pg_backend_pid() % 64)::int2,
               sum(COALESCE(ac, 0)), sum(COALESCE(du, 0)), sum(COALESCE(re, 0)),
               sum(COALESCE(rp, 0)), sum(COALESCE(co, 0))
        FROM UNNEST(_apps, _commands, _accepted, _duplicates, _refused, _reapplied,
                    _corrections) AS u(a, c, ac, du, re, rp, co)
        WHERE a IS NOT NULL
        GROUP BY a, c
        ORDER BY a, c
        ON CONFLICT (sdk_app_id, day, callback_command, slot) DO UPDATE SET
            accepted = t.accepted + EXCLUDED.accepted,
            duplicates = t.duplicates + EXCLUDED.duplicates,
            refused = t.refused + EXCLUDED.refused,
            reapplied = t.reapplied + EXCLUDED.reapplied,
            corrections = t.corrections + EXCLUDED.corrections
        RETURNING 1
    )
    SELECT count(*)::int4 FROM added
$$;
