-- The transaction's change feed rows, its last statement before COMMIT (docs/feed.md#order).
-- Bound by feed.rs; also run by bench/run's pgbench references (bench/pgbench-script).
SELECT room_changes_record($1::int8[], $2::text[], $3::text[], $4::text[], $5::int4[],
                           $6::timestamptz[], $7::int8[], $8::text[], $9::bool)
