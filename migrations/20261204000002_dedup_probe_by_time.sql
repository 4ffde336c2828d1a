-- The redelivery probe of a callback stored under its first-version key (insert_events.sql,
-- insert_events_by_row) also names the row's EventTime, which that key covers: with the room
-- alone, a plan made on stale statistics walked the room's whole history in room_events_room_time
-- for every callback (seen in a room of 20,000 events: 8 ms a callback, growing with the room).
-- Now either index finds the one row. Same rows, same results.
CREATE OR REPLACE FUNCTION insert_events_by_row(
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
              AND e.event_at = t.at AND e.dedup_key = t.lk AND e.payload = t.p::jsonb);
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
