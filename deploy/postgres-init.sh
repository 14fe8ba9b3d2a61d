#!/usr/bin/env bash
# Databases and roles of the compose deployment, created when the postgres container first
# starts on an empty volume (the image runs /docker-entrypoint-initdb.d/* once). Passwords
# come from the environment (docker-compose.yml, values from .env); the statements are in
# postgres-init.sql, which is safe to run again (e.g. to rotate a password):
#
#   docker compose exec postgres /docker-entrypoint-initdb.d/10-raincast.sh
set -euo pipefail

psql -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v mlflow_password="${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}" \
    -v airflow_password="${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}" \
    -v raincast_password="${RAINCAST_DB_PASSWORD:?RAINCAST_DB_PASSWORD is not set}" \
    -v reader_password="${RAINCAST_READER_DB_PASSWORD:?RAINCAST_READER_DB_PASSWORD is not set}" \
    -v exporter_password="${POSTGRES_EXPORTER_PASSWORD:?POSTGRES_EXPORTER_PASSWORD is not set}" \
    -f "${RAINCAST_INIT_SQL:-/etc/raincast/postgres-init.sql}"
