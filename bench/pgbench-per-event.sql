-- The reference service of the "Throughput" benchmark: what roomsync's SQL costs when each
-- callback gets a transaction of its own (no group commit). One transaction = one enter
-- callback of one new member, with the statements of src/store/apply/ in the same order:
-- lock_rooms (here for one room), member_event (history row, member_count and the member's row
-- in one statement), notify.
--
--   pgbench -n -M prepared -f bench/pgbench-per-event.sql -D rooms=1000 -D users=100000 \
--           -c 8 -j 2 -T 5 postgres://.../roomsync_bench
--
-- rooms/users must match the load generator's --rooms/--users (ids room-N, user-N). Every
-- transaction is a distinct event: its dedup key hashes the client id, a random nonce and the
-- clock, so ON CONFLICT never short-cuts it. EventTime is the transaction's now().
\set app 1400000001
\set room random(0, :rooms - 1)
\set user random(0, :users - 1)
\set member_count random(1, 99)
\set nonce random(0, 9000000000000000000)
BEGIN;
-- lock_rooms: upsert and lock the room row (an enter revives the room).
INSERT INTO rooms AS r (sdk_app_id, room_id, last_event_at, last_revive_at, last_destroy_at)
SELECT a, id, e, NULLIF(v, 'epoch'), NULLIF(d, 'epoch')
FROM UNNEST(ARRAY[:app::bigint], ARRAY['room-' || :room::bigint], ARRAY[now()], ARRAY[now()],
            ARRAY['epoch'::timestamptz]) AS t(a, id, e, v, d)
ORDER BY a, id
ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
    last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
    last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
    last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at)
RETURNING sdk_app_id, room_id, last_destroy_at;
-- member_event: the history row (exactly once by the dedup constraint), member_count and the
-- member's row (incremental path: the event is the member's newest), in one statement.
WITH ev AS (
    INSERT INTO room_events
        (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
         member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
    VALUES (:app::bigint, 'Room.CallbackAfterMemberEnter', 'room-' || :room::bigint,
            'user-' || :user::bigint, 'Enter', ARRAY['user-' || :user::bigint],
            :member_count::int, NULL, now(), '127.0.0.1', 'Web',
            format('{"CallbackCommand":"Room.CallbackAfterMemberEnter","Operator_Account":"user-%s","RoomId":"room-%s","MemberCount":%s,"Type":"Enter","MemberList_Account":["user-%s"],"EventTime":%s}',
                   :user::bigint, :room::bigint, :member_count::int, :user::bigint,
                   (extract(epoch FROM now()) * 1000)::bigint)::text::jsonb,
            sha256(convert_to(:client_id::int || '/' || :nonce::bigint || '/' || clock_timestamp()::text, 'UTF8')))
    ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
    RETURNING id
), counted AS (
    UPDATE rooms SET member_count = :member_count::int, member_count_at = now(), member_count_rank = 0
    WHERE sdk_app_id = :app::bigint AND room_id = 'room-' || :room::bigint
      AND EXISTS (SELECT 1 FROM ev)
      AND (member_count_at IS NULL
           OR (member_count_at, member_count_rank, member_count) < (now(), 0::int2, :member_count::int))
), applied AS (
    INSERT INTO room_members AS m
        (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
         last_event_at, last_event_rank)
    SELECT :app::bigint, 'room-' || :room::bigint, u, true, now(), NULL, NULL, now(), 0
    FROM UNNEST(ARRAY['user-' || :user::bigint]) AS t(u)
    WHERE EXISTS (SELECT 1 FROM ev)
    ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
        in_room = EXCLUDED.in_room,
        entered_at = EXCLUDED.entered_at,
        left_at = COALESCE(EXCLUDED.left_at, m.left_at),
        leave_type = COALESCE(EXCLUDED.leave_type, m.leave_type),
        last_event_at = EXCLUDED.last_event_at,
        last_event_rank = 0
    WHERE (m.last_event_at, m.last_event_rank) <= (EXCLUDED.last_event_at, 0::smallint)
    RETURNING user_id
)
SELECT (SELECT id FROM ev) AS id, ARRAY(SELECT user_id FROM applied) AS applied;
-- notify: LISTEN room_members, delivered at commit.
SELECT pg_notify('room_members', p)
FROM UNNEST(ARRAY[json_build_object(
    'sdk_app_id', :app::bigint, 'room_id', 'room-' || :room::bigint,
    'user_ids', json_build_array('user-' || :user::bigint), 'in_room', true,
    'event_at', now())::text]) AS t(p);
COMMIT;
