-- Where the rooms' rows live (docs/scaling.md#citus): one row per shard of the room tables,
-- with its range of hash values and the node group that holds it. roomsync reads it to give
-- each transaction the rooms of one node, so that Citus commits it in one phase. On plain
-- PostgreSQL it returns no rows. The query runs through EXECUTE so that this function can be
-- created where Citus's catalog does not exist.
CREATE FUNCTION room_shards()
RETURNS TABLE (shard_id bigint, min_hash integer, max_hash integer, node_group integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN QUERY EXECUTE
            'SELECT DISTINCT ON (s.shardid) s.shardid, s.shardminvalue::int4,
                    s.shardmaxvalue::int4, p.groupid
             FROM pg_dist_shard s JOIN pg_dist_placement p ON p.shardid = s.shardid
             WHERE s.logicalrelid = ''rooms''::regclass
             ORDER BY s.shardid, p.groupid';
    END IF;
END
$$;
