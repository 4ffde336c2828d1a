-- rejected_callbacks keeps each body once: as text when it is UTF-8 without NUL (lossless, and
-- readable as it is), as exact bytes in body_bytes only when text cannot hold it. Rows written
-- before kept a lossy text beside the bytes: the bytes are the exact copy, the text goes.
ALTER TABLE rejected_callbacks ALTER COLUMN body DROP NOT NULL;
UPDATE rejected_callbacks SET body = NULL WHERE body_bytes IS NOT NULL;
ALTER TABLE rejected_callbacks
    ADD CONSTRAINT rejected_callbacks_body_once CHECK ((body IS NULL) <> (body_bytes IS NULL));

-- The bytes the table holds (what roomsync writes: body, query, error_info, command), for the
-- total bound REJECTED_MAX_TOTAL_BYTES. Kept by statement triggers, so every instance, the
-- retention and an operator's DELETE or TRUNCATE keep it true without a scan per insert.
CREATE TABLE rejected_callbacks_size (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    bytes    bigint  NOT NULL
);

CREATE FUNCTION rejected_callbacks_row_bytes(r rejected_callbacks) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(octet_length(r.body), 0)::bigint + coalesce(octet_length(r.body_bytes), 0)
         + octet_length(r.query) + octet_length(r.error_info)
         + coalesce(octet_length(r.callback_command), 0)
$$;

INSERT INTO rejected_callbacks_size (bytes)
SELECT coalesce(sum(rejected_callbacks_row_bytes(r)), 0) FROM rejected_callbacks r;

CREATE FUNCTION rejected_callbacks_size_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rejected_callbacks_size
    SET bytes = bytes + (SELECT coalesce(sum(rejected_callbacks_row_bytes(r)), 0) FROM added r);
    RETURN NULL;
END $$;

CREATE FUNCTION rejected_callbacks_size_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rejected_callbacks_size
    SET bytes = bytes - (SELECT coalesce(sum(rejected_callbacks_row_bytes(r)), 0) FROM removed r);
    RETURN NULL;
END $$;

CREATE FUNCTION rejected_callbacks_size_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rejected_callbacks_size
    SET bytes = bytes
        + (SELECT coalesce(sum(rejected_callbacks_row_bytes(r)), 0) FROM added r)
        - (SELECT coalesce(sum(rejected_callbacks_row_bytes(r)), 0) FROM removed r);
    RETURN NULL;
END $$;

CREATE FUNCTION rejected_callbacks_size_emptied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rejected_callbacks_size SET bytes = 0;
    RETURN NULL;
END $$;

CREATE TRIGGER rejected_callbacks_size_insert AFTER INSERT ON rejected_callbacks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION rejected_callbacks_size_added();
CREATE TRIGGER rejected_callbacks_size_delete AFTER DELETE ON rejected_callbacks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION rejected_callbacks_size_removed();
CREATE TRIGGER rejected_callbacks_size_update AFTER UPDATE ON rejected_callbacks
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION rejected_callbacks_size_changed();
CREATE TRIGGER rejected_callbacks_size_truncate AFTER TRUNCATE ON rejected_callbacks
    FOR EACH STATEMENT EXECUTE FUNCTION rejected_callbacks_size_emptied();
