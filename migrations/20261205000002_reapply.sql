-- `roomsync rejected reapply` (docs/operations.md#reapplying-refused-callbacks): what became of
-- each refused callback when it was parsed again with a later version's parser and bounds.
-- In a DO block: Citus sends an ALTER TABLE of a distributed table to the workers as the text
-- of the statement that ran it, which must then be this statement alone.
DO $$
BEGIN
    ALTER TABLE rejected_callbacks
        -- When it went through the write path (it is in room_events since), and as which row:
        -- its own new one, or the one an identical callback had made already (a duplicate).
        ADD COLUMN reapplied_at       timestamptz,
        ADD COLUMN reapplied_event_id bigint,
        ADD COLUMN reapply_outcome    text,
        -- When it was last parsed again, and what today's parser said when it still refuses it.
        ADD COLUMN reapply_checked_at timestamptz,
        ADD COLUMN reapply_code       integer,
        ADD COLUMN reapply_info       text,
        ADD CONSTRAINT rejected_callbacks_reapply_outcome
            CHECK (reapply_outcome IN ('reapplied', 'duplicate', 'refused'));
END
$$;
