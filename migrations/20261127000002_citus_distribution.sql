-- Citus (docs/scaling.md#citus): where the citus extension is installed in this database, the
-- room tables are distributed by room_id and co-located, so that every row of a room lives on
-- one node and a callback's statements reach that node only. The other tables stay local to
-- the coordinator. On plain PostgreSQL this migration changes nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    -- The distribution column may not be NULL and every key must include it. A callback
    -- without a RoomId is stored under the room id '' (never a room's: ids are 1 to 256
    -- bytes), all of them on one shard.
    UPDATE room_events SET room_id = '' WHERE room_id IS NULL;
    ALTER TABLE room_events ALTER COLUMN room_id SET NOT NULL;
    ALTER TABLE room_events DROP CONSTRAINT room_events_pkey;
    ALTER TABLE room_events ADD CONSTRAINT room_events_pkey PRIMARY KEY (id, room_id);
    PERFORM create_distributed_table('rooms', 'room_id');
    PERFORM create_distributed_table('room_members', 'room_id', colocate_with => 'rooms');
    PERFORM create_distributed_table('room_seats', 'room_id', colocate_with => 'rooms');
    PERFORM create_distributed_table('room_checks', 'room_id', colocate_with => 'rooms');
    PERFORM create_distributed_table('room_events', 'room_id', colocate_with => 'rooms');
END
$$;
