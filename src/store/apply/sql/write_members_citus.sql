-- The Citus form of finish.sql's members part ($1..$11 there; docs/scaling.md#citus): one
-- routed statement a member (migrations: write_members_by_row), then the notifications. Bound
-- by write.rs.
SELECT write_members_by_row($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
