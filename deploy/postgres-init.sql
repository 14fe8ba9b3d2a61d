-- Databases and roles of the compose deployment (run by postgres-init.sh, which passes the
-- passwords as psql variables). One login role per component, each owning only its own
-- database; nobody else may connect to it. Idempotent: CREATE only what is missing, and
-- (re)set every password.
--
--   mlflow            owns mlflow     (tracking + registry backend store)
--   airflow           owns airflow    (Airflow metadata database)
--   raincast          owns raincast   (raw store, quarantine, decisions, predictions)
--   raincast_reader   SELECT on raincast (the Streamlit UI reads history and live scores)
--   postgres_exporter pg_monitor      (postgres-exporter's statistics views)
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', name)
FROM unnest(ARRAY['mlflow', 'airflow', 'raincast', 'raincast_reader', 'postgres_exporter']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

ALTER ROLE mlflow LOGIN PASSWORD :'mlflow_password';
ALTER ROLE airflow LOGIN PASSWORD :'airflow_password';
ALTER ROLE raincast LOGIN PASSWORD :'raincast_password';
ALTER ROLE raincast_reader LOGIN PASSWORD :'reader_password';
ALTER ROLE postgres_exporter LOGIN PASSWORD :'exporter_password';
GRANT pg_monitor TO postgres_exporter;

SELECT format('CREATE DATABASE %I OWNER %I', name, name)
FROM unnest(ARRAY['mlflow', 'airflow', 'raincast']) AS name
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name)
\gexec

REVOKE ALL ON DATABASE mlflow, airflow, raincast FROM PUBLIC;
GRANT CONNECT ON DATABASE raincast TO raincast_reader;

-- Read-only access to the raw store: the tables that exist now and every table raincast
-- creates later.
\connect raincast
GRANT USAGE ON SCHEMA public TO raincast_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO raincast_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE raincast IN SCHEMA public GRANT SELECT ON TABLES TO raincast_reader;
