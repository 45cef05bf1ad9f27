"""The file store over the real cloud and agent: uploads, dedup, downloads, and tasks using files."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness import ADMIN, Cloud, wait_for

MakeCloud = Callable[..., Cloud]


def curl_upload(cloud: Cloud, path: Path, filename: str | None = None) -> tuple[int, dict[str, Any]]:
    """Upload exactly as a CI job would: `curl -F file=@path`."""
    form = f"file=@{path}" + (f";filename={filename}" if filename else "")
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-F",
            form,
            "-H",
            f"Authorization: Bearer {ADMIN}",
            f"{cloud.url}/api/v1/files",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), httpx.Response(200, content=body).json()


def blobs(cloud: Cloud) -> list[Path]:
    root = cloud.data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]


def temps(cloud: Cloud) -> list[Path]:
    return list((cloud.data_dir / "files" / "tmp").iterdir())


def unique_bytes(tag: str) -> bytes:
    return f"{tag} {os.urandom(8).hex()}\n".encode()


def test_curl_upload_and_dedup_under_another_name(cloud: Cloud, tmp_path: Path) -> None:
    content = unique_bytes("migration")
    (tmp_path / "migration.sql").write_bytes(content)
    code, rec = curl_upload(cloud, tmp_path / "migration.sql")
    assert code == 201
    assert set(rec) == {"id", "name", "path", "size", "content_type", "md5", "sha256", "created_at", "updated_at"}
    assert rec["name"] == "migration.sql" and rec["size"] == len(content)
    assert rec["md5"] == hashlib.md5(content).hexdigest() and rec["sha256"] == hashlib.sha256(content).hexdigest()
    before = len(blobs(cloud))
    (tmp_path / "other.sql").write_bytes(content)
    code, again = curl_upload(cloud, tmp_path / "other.sql")
    assert code == 200 and again["id"] == rec["id"] and again["name"] == "migration.sql"
    assert len(blobs(cloud)) == before
    assert Path(rec["path"]).read_bytes() == content


def test_names_are_cleaned_and_clashes_prefixed(cloud: Cloud, tmp_path: Path) -> None:
    evil = tmp_path / "x"
    evil.write_bytes(unique_bytes("evil"))
    code, rec = curl_upload(cloud, evil, filename="../../etc/passwd")
    assert code == 201 and rec["name"] == "passwd"
    assert Path(rec["path"]).resolve().is_relative_to((cloud.data_dir / "files").resolve())
    clash = tmp_path / "y"
    clash.write_bytes(unique_bytes("clash"))
    code, second = curl_upload(cloud, clash, filename="passwd")
    assert code == 201 and second["name"] == f"{second['id']}_passwd"
    empty = tmp_path / "z"
    empty.write_bytes(unique_bytes("empty"))
    code, third = curl_upload(cloud, empty, filename="..")
    assert code == 201 and third["name"] == "file"


def test_concurrent_identical_uploads_give_one_record_one_blob(cloud: Cloud, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "same.bin"
    src.write_bytes(data)
    before = len(blobs(cloud))
    results: list[tuple[int, dict[str, Any]]] = []
    threads = [threading.Thread(target=lambda: results.append(curl_upload(cloud, src))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({rec["id"] for _, rec in results}) == 1
    assert sorted(code for code, _ in results).count(201) == 1
    assert len(blobs(cloud)) == before + 1
    assert temps(cloud) == []
    listed = cloud.http.get("/api/v1/files", params={"q": "same.bin"}).json()
    assert listed["total"] == 1


def test_over_the_limit_is_413_and_leaves_nothing(make_cloud: MakeCloud, tmp_path: Path) -> None:
    cloud = make_cloud(max_upload_bytes=1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    code, body = curl_upload(cloud, big)
    assert code == 413 and "upload limit" in body["error"]
    assert blobs(cloud) == [] and temps(cloud) == []
    assert cloud.http.get("/api/v1/files").json()["total"] == 0


def test_aborted_upload_leaves_no_temp_and_no_record(cloud: Cloud) -> None:
    before = cloud.http.get("/api/v1/files").json()["total"]
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    request = (
        f"POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", cloud.port)) as sock:
        sock.sendall(request + head + os.urandom(2 * 1024 * 1024))
        wait_for(lambda: temps(cloud), 10, "the upload to start")
    # The client hung up mid-body: the partial file goes, no record appears.
    wait_for(lambda: not temps(cloud), 10, "the partial upload to be removed")
    assert cloud.http.get("/api/v1/files").json()["total"] == before


def test_download_with_range_etag_and_disposition(cloud: Cloud, tmp_path: Path) -> None:
    content = b"0123456789" + unique_bytes("range")
    (tmp_path / "r.txt").write_bytes(content)
    _, rec = curl_upload(cloud, tmp_path / "r.txt")
    url = f"/api/v1/files/{rec['id']}/content"
    full = cloud.http.get(url)
    assert full.status_code == 200 and full.content == content
    assert full.headers["etag"] == f'"{rec["md5"]}"'
    assert 'filename="r.txt"' in full.headers["content-disposition"]
    part = cloud.http.get(url, headers={"Range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == b"2345"
    assert cloud.http.get(url, headers={"If-None-Match": f'"{rec["md5"]}"'}).status_code == 304
    assert cloud.http.get("/api/v1/files/file-999999").status_code == 404


def test_delete_refused_while_a_task_uses_the_file(cloud: Cloud, tmp_path: Path) -> None:
    (tmp_path / "busy.sh").write_bytes(b"sleep 30\n")
    _, rec = curl_upload(cloud, tmp_path / "busy.sh")
    task = cloud.create(type="shell", command='bash "$TIANGONG_FILE"', file_id=rec["id"]).json()
    r = cloud.http.delete(f"/api/v1/files/{rec['id']}")
    assert r.status_code == 409 and task["id"] in r.json()["error"]
    cloud.http.post(f"/api/v1/tasks/{task['id']}/cancel")
    cloud.wait_final(task["id"])
    assert cloud.http.delete(f"/api/v1/files/{rec['id']}").status_code == 204
    assert not Path(rec["path"]).exists()
    assert cloud.http.get(f"/api/v1/files/{rec['id']}").status_code == 404


def test_shell_task_runs_an_uploaded_script(cloud: Cloud, tmp_path: Path) -> None:
    script = tmp_path / "deploy.sh"
    script.write_text('echo "deploying $1 from $(basename "$0")"\n')
    _, rec = curl_upload(cloud, script)
    task = cloud.run(type="shell", command='bash "$TIANGONG_FILE" v2', file_id=rec["id"])
    assert task["status"] == "success", task
    assert task["result"] == "deploying v2 from deploy.sh\n"


def test_agent_caches_downloads_and_checks_md5(cloud: Cloud, tmp_path: Path) -> None:
    content = unique_bytes("cached")
    (tmp_path / "c.txt").write_bytes(content)
    _, rec = curl_upload(cloud, tmp_path / "c.txt")
    first = cloud.run(type="shell", command='cat "$TIANGONG_FILE"', file_id=rec["id"])
    assert first["result"] == content.decode()
    # Corrupt the cloud's copy: the agent still has a verified copy and does not download again.
    blob = Path(rec["path"])
    blob.write_bytes(b"corrupted")
    second = cloud.run(type="shell", command='cat "$TIANGONG_FILE"', file_id=rec["id"])
    assert second["result"] == content.decode()

    # A file no agent has cached yet, corrupted on the cloud: the download fails its MD5 check.
    other = unique_bytes("corrupt")
    (tmp_path / "d.txt").write_bytes(other)
    _, rec2 = curl_upload(cloud, tmp_path / "d.txt")
    Path(rec2["path"]).write_bytes(b"not what was uploaded")
    bad = cloud.run(type="shell", command='cat "$TIANGONG_FILE"', file_id=rec2["id"])
    assert bad["status"] == "failed" and "MD5" in bad["error"] and rec2["id"] in bad["error"]


def test_unknown_file_fails_the_task_clearly(cloud: Cloud) -> None:
    task = cloud.run(type="shell", command='cat "$TIANGONG_FILE"', file_id="file-987654")
    assert task["status"] == "failed" and "file-987654" in task["error"]


def test_file_task_places_the_file(cloud: Cloud, tmp_path: Path) -> None:
    content = unique_bytes("config")
    (tmp_path / "app.conf").write_bytes(content)
    _, rec = curl_upload(cloud, tmp_path / "app.conf")
    dest = tmp_path / "etc" / "app" / "app.conf"
    task = cloud.run(type="file", file_id=rec["id"], params={"path": str(dest), "mode": "0640"})
    assert task["status"] == "success", task
    assert task["data"] == {"path": str(dest), "size": len(content), "md5": rec["md5"]}
    assert dest.read_bytes() == content and stat.S_IMODE(dest.stat().st_mode) == 0o640
    again = cloud.run(type="file", file_id=rec["id"], params={"path": str(dest)})
    assert again["status"] == "failed" and "overwrite" in again["error"]
    dest.write_bytes(b"old")
    forced = cloud.run(type="file", file_id=rec["id"], params={"path": str(dest), "overwrite": True})
    assert forced["status"] == "success" and dest.read_bytes() == content
    assert [p.name for p in dest.parent.iterdir()] == ["app.conf"]  # no temp file left beside it
    r = cloud.create(type="file", params={"path": "/x"})
    assert r.status_code == 400 and "file_id" in r.json()["error"]
    r = cloud.create(type="file", file_id=rec["id"], params={"path": "/x", "mode": "rwx"})
    assert r.status_code == 400 and "params.mode" in r.json()["error"]


def test_zip_upload_roundtrip_is_readable_safely(cloud: Cloud, tmp_path: Path) -> None:
    """A zip travels byte for byte; what the agent may read from it is checked in the unit tests."""
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("sql/001.sql", "select 1;")
    code, rec = curl_upload(cloud, archive)
    assert code == 201 and rec["content_type"] == "application/zip"
    task = cloud.run(
        type="shell",
        command='unzip -p "$TIANGONG_FILE" sql/001.sql 2>/dev/null || '
        "python3 -c \"import sys,zipfile; print(zipfile.ZipFile(sys.argv[1]).read('sql/001.sql').decode())\" "
        '"$TIANGONG_FILE"',
        file_id=rec["id"],
    )
    assert task["result"].strip() == "select 1;"


def _downloads(cloud: Cloud) -> float:
    text = cloud.http.get("/metrics").text
    return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("tiangong_file_downloads_total")))


def test_concurrent_tasks_share_one_download(cloud: Cloud, tmp_path: Path) -> None:
    (tmp_path / "shared.txt").write_bytes(os.urandom(2 * 1024 * 1024))
    _, rec = curl_upload(cloud, tmp_path / "shared.txt")
    before = _downloads(cloud)
    ids = [
        cloud.create(type="shell", command='md5sum "$TIANGONG_FILE"', file_id=rec["id"]).json()["id"] for _ in range(4)
    ]
    results = [cloud.wait_final(i) for i in ids]
    assert all(t["status"] == "success" and t["result"].startswith(rec["md5"]) for t in results)
    assert _downloads(cloud) == before + 1


def raw_upload(cloud: Cloud, filename: bytes, content: bytes, part_type: bytes = b"text/plain") -> httpx.Response:
    """A multipart upload with the part's header bytes exactly as given (clients differ in how they encode)."""
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: " + part_type + b"\r\n\r\n" + content + b"\r\n--b0undary--\r\n"
    )
    return cloud.http.post(
        "/api/v1/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )


def test_non_ascii_names_are_kept_listed_and_downloaded_by_name(cloud: Cloud, tmp_path: Path) -> None:
    src = tmp_path / "部署.sql"
    content = unique_bytes("部署")
    src.write_bytes(content)
    code, rec = curl_upload(cloud, src)  # curl sends the name as raw UTF-8: this answered 500
    assert code == 201 and rec["name"] == "部署.sql"
    listed = cloud.http.get("/api/v1/files", params={"q": "部署"}).json()
    assert [f["name"] for f in listed["list"]] == ["部署.sql"]
    assert cloud.http.get(f"/api/v1/files/{rec['id']}").json()["name"] == "部署.sql"
    got = cloud.http.get(f"/api/v1/files/{rec['id']}/content")
    assert got.status_code == 200 and got.content == content
    # An ASCII fallback for old clients, and the real name for the others (RFC 6266 / 8187).
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"file.sql\"; filename*=UTF-8''%E9%83%A8%E7%BD%B2.sql"
    )
    # Latin-1 range names were decoded as UTF-8 twice over and stored as U+FFFD.
    r = raw_upload(cloud, "café.sql".encode(), unique_bytes("cafe"))
    assert r.status_code == 201 and r.json()["name"] == "café.sql"
    disposition = cloud.http.get(f"/api/v1/files/{r.json()['id']}/content").headers["content-disposition"]
    assert disposition == "attachment; filename=\"cafe.sql\"; filename*=UTF-8''caf%C3%A9.sql"
    # A client sending Latin-1 (not valid UTF-8) still gets its name.
    r = raw_upload(cloud, "naïve.sql".encode("latin-1"), unique_bytes("latin1"))
    assert r.status_code == 201 and r.json()["name"] == "naïve.sql"

    # The agent uses the name for its cached copy: a shell task sees it, a file task places it.
    task = cloud.run(type="shell", command='basename "$TIANGONG_FILE"; cat "$TIANGONG_FILE"', file_id=rec["id"])
    assert task["status"] == "success" and task["result"] == "部署.sql\n" + content.decode()
    dest = tmp_path / "目标" / "部署.sql"
    placed = cloud.run(type="file", file_id=rec["id"], params={"path": str(dest)})
    assert placed["status"] == "success", placed
    assert dest.read_bytes() == content


