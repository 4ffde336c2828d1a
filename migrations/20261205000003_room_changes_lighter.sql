-- The change feed with fewer writes per change (BENCHMARKS.md#the-change-feed): a room's
-- room_seq follows from its newest change (read through room_changes_room, under the head's
-- lock) instead of a counter row moved per room and transaction, and retention goes by a
-- block-range index on recorded_at instead of a B-tree maintained at every insert.
-- Retention keeps each room's newest change, so a room's numbering never starts again; what it
-- deleted is then no longer a prefix of the feed, so the position from which the feed is
-- whole is kept apart (room_changes_horizon), and a position before it is gone.

DROP INDEX room_changes_recorded;
CREATE INDEX room_changes_recorded_brin ON room_changes USING brin (recorded_at);

CREATE OR REPLACE FUNCTION room_changes_record(
    _apps int8[], _rooms text[], _kinds text[], _users text[], _counts int4[],
    _at timestamptz[], _ids int8[], _causes text[], _notify boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n    integer := coalesce(cardinality(_apps), 0);
    last bigint;
BEGIN
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE room_changes_head SET last_seq = last_seq + n RETURNING last_seq INTO last;
    WITH input AS (
        SELECT t.*, (sum(t.c) OVER (ORDER BY t.i) - t.c)::int AS skip
        FROM UNNEST(_apps, _rooms, _kinds, _counts, _at, _ids, _causes)
             WITH ORDINALITY AS t(a, r, k, c, e, id, cause, i)
    ), rooms AS (
        -- Each room's newest room_seq: one backward index probe per room. Under the head's
        -- lock no other transaction adds to it before this one ends.
        SELECT DISTINCT ON (a, r) a, r,
               coalesce((SELECT c.room_seq FROM room_changes c
                         WHERE c.sdk_app_id = input.a AND c.room_id = input.r
                         ORDER BY c.room_seq DESC LIMIT 1), 0) AS before
        FROM input
    )
    INSERT INTO room_changes
        (seq, sdk_app_id, room_id, room_seq, kind, user_ids, event_at, event_id, cause)
    SELECT last - n + input.i, input.a, input.r,
           rooms.before + row_number() OVER (PARTITION BY input.a, input.r ORDER BY input.i),
           input.k, coalesce(_users[input.skip + 1 : input.skip + input.c], '{}'),
           input.e, input.id, input.cause
    FROM input JOIN rooms ON rooms.a = input.a AND rooms.r = input.r;
    IF _notify THEN
        PERFORM pg_notify('room_changes', last::text);
    END IF;
    RETURN last;
END
$$;

-- Rooms that changed since this migration count on from their newest kept change; rooms
-- whose every change retention removed before it start again at 1 (their old changes are
-- gone from the feed anyway).
DROP TABLE room_change_counts;

-- The largest seq retention deleted: the feed is whole after it. Its own row, so that
-- retention never waits on (or holds up) the writers' head.
CREATE TABLE room_changes_horizon (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    deleted_upto bigint  NOT NULL
);
INSERT INTO room_changes_horizon
SELECT true, coalesce((SELECT min(seq) - 1 FROM room_changes), (SELECT last_seq FROM room_changes_head));

CREATE OR REPLACE FUNCTION room_changes_after(after bigint, max integer)
RETURNS SETOF room_changes
LANGUAGE plpgsql STABLE AS $$
DECLARE
    upto bigint;
BEGIN
    IF after < 0 OR max < 0 THEN
        RAISE EXCEPTION 'room_changes_after: after and max must not be negative'
            USING ERRCODE = '22023';
    END IF;
    SELECT deleted_upto INTO upto FROM room_changes_horizon;
    IF after < upto THEN
        RAISE EXCEPTION 'room_changes_after: position % is older than the oldest kept change %',
            after, upto + 1
            USING ERRCODE = 'RF410', HINT = 'take a new snapshot (docs/feed.md)';
    END IF;
    RETURN QUERY SELECT * FROM room_changes c WHERE c.seq > after ORDER BY c.seq LIMIT max;
END
$$;
