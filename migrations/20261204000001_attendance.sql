-- Attendance (docs/attendance.md): who was in each room, when, and for how long. The ledger is
-- kept by the transactions that keep the view (src/store/apply/ledger.rs), folded in memory
-- by src/store/attendance.rs; these tables are its public face, plus two functions that read
-- and write it in one round trip each.

-- One row per stay: a member's time in the room from the enter that found the member out to
-- the event that took the member out (reconnects within STAY_MERGE_GAP_SECS merged).
CREATE TABLE room_stays (
    sdk_app_id   bigint      NOT NULL,
    room_id      text        NOT NULL,
    user_id      text        NOT NULL,
    joined_at    timestamptz NOT NULL,
    session_no   integer     NOT NULL,
    left_at      timestamptz,
    leave_type   text,
    leave_reason text,
    merged_gaps  integer     NOT NULL DEFAULT 0,
    gap_ms       bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (sdk_app_id, room_id, user_id, joined_at)
);

-- A session's stays (attendance of one meeting), and the open stays of a room.
CREATE INDEX room_stays_session ON room_stays (sdk_app_id, room_id, session_no);
CREATE INDEX room_stays_open ON room_stays (sdk_app_id, room_id) WHERE left_at IS NULL;

-- One row per session: from the first stay in an empty room to a destroy, or to the moment
-- the room emptied for longer than SESSION_EMPTY_GRACE_SECS.
CREATE TABLE room_sessions (
    sdk_app_id     bigint      NOT NULL,
    room_id        text        NOT NULL,
    session_no     integer     NOT NULL,
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    end_cause      text,
    peak_members   integer     NOT NULL,
    peak_at        timestamptz NOT NULL,
    unique_members integer     NOT NULL,
    member_ms      bigint      NOT NULL,
    -- Stays open now (0 once the session has ended): the fold goes on from it.
    open_stays     integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (sdk_app_id, room_id, session_no),
    CONSTRAINT room_sessions_end_cause CHECK (end_cause IN ('Destroyed', 'Emptied'))
);

-- "Sessions that started on this day", retention of ended sessions.
CREATE INDEX room_sessions_started ON room_sessions (started_at);
CREATE INDEX room_sessions_ended ON room_sessions (ended_at);

-- Citus (docs/scaling.md#citus): the ledger lives with its room, on the room's node.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    PERFORM create_distributed_table('room_stays', 'room_id', colocate_with => 'rooms');
    PERFORM create_distributed_table('room_sessions', 'room_id', colocate_with => 'rooms');
END
$$;

-- The ledger's place in each room's history, and the scheduled conference's invitees (of the
-- newest create that lists them; for rooms created before this migration, filled in with
-- their ledger). ledger_backfill: the room existed before the ledger did, so its ledger is
-- still to be made from the history it already holds (true for the rows that exist now, false
-- for new ones; both are catalogue changes, no table rewrite).
-- In a DO block: Citus sends an ALTER TABLE of a distributed table to the workers as the text
-- of the statement that ran it, which must then be this statement alone.
DO $$
BEGIN
    ALTER TABLE rooms
        ADD COLUMN ledger_at       timestamptz,
        ADD COLUMN ledger_rank     smallint,
        ADD COLUMN ledger_backfill boolean NOT NULL DEFAULT true,
        ADD COLUMN invitees        text[],
        ADD COLUMN invitees_at     timestamptz;
    ALTER TABLE rooms ALTER COLUMN ledger_backfill SET DEFAULT false;
END
$$;

-- Attendance per session and member: invitees without a stay appear with stays = 0.
CREATE VIEW room_attendance AS
WITH present AS (
    SELECT s.sdk_app_id, s.room_id, s.session_no, s.user_id,
           min(s.joined_at) AS first_joined_at,
           CASE WHEN bool_and(s.left_at IS NOT NULL) THEN max(s.left_at) END AS last_left_at,
           sum((extract(epoch FROM COALESCE(s.left_at, GREATEST(now(), s.joined_at)) - s.joined_at)
                * 1000)::bigint - s.gap_ms)::bigint AS present_ms,
           count(*)::integer AS stays
    FROM room_stays s
    GROUP BY s.sdk_app_id, s.room_id, s.session_no, s.user_id
)
SELECT p.sdk_app_id, p.room_id, p.session_no, p.user_id, p.first_joined_at, p.last_left_at,
       p.present_ms, p.stays, COALESCE(p.user_id = ANY(r.invitees), false) AS invited
