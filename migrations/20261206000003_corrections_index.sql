-- Drift repair's latest corrections, for the console (docs/console.md), without walking the
-- history: a partial index holds only the corrections (rare), so writing any other callback
-- costs one predicate. A file of its own: on Citus, an index on a distributed table must be
-- the only command of its query string (Citus sends it to every shard as it came).
CREATE INDEX room_events_corrections ON room_events (id)
    WHERE callback_command = 'roomsync.Reconcile';
