"""Reading goInception's rollback statements from its backup server, as Archery's `get_rollback` does.

goInception answers each executed statement with `backup_dbname` and `sequence`; the rollback SQL stays on
its backup server (its `backup_host`/`backup_port`/... config): `$_$Inception_backup_information$_$` in that
database names the table holding it, and that table's rows with `opid_time = <sequence>` are the statements.
The agent learns the backup server from its config (`goinception_backup`), since goInception does not say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INFO_TABLE = "$_$Inception_backup_information$_$"
NO_BACKUP = ("", "None")
"""`backup_dbname` of a statement goInception did not back up (a `use`, a SELECT, backup off)."""
CONNECT_TIMEOUT_SECONDS = 10


def backup_server(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """pymysql connect arguments from the agent config's `goinception_backup` (host, port, user,
    password), or None when it is not configured."""
    raw = config.get("goinception_backup")
    if not raw:
        return None
    return {
        "host": str(raw.get("host") or "127.0.0.1"),
        "port": int(raw.get("port") or 3306),
        "user": str(raw.get("user") or raw.get("username") or ""),
        "password": str(raw.get("password") or ""),
    }


def wanted(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (backup database, sequence) pairs of the statements goInception backed up, in order."""
    return [(e["backup_db"], e["sequence"]) for e in entries if e["backup_db"] not in NO_BACKUP and e["sequence"]]


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def read_rollback(server: Mapping[str, Any], pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """Each pair's rollback statements (in the order goInception wrote them); a pair without a record maps
    to an empty list. Blocking: run it in a worker thread."""
    import pymysql

    out: dict[tuple[str, str], list[str]] = {}
    if not pairs:
        return out
    conn = pymysql.connect(**server, charset="utf8mb4", connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
    try:
        with conn.cursor() as cur:
            for db, sequence in pairs:
                opid = sequence.replace("'", "")  # goInception quotes it in some versions; Archery strips them
                cur.execute(f"SELECT tablename FROM {_ident(db)}.{_ident(INFO_TABLE)} WHERE opid_time = %s", (opid,))
                found = cur.fetchone()
                if not found:
                    out[(db, sequence)] = []
                    continue
                cur.execute(
                    f"SELECT rollback_statement FROM {_ident(db)}.{_ident(str(found[0]))} WHERE opid_time = %s "
                    "ORDER BY id",
                    (opid,),
                )
                out[(db, sequence)] = [str(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()
    return out
