"""Database task types: mysql, doris, postgres, clickhouse (SQL) and mongo, elasticsearch (JSON operations)."""
