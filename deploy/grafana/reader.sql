-- The role Grafana's PostgreSQL datasource logs in as: it can read room_roster, rooms and
-- room_events (the dashboard's panels) and nothing else, and its transactions are read-only.
-- Idempotent. Run after the migrations, with the password in READER_PASSWORD (without it, it
-- stops at the ALTER ROLE):
--   READER_PASSWORD=... psql -v ON_ERROR_STOP=1 -f deploy/grafana/reader.sql "$DATABASE_URL"
-- (the Compose `monitoring` profile runs it as the grafana-reader service).
\getenv reader_password READER_PASSWORD
SELECT 'CREATE ROLE grafana_reader LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_reader') \gexec
ALTER ROLE grafana_reader WITH LOGIN PASSWORD :'reader_password';
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
-- A panel over a large history must not hold a connection for long.
ALTER ROLE grafana_reader SET statement_timeout = '10s';
GRANT CONNECT ON DATABASE :"DBNAME" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON room_roster, rooms, room_events TO grafana_reader;
