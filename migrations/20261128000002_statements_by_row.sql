-- The batch write's three statements in a form that Citus commits in one phase
-- (docs/scaling.md#citus). Citus runs an INSERT … SELECT from arrays by copying rows to the
-- shards, and its COPY always commits in two phases, even when every row goes to one node.
-- These functions take the same arrays as lock_rooms.sql, insert_events_citus.sql and
-- write_members.sql and write one row per statement: each is routed to its shard's node, and a
-- transaction whose rooms share a node (the writers group batches so) commits there alone.
-- Same rows, same results as the set-based statements, which plain PostgreSQL keeps using.

-- lock_rooms.sql, row by row in (app, room) order.
CREATE FUNCTION lock_rooms_by_row(
    _apps int8[], _ids text[], _products text[], _last timestamptz[], _revive timestamptz[],
    _destroy timestamptz[], _count int4[], _count_at timestamptz[], _count_rank int2[])
RETURNS TABLE (sdk_app_id int8, room_id text, last_destroy_at timestamptz, citus bool)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
    is_citus bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus');
BEGIN
    FOR t IN
        SELECT * FROM UNNEST(_apps, _ids, _products, _last, _revive, _destroy, _count,
                             _count_at, _count_rank) AS u(a, id, p, e, v, d, c, ca, ck)
        ORDER BY a, id
    LOOP
        RETURN QUERY
        INSERT INTO rooms AS r (sdk_app_id, room_id, product, last_event_at, last_revive_at,
                                last_destroy_at, member_count, member_count_at,
                                member_count_rank)
        VALUES (t.a, t.id, t.p, t.e, t.v, t.d, t.c, t.ca, t.ck)
        ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
            product = CASE WHEN EXCLUDED.product = 'Live' THEN 'Live' ELSE r.product END,
            last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
            last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
            last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at),
            -- lock_rooms.sql's choice (newest time, NULL last; then rank, then count, NULL
            -- first: hence the stand-ins for NULL), spelled out: Citus takes no subquery in a
            -- routed INSERT, and SET takes no row-valued expression.
            (member_count, member_count_at, member_count_rank) = (
                CASE WHEN (COALESCE(EXCLUDED.member_count_at, '-infinity'),
                           COALESCE(EXCLUDED.member_count_rank, 32767),
                           COALESCE(EXCLUDED.member_count, 2147483647))
                        > (COALESCE(r.member_count_at, '-infinity'),
                           COALESCE(r.member_count_rank, 32767),
                           COALESCE(r.member_count, 2147483647))
                     THEN EXCLUDED.member_count ELSE r.member_count END,
                CASE WHEN (COALESCE(EXCLUDED.member_count_at, '-infinity'),
                           COALESCE(EXCLUDED.member_count_rank, 32767),
                           COALESCE(EXCLUDED.member_count, 2147483647))
                        > (COALESCE(r.member_count_at, '-infinity'),
                           COALESCE(r.member_count_rank, 32767),
                           COALESCE(r.member_count, 2147483647))
                     THEN EXCLUDED.member_count_at ELSE r.member_count_at END,
                CASE WHEN (COALESCE(EXCLUDED.member_count_at, '-infinity'),
                           COALESCE(EXCLUDED.member_count_rank, 32767),
                           COALESCE(EXCLUDED.member_count, 2147483647))
                        > (COALESCE(r.member_count_at, '-infinity'),
                           COALESCE(r.member_count_rank, 32767),
                           COALESCE(r.member_count, 2147483647))
                     THEN EXCLUDED.member_count_rank ELSE r.member_count_rank END)
        RETURNING r.sdk_app_id, r.room_id, r.last_destroy_at, is_citus;
    END LOOP;
END
$$;

-- insert_events_citus.sql, row by row: the history rows (a callback without a room under ''),
-- then the named members' rows.
CREATE FUNCTION insert_events_by_row(
    _apps int8[], _commands text[], _rooms text[], _operators text[], _types text[],
    _members text[], _first int4[], _last int4[], _counts int4[], _reasons text[],
    _at timestamptz[], _ips text[], _platforms text[], _payloads text[], _keys bytea[],
    _member_apps int8[], _member_rooms text[], _member_users text[], _legacy_keys bytea[])
RETURNS TABLE (id int8, sdk_app_id int8, room_id text, dedup_key bytea, user_id text,
               in_room bool, entered_at timestamptz, left_at timestamptz, leave_type text,
               leave_reason text, last_event_at timestamptz, last_event_rank int2)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM UNNEST(_apps, _commands, _rooms, _operators, _types, _first, _last,
                             _counts, _reasons, _at, _ips, _platforms, _payloads, _keys,
                             _legacy_keys)
            AS u(a, c, r, o, ty, lo, hi, mc, rs, at, ip, pf, p, k, lk)
    LOOP
        -- Stored before the key covered content, with the same body: a duplicate.
        CONTINUE WHEN t.lk IS NOT NULL AND EXISTS (
            SELECT 1 FROM room_events e
            WHERE e.room_id = COALESCE(t.r, '') AND e.sdk_app_id = t.a
              AND e.dedup_key = t.lk AND e.payload = t.p::jsonb);
        RETURN QUERY
        INSERT INTO room_events AS e
            (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
             member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
        VALUES (t.a, t.c, COALESCE(t.r, ''), t.o, t.ty, _members[t.lo : t.hi], t.mc, t.rs,
                t.at, t.ip, t.pf, t.p::jsonb, t.k)
        ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
        RETURNING e.id, e.sdk_app_id, e.room_id, e.dedup_key, NULL::text, NULL::bool,
                  NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text,
                  NULL::timestamptz, NULL::int2;
    END LOOP;
    RETURN QUERY
    SELECT NULL::int8, m.sdk_app_id, m.room_id, NULL::bytea, m.user_id, m.in_room,
           m.entered_at, m.left_at, m.leave_type, m.leave_reason, m.last_event_at,
           m.last_event_rank
    FROM UNNEST(_member_apps, _member_rooms, _member_users) AS n(a, r, u)
    JOIN room_members m ON m.sdk_app_id = n.a AND m.room_id = n.r AND m.user_id = n.u
    WHERE m.room_id = ANY(_member_rooms);
END
$$;

-- write_members.sql, row by row, then the batch's notifications (delivered at commit).
CREATE FUNCTION write_members_by_row(
    _apps int8[], _rooms text[], _users text[], _in_room bool[], _entered timestamptz[],
    _left timestamptz[], _leave_types text[], _leave_reasons text[], _last timestamptz[],
    _ranks int2[], _payloads text[])
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM UNNEST(_apps, _rooms, _users, _in_room, _entered, _left, _leave_types,
                             _leave_reasons, _last, _ranks)
            AS u(a, r, us, ir, ea, la, lt, lr, le, lk)
    LOOP
        INSERT INTO room_members AS m
            (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
             leave_reason, last_event_at, last_event_rank)
        VALUES (t.a, t.r, t.us, t.ir, t.ea, t.la, t.lt, t.lr, t.le, t.lk)
        ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
            in_room = EXCLUDED.in_room, entered_at = EXCLUDED.entered_at,
            left_at = EXCLUDED.left_at, leave_type = EXCLUDED.leave_type,
            leave_reason = EXCLUDED.leave_reason, last_event_at = EXCLUDED.last_event_at,
            last_event_rank = EXCLUDED.last_event_rank;
    END LOOP;
    PERFORM pg_notify('room_members', p) FROM UNNEST(_payloads) AS n(p);
END
$$;
