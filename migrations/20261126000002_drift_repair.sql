-- Drift repair (docs/drift-repair.md): which rooms were checked against Tencent's REST API and
-- when, which instance holds a room now, and the REST call budget shared by all instances.
-- Kept apart from `rooms`, whose rows callbacks lock: checking never waits on a callback nor
-- makes one wait.
CREATE TABLE room_checks (
    sdk_app_id      bigint      NOT NULL,
    room_id         text        NOT NULL,
    -- The last complete check (differences found or not).
    checked_at      timestamptz,
    -- An instance checking the room holds it until then.
    lease_owner     text,
    lease_until     timestamptz,
    -- Failed checks in a row, and when the room may be tried again (backoff).
    failures        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    PRIMARY KEY (sdk_app_id, room_id)
);

-- REST calls per app in the current second, across instances (RECONCILE_MAX_RPS).
CREATE TABLE reconcile_budget (
    sdk_app_id bigint      PRIMARY KEY,
    second     timestamptz NOT NULL,
    used       integer     NOT NULL
);
