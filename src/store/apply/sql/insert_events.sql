-- The batch's history rows; the dedup constraint keeps out what is already there. Bound by
-- history.rs; also run by bench/run's pgbench references (bench/pgbench-script).
-- $6 is every member list of the batch in one flat array; row i's list is $6[$7[i] : $8[i]]
-- (spaced: pgbench would read ":hi" as one of its variables).
INSERT INTO room_events
    (sdk_app_id, callback_command, room_id, operator_account, event_type, member_list,
     member_count, reason, event_at, client_ip, opt_platform, payload, dedup_key)
SELECT a, c, r, o, t, ($6::text[])[lo : hi], mc, rs, at, ip, pf, p::jsonb, k
FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $7::int4[],
            $8::int4[], $9::int4[], $10::text[], $11::timestamptz[], $12::text[],
            $13::text[], $14::text[], $15::bytea[])
     AS u(a, c, r, o, t, lo, hi, mc, rs, at, ip, pf, p, k)
ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
RETURNING id, sdk_app_id, room_id, dedup_key
