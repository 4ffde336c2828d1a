-- roomsync schema: the SQL contract of SPEC section 4.
-- Columns not named by the contract are internal bookkeeping that lets callbacks be applied in
-- any arrival order and still converge to the sequential result (SPEC section 5).

-- The append-only history: one row per distinct accepted callback.
CREATE TABLE room_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sdk_app_id       bigint      NOT NULL,
    callback_command text        NOT NULL,
    room_id          text,
    operator_account text,
    event_type       text,
    member_list      text[]      NOT NULL DEFAULT '{}',
    member_count     integer,
    reason           text,
    event_at         timestamptz NOT NULL,
    client_ip        text,
    opt_platform     text,
    payload          jsonb       NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- SHA-256 of (command, room, EventTime, Type, sorted member set): what makes history exactly-once.
    dedup_key        bytea       NOT NULL,
    CONSTRAINT room_events_dedup UNIQUE NULLS NOT DISTINCT (sdk_app_id, room_id, dedup_key)
);

-- A room's history in time order (cookbook queries, recomputing one member).
CREATE INDEX room_events_room_time ON room_events (sdk_app_id, room_id, event_at);

-- Current membership, one row per (app, room, user) ever seen.
CREATE TABLE room_members (
    sdk_app_id      bigint      NOT NULL,
    room_id         text        NOT NULL,
    user_id         text        NOT NULL,
    in_room         boolean     NOT NULL,
    entered_at      timestamptz,
    left_at         timestamptz,
    leave_type      text,
    leave_reason    text,
    last_event_at   timestamptz NOT NULL,
    -- Kind of the member's newest enter/leave: 0 enter, 1 leave (the SPEC 5 rank at equal times).
    last_event_rank smallint    NOT NULL,
    PRIMARY KEY (sdk_app_id, room_id, user_id)
);

-- "Which rooms is this user in?"
CREATE INDEX room_members_user ON room_members (sdk_app_id, user_id);

-- One row per (app, room) ever seen by any callback.
CREATE TABLE rooms (
    sdk_app_id         bigint      NOT NULL,
    room_id            text        NOT NULL,
    member_count       integer,
    room_name          text,
    room_type          text,
    owner_account      text,
    max_member_count   integer,
    room_info          jsonb,
    created_at         timestamptz,
    -- Newest destroy, and newest event that makes a room live (enter or create).
    last_destroy_at    timestamptz,
    last_revive_at     timestamptz,
    -- At equal times a destroy applies after enters and creates, hence <=.
    destroyed_at       timestamptz GENERATED ALWAYS AS (
        CASE WHEN last_revive_at IS NULL OR last_revive_at <= last_destroy_at THEN last_destroy_at END
    ) STORED,
    last_event_at      timestamptz NOT NULL,
    -- Version of member_count: (time, rank) of the member event it came from.
    member_count_at    timestamptz,
    member_count_rank  smallint,
    -- Version of each room_info field: field name -> EventTime in ms of the event that set it.
    room_info_versions jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (sdk_app_id, room_id)
);

-- The seat (mic) list of each room.
CREATE TABLE room_seats (
    sdk_app_id        bigint      NOT NULL,
    room_id           text        NOT NULL,
    seat_index        integer     NOT NULL,
    member_account    text,
    is_taken_disabled boolean     NOT NULL DEFAULT false,
    is_video_disabled boolean     NOT NULL DEFAULT false,
    is_audio_disabled boolean     NOT NULL DEFAULT false,
    last_event_at     timestamptz NOT NULL,
    PRIMARY KEY (sdk_app_id, room_id, seat_index)
);

-- Callbacks that passed the app-id and signature checks but failed validation.
CREATE TABLE rejected_callbacks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at      timestamptz NOT NULL DEFAULT now(),
    sdk_app_id       bigint,
    callback_command text,
    error_code       integer     NOT NULL,
    error_info       text        NOT NULL,
    query            text        NOT NULL,
    -- The body as text (lossless when it was UTF-8 without NUL bytes) ...
    body             text        NOT NULL,
    -- ... and the exact bytes when the text could not hold them.
    body_bytes       bytea
);

CREATE VIEW room_roster AS
SELECT sdk_app_id, room_id, user_id, entered_at
FROM room_members
WHERE in_room;
