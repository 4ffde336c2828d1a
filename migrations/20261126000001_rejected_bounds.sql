-- rejected_callbacks is bounded (REJECTED_BODY_MAX_BYTES): a long body is kept cut, and its
-- size as received is recorded so an operator sees that it was cut.
ALTER TABLE rejected_callbacks ADD COLUMN body_size integer;

-- Retention (REJECTED_RETENTION_DAYS) prunes by arrival time, like the history.
CREATE INDEX rejected_callbacks_received_brin ON rejected_callbacks USING brin (received_at);
