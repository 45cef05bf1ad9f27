"""Database tasks through the real cloud and agent: secrets kept out of storage, API and logs; files; cancel."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import yaml

from tests.e2e.harness import Cloud, wait_for
from tests.e2e.test_files import curl_upload
from tests.integration.db.conftest import PASSWORD, MariaDb, PgDb, mariadb, mariadb_account, pg  # noqa: F401
from tests.integration.db.test_postgres import _running as pg_running


def test_password_is_sealed_in_storage_and_masked_everywhere(cloud: Cloud, mariadb: MariaDb) -> None:  # noqa: F811
    task = cloud.run(
        type="mysql",
        command="CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1); SELECT id FROM t",
        params={"target": mariadb.target(), "metadata": {"ticket": "OPS-1"}},
    )
    assert task["status"] == "success", task["error"]
    assert task["params"]["target"]["password"] == "******"
    assert task["data"][2]["rows"] == [[1]]
    assert task["result"].startswith("Ticket: OPS-1\n")
    lines = [line["message"] for line in cloud.logs(task["id"])]
    assert any(m.startswith("[2/3] INSERT INTO t VALUES (1): affected 1 rows in ") for m in lines)
    listed = cloud.http.get("/api/v1/tasks", params={"type": "mysql"}).text
    rpc = cloud.http.post(
        "/api/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "task_query", "params": {"task_id": task["id"]}}
    ).text
    n = task["id"].removeprefix("task-")
    ((stored,),) = cloud.sql(f"SELECT CAST(params AS TEXT) FROM tasks WHERE id = {n}")
    for where in (json.dumps(task), "\n".join(lines), listed, rpc):
        assert PASSWORD not in where
    assert PASSWORD not in stored
    assert set(json.loads(stored)["target"]["password"]) == {"$sealed"}


def test_named_connection_from_the_agent_config_and_a_zip(
    cloud: Cloud,
    mariadb: MariaDb,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"connections": {"shop": {"type": "mysql", **mariadb.target()}}}))
    cloud.agent("db-agent", TIANGONG_AGENT_CONFIG=str(config))
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.md", "release notes")
        zf.writestr("sql/001.sql", "CREATE TABLE orders (id INT PRIMARY KEY);\nINSERT INTO orders VALUES (7);\n")
    code, rec = curl_upload(cloud, archive)
    assert code == 201
    task = cloud.run(agent_id="db-agent", type="mysql", file_id=rec["id"], params={"connection": "shop"})
    assert task["status"] == "success", task["error"]
    assert mariadb.query("SELECT id FROM orders") == [(7,)]


def test_cancel_from_the_api_stops_the_query_on_the_server(cloud: Cloud, pg: PgDb) -> None:  # noqa: F811
    created = cloud.create(type="postgres", command="SELECT pg_sleep(60)", params={"target": pg.target()}).json()
    wait_for(lambda: pg_running(pg, "pg_sleep(60)"), 20, "the query to run on the server")
    assert cloud.http.post(f"/api/v1/tasks/{created['id']}/cancel").status_code == 200
    done = cloud.wait_final(created["id"], 30)
    assert done["status"] == "canceled"
    assert not pg_running(pg, "pg_sleep(60)")


def test_bad_params_are_refused_at_the_door(cloud: Cloud) -> None:
    r = cloud.create(type="postgres", command="SELECT 1", params={"target": {"host": "db", "port": "x"}})
    assert r.status_code == 400
    assert r.json()["error"].startswith("params.target.port: ")
    r = cloud.create(type="mysql", command="", params={"connection": "main"})
    assert r.status_code == 400 and r.json()["error"].startswith("command: command is empty")
