-- Retention prunes room_events by arrival time. received_at grows with id (append-only), so a
-- BRIN index finds old rows at almost no cost per insert.
CREATE INDEX room_events_received_brin ON room_events USING brin (received_at);