def test_hostile_names_are_stored_harmless(cloud: Cloud, tmp_path: Path) -> None:
    # Quotes and a second parameter in the name cannot add a parameter to the download's header.
    r = raw_upload(cloud, b"a.txt\\\"; filename*=UTF-8''evil.exe", unique_bytes("inject"))
    assert r.status_code == 201 and r.json()["name"] == "a.txt\"; filename*=UTF-8''evil.exe"
    got = cloud.http.get(f"/api/v1/files/{r.json()['id']}/content")
    assert got.headers["content-disposition"] == (
        'attachment; filename="a.txt__ filename__UTF-8__evil.exe"; '
        "filename*=UTF-8''a.txt%22%3B%20filename%2A%3DUTF-8%27%27evil.exe"
    )

    # Separators, `..`, control characters and a bidi override go; the rest of the name stays.
    r = raw_upload(cloud, "..\\..\\x/\u202egpj.\x1bsh".encode(), unique_bytes("bidi"))
    assert r.status_code == 201 and r.json()["name"] == "gpj.sh"

    # A long non-ASCII name is cut to 200 bytes of UTF-8, keeping its extension, so the agent can
    # cache it under its name (a file system allows 255 bytes).
    long_name = "部" * 300 + ".sql"
    content = unique_bytes("long")
    r = raw_upload(cloud, long_name.encode(), content)
    name = r.json()["name"]
    assert r.status_code == 201 and name.endswith(".sql") and len(name.encode()) <= 200
    task = cloud.run(type="shell", command='cat "$TIANGONG_FILE"', file_id=r.json()["id"])
    assert task["status"] == "success" and task["result"] == content.decode(), task

    # A part Content-Type that is not a media type is not kept (it goes back out as a header).
    r = raw_upload(cloud, b"t.sql", unique_bytes("ctype"), part_type="x\x7f部/y".encode())
    assert r.status_code == 201 and r.json()["content_type"] == "application/sql"
    assert cloud.http.get(f"/api/v1/files/{r.json()['id']}/content").status_code == 200


def test_file_task_with_a_name_near_the_limit(cloud: Cloud, tmp_path: Path) -> None:
    """The temp file beside the destination used the whole name plus 14 bytes: a 250-byte name failed."""
    content = unique_bytes("near-limit")
    (tmp_path / "src").write_bytes(content)
    _, rec = curl_upload(cloud, tmp_path / "src")
    dest = tmp_path / ("署" * 80 + ".conf")  # 245 bytes
    task = cloud.run(type="file", file_id=rec["id"], params={"path": str(dest)})
    assert task["status"] == "success", task
    assert dest.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", dest.name])


def test_nul_in_a_query_or_path_is_not_a_server_error(cloud: Cloud) -> None:
    """PostgreSQL refuses NUL in text: these answered 500 there (cloud.api.guard refuses it in every path
    and query value)."""
    r = cloud.http.get("/api/v1/files", params={"q": "a\x00b"})
    assert r.status_code == 400 and r.json()["error"].startswith("q: contains a NUL")
    r = cloud.http.get("/api/v1/agents/a%00b")
    assert r.status_code == 400 and r.json()["error"].startswith("agent_id: contains a NUL")
