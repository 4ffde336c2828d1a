-- The Citus form of write_members.sql (docs/scaling.md#citus): the same parameters, one routed
-- statement a member (migrations: write_members_by_row), then the notifications. Bound by
-- write.rs.
SELECT write_members_by_row($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
