-- The attendance ledger's changes of a batch, row by row (migration
-- 20261204000001_attendance.sql): the rooms folded again lose their sessions from a number on
-- ($1..$3), then the changed stays ($4..$13) and sessions ($14..$24) are written and each
-- room's place moves on ($25..$28). For a batch that folds a room again, and on Citus (one
-- routed statement a row). Bound by ledger.rs.
SELECT ledger_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28) AS "done"
