-- The transaction's change feed rows in a statement of their own, its last before COMMIT
-- (docs/feed.md#order): on Citus, and for a rebuild's diff (plain PostgreSQL's batches write
-- them with finish.sql). Bound by feed.rs.
SELECT room_changes_record($1::int8[], $2::text[], $3::text[], $4::text[], $5::int4[],
                           $6::timestamptz[], $7::int8[], $8::text[], $9::bool)
