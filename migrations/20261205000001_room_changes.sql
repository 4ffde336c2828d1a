-- The change feed (docs/feed.md): one row per change of the view, written by the transaction
-- that makes the change (src/store/apply/feed.rs), read in commit order.

CREATE TABLE room_changes (
    seq         bigint      PRIMARY KEY,
    sdk_app_id  bigint      NOT NULL,
    room_id     text        NOT NULL,
    room_seq    bigint      NOT NULL,
    kind        text        NOT NULL,
    user_ids    text[]      NOT NULL DEFAULT '{}',
    event_at    timestamptz NOT NULL,
    event_id    bigint,
    cause       text        NOT NULL,
    -- When the change was written: retention goes by it (event_at may be old for a late event).
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT room_changes_kind CHECK (kind IN (
        'member.entered', 'member.left', 'stays.revised', 'room.created', 'room.updated',
        'room.destroyed', 'seats.changed', 'session.started', 'session.ended')),
    CONSTRAINT room_changes_cause CHECK (cause IN ('callback', 'reconcile', 'rebuild'))
);

-- One room's changes in order ("what happened to this room since my snapshot").
CREATE UNIQUE INDEX room_changes_room ON room_changes (sdk_app_id, room_id, room_seq);
CREATE INDEX room_changes_recorded ON room_changes (recorded_at);

-- The feed's head: the last seq given out. Every writing transaction moves it as its last
-- statement, so the row lock, held to the end of the commit, hands out seq in commit order:
-- a change is visible only after every change with a smaller seq is (docs/feed.md#order).
-- A rolled-back transaction rolls the head back too: seq has no gaps.
CREATE TABLE room_changes_head (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_seq bigint  NOT NULL
);
INSERT INTO room_changes_head VALUES (true, 0);

-- Each room's last room_seq (rooms whose changes retention removed keep counting on).
CREATE TABLE room_change_counts (
    sdk_app_id bigint NOT NULL,
    room_id    text   NOT NULL,
    room_seq   bigint NOT NULL,
    PRIMARY KEY (sdk_app_id, room_id)
);

-- Records a transaction's changes, in the order given; call it last, just before COMMIT.
-- _users holds every change's user_ids one after the other, _counts how many each takes.
-- _notify: one NOTIFY room_changes with the newest seq (NOTIFY_MODE=wakeup).
-- Returns the newest seq.
CREATE FUNCTION room_changes_record(
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
    ), heads AS (
        INSERT INTO room_change_counts AS h (sdk_app_id, room_id, room_seq)
        SELECT a, r, count(*) FROM input GROUP BY a, r
        ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET room_seq = h.room_seq + EXCLUDED.room_seq
        RETURNING h.sdk_app_id, h.room_id, h.room_seq
    )
    INSERT INTO room_changes
        (seq, sdk_app_id, room_id, room_seq, kind, user_ids, event_at, event_id, cause)
    SELECT last - n + input.i, input.a, input.r,
           heads.room_seq - count(*) OVER w + row_number() OVER (w ORDER BY input.i),
           input.k, coalesce(_users[input.skip + 1 : input.skip + input.c], '{}'),
           input.e, input.id, input.cause
    FROM input JOIN heads ON heads.sdk_app_id = input.a AND heads.room_id = input.r
    WINDOW w AS (PARTITION BY input.a, input.r);
    IF _notify THEN
        PERFORM pg_notify('room_changes', last::text);
    END IF;
    RETURN last;
END
$$;

-- The changes after position `after`, at most `max`, in seq order. Every change it returns is
-- final: seq is given out in commit order, so none smaller can commit later. A position older
-- than what retention kept raises SQLSTATE RF410 (take a new snapshot: docs/feed.md#gone).
CREATE FUNCTION room_changes_after(after bigint, max integer)
RETURNS SETOF room_changes
LANGUAGE plpgsql STABLE AS $$
DECLARE
    oldest bigint;
BEGIN
    IF after < 0 OR max < 0 THEN
        RAISE EXCEPTION 'room_changes_after: after and max must not be negative'
            USING ERRCODE = '22023';
    END IF;
    SELECT min(c.seq) INTO oldest FROM room_changes c;
    IF oldest IS NULL THEN
        SELECT last_seq + 1 INTO oldest FROM room_changes_head;
    END IF;
    IF after < oldest - 1 THEN
        RAISE EXCEPTION 'room_changes_after: position % is older than the oldest kept change %',
            after, oldest
            USING ERRCODE = 'RF410', HINT = 'take a new snapshot (docs/feed.md)';
    END IF;
    RETURN QUERY SELECT * FROM room_changes c WHERE c.seq > after ORDER BY c.seq LIMIT max;
END
$$;