FROM present p
LEFT JOIN rooms r ON r.sdk_app_id = p.sdk_app_id AND r.room_id = p.room_id
UNION ALL
SELECT se.sdk_app_id, se.room_id, se.session_no, i.user_id, NULL, NULL, 0, 0, true
FROM room_sessions se
JOIN rooms r ON r.sdk_app_id = se.sdk_app_id AND r.room_id = se.room_id
CROSS JOIN LATERAL unnest(r.invitees) AS i(user_id)
LEFT JOIN room_stays s
    ON s.sdk_app_id = se.sdk_app_id AND s.room_id = se.room_id
   AND s.session_no = se.session_no AND s.user_id = i.user_id
WHERE s.user_id IS NULL;

-- The ledger's state for a batch, in one round trip (src/store/apply/ledger.rs): per room its
-- place (kind 'room', with its newest session's columns), per named member its newest stay
-- ('stay'), and for the rooms in _open every open stay ('open'). One routed statement a row,
-- so that Citus sends each to its room's node (as the *_by_row functions do).
CREATE FUNCTION ledger_read(
    _apps int8[], _rooms text[], _open bool[],
    _user_apps int8[], _user_rooms text[], _users text[])
RETURNS TABLE (kind text, sdk_app_id int8, room_id text, user_id text,
               ledger_at timestamptz, ledger_rank int2, ledger_backfill bool,
               session_no int4, started_at timestamptz, ended_at timestamptz, end_cause text,
               peak_members int4, peak_at timestamptz, unique_members int4, member_ms int8,
               open_stays int4, joined_at timestamptz, left_at timestamptz, leave_type text,
               leave_reason text, merged_gaps int4, gap_ms int8)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM UNNEST(_apps, _rooms, _open) AS u(a, r, o) LOOP
        RETURN QUERY
        SELECT 'room'::text, ro.sdk_app_id, ro.room_id, NULL::text, ro.ledger_at, ro.ledger_rank,
               ro.ledger_backfill, se.session_no, se.started_at, se.ended_at, se.end_cause,
               se.peak_members, se.peak_at, se.unique_members, se.member_ms, se.open_stays,
               NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text, NULL::int4,
               NULL::int8
        FROM rooms ro
        LEFT JOIN LATERAL (
            SELECT * FROM room_sessions s
            WHERE s.sdk_app_id = t.a AND s.room_id = t.r
            ORDER BY s.session_no DESC LIMIT 1) se ON true
        WHERE ro.sdk_app_id = t.a AND ro.room_id = t.r;
        IF t.o THEN
            RETURN QUERY
            SELECT 'open'::text, s.sdk_app_id, s.room_id, s.user_id, NULL::timestamptz,
                   NULL::int2, NULL::bool, s.session_no, NULL::timestamptz, NULL::timestamptz,
                   NULL::text, NULL::int4, NULL::timestamptz, NULL::int4, NULL::int8,
                   NULL::int4, s.joined_at, s.left_at, s.leave_type, s.leave_reason,
                   s.merged_gaps, s.gap_ms
            FROM room_stays s
            WHERE s.sdk_app_id = t.a AND s.room_id = t.r AND s.left_at IS NULL;
        END IF;
    END LOOP;
    FOR t IN SELECT * FROM UNNEST(_user_apps, _user_rooms, _users) AS u(a, r, u) LOOP
        RETURN QUERY
        SELECT 'stay'::text, s.sdk_app_id, s.room_id, s.user_id, NULL::timestamptz,
               NULL::int2, NULL::bool, s.session_no, NULL::timestamptz, NULL::timestamptz,
               NULL::text, NULL::int4, NULL::timestamptz, NULL::int4, NULL::int8, NULL::int4,
               s.joined_at, s.left_at, s.leave_type, s.leave_reason, s.merged_gaps, s.gap_ms
        FROM room_stays s
        WHERE s.sdk_app_id = t.a AND s.room_id = t.r AND s.user_id = t.u
        ORDER BY s.joined_at DESC LIMIT 1;
    END LOOP;
END
$$;

-- The ledger's changes of a batch, in one round trip: rooms whose ledger is recomputed lose
-- their sessions from _from_no on (and those sessions' stays), then the changed stays and
-- sessions are written and each room's place in its history is moved on.
CREATE FUNCTION ledger_write(
    _cut_apps int8[], _cut_rooms text[], _cut_from int4[],
    _s_apps int8[], _s_rooms text[], _s_users text[], _s_joined timestamptz[], _s_no int4[],
    _s_left timestamptz[], _s_type text[], _s_reason text[], _s_gaps int4[], _s_gap_ms int8[],
    _n_apps int8[], _n_rooms text[], _n_no int4[], _n_started timestamptz[],
    _n_ended timestamptz[], _n_cause text[], _n_peak int4[], _n_peak_at timestamptz[],
    _n_unique int4[], _n_member_ms int8[], _n_open int4[],
    _r_apps int8[], _r_rooms text[], _r_at timestamptz[], _r_rank int2[])
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM UNNEST(_cut_apps, _cut_rooms, _cut_from) AS u(a, r, k) LOOP
        DELETE FROM room_stays s
        WHERE s.sdk_app_id = t.a AND s.room_id = t.r AND s.session_no >= t.k;
        DELETE FROM room_sessions s
        WHERE s.sdk_app_id = t.a AND s.room_id = t.r AND s.session_no >= t.k;
    END LOOP;
    FOR t IN SELECT * FROM UNNEST(_s_apps, _s_rooms, _s_users, _s_joined, _s_no, _s_left,
                                  _s_type, _s_reason, _s_gaps, _s_gap_ms)
                          AS u(a, r, u, j, n, l, ty, rs, g, gm) LOOP
        INSERT INTO room_stays AS s (sdk_app_id, room_id, user_id, joined_at, session_no,
                                     left_at, leave_type, leave_reason, merged_gaps, gap_ms)
        VALUES (t.a, t.r, t.u, t.j, t.n, t.l, t.ty, t.rs, t.g, t.gm)
        ON CONFLICT (sdk_app_id, room_id, user_id, joined_at) DO UPDATE SET
            session_no = EXCLUDED.session_no, left_at = EXCLUDED.left_at,
            leave_type = EXCLUDED.leave_type, leave_reason = EXCLUDED.leave_reason,
            merged_gaps = EXCLUDED.merged_gaps, gap_ms = EXCLUDED.gap_ms;
    END LOOP;
    FOR t IN SELECT * FROM UNNEST(_n_apps, _n_rooms, _n_no, _n_started, _n_ended, _n_cause,
                                  _n_peak, _n_peak_at, _n_unique, _n_member_ms, _n_open)
                          AS u(a, r, n, st, en, c, p, pa, un, ms, op) LOOP
        INSERT INTO room_sessions AS s (sdk_app_id, room_id, session_no, started_at, ended_at,
                                        end_cause, peak_members, peak_at, unique_members,
                                        member_ms, open_stays)
        VALUES (t.a, t.r, t.n, t.st, t.en, t.c, t.p, t.pa, t.un, t.ms, t.op)
        ON CONFLICT (sdk_app_id, room_id, session_no) DO UPDATE SET
            started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
            end_cause = EXCLUDED.end_cause, peak_members = EXCLUDED.peak_members,
            peak_at = EXCLUDED.peak_at, unique_members = EXCLUDED.unique_members,
            member_ms = EXCLUDED.member_ms, open_stays = EXCLUDED.open_stays;
    END LOOP;
    FOR t IN SELECT * FROM UNNEST(_r_apps, _r_rooms, _r_at, _r_rank) AS u(a, r, at, k) LOOP
        UPDATE rooms ro SET ledger_at = t.at, ledger_rank = t.k, ledger_backfill = false
        WHERE ro.sdk_app_id = t.a AND ro.room_id = t.r;
    END LOOP;
END
$$;

-- ATTENDANCE_RETENTION_DAYS: deletes up to _limit sessions that ended more than _days days
-- ago, with their stays; returns how many. A room's newest session stays, so that session
-- numbers go on where they were. One routed statement a row (Citus).
CREATE FUNCTION prune_attendance(_days int4, _limit int4)
RETURNS int8
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    n int8 := 0;
BEGIN
    FOR t IN
        SELECT s.sdk_app_id, s.room_id, s.session_no FROM room_sessions s
        WHERE s.ended_at < now() - make_interval(days => _days)
          AND EXISTS (SELECT 1 FROM room_sessions x
                      WHERE x.sdk_app_id = s.sdk_app_id AND x.room_id = s.room_id
                        AND x.session_no > s.session_no)
        ORDER BY s.ended_at LIMIT _limit
    LOOP
        DELETE FROM room_stays s
        WHERE s.sdk_app_id = t.sdk_app_id AND s.room_id = t.room_id
          AND s.session_no = t.session_no;
        DELETE FROM room_sessions s
        WHERE s.sdk_app_id = t.sdk_app_id AND s.room_id = t.room_id
          AND s.session_no = t.session_no;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
