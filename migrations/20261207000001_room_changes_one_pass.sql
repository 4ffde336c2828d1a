-- The change feed's rows numbered in one pass (BENCHMARKS.md, "The feed's rows in one pass"):
-- each row's room_seq is its room's newest before the statement (one backward index probe,
-- which sees none of the rows the statement itself inserts) plus its rank among the call's
-- rows of that room. The form before also took each room apart (DISTINCT ON) and joined it
-- back: two more sorts and a hash join for the same numbers, a quarter of the statement's time
-- at a full-load batch. Same signature, same results: instances of the version before call it
-- unchanged.
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
        SELECT t.*, (sum(t.c) OVER calls - t.c)::int AS skip,
               row_number() OVER (PARTITION BY t.a, t.r ORDER BY t.i) AS rank
        FROM UNNEST(_apps, _rooms, _kinds, _counts, _at, _ids, _causes)
             WITH ORDINALITY AS t(a, r, k, c, e, id, cause, i)
        WINDOW calls AS (ORDER BY t.i)
    )
    INSERT INTO room_changes
        (seq, sdk_app_id, room_id, room_seq, kind, user_ids, event_at, event_id, cause)
    -- Under the head's lock no other transaction adds to a room before this one ends.
    SELECT last - n + input.i, input.a, input.r,
           coalesce((SELECT c.room_seq FROM room_changes c
                     WHERE c.sdk_app_id = input.a AND c.room_id = input.r
                     ORDER BY c.room_seq DESC LIMIT 1), 0) + input.rank,
           input.k, coalesce(_users[input.skip + 1 : input.skip + input.c], '{}'),
           input.e, input.id, input.cause
    FROM input;
    IF _notify THEN
        PERFORM pg_notify('room_changes', last::text);
    END IF;
    RETURN last;
END
$$;
