"""Upload throughput and memory of the cloud for one large file over loopback; prints JSON.

    .venv/bin/python bench/upload.py [--mib 1024]

The caller streams a multipart body (as `curl -F file=@big` would) from a 1 MiB block repeated, so
the caller's own disk is out of the picture. Reported: MB/s from the first byte sent to the 201, and
the cloud's peak RSS growth during the upload (VmHWM after, reset before via /proc/<pid>/clear_refs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import ADMIN, Cloud, cloud_env  # noqa: E402

MIB = 1024 * 1024
BOUNDARY = "tiangongbenchboundary"


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def upload(url: str, mib: int) -> tuple[float, dict[str, object], str]:
    block = os.urandom(MIB)
    expected = hashlib.md5(usedforsecurity=False)
    for _ in range(mib):
        expected.update(block)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(mib):
            yield block
        yield tail

    headers = {
        "Authorization": f"Bearer {ADMIN}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(head) + mib * MIB + len(tail)),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
        t0 = time.perf_counter()
        async with http.post(f"{url}/api/v1/files", data=body(), headers=headers) as resp:
            record = await resp.json()
            elapsed = time.perf_counter() - t0
        if resp.status != 201:
            raise SystemExit(f"upload failed: {resp.status} {record}")
    return elapsed, record, expected.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="size of the upload in MiB")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiangong-upload-") as tmp:
        cloud = Cloud(Path(tmp), cloud_env(TIANGONG_MAX_UPLOAD_BYTES=str(args.mib * MIB))).start()
        try:
            assert cloud.proc is not None
            pid = cloud.proc.pid
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
            rss_before = _kib(pid, "VmRSS")
            elapsed, record, md5 = asyncio.run(upload(cloud.url, args.mib))
            peak = _kib(pid, "VmHWM")
        finally:
            cloud.close()
    size = args.mib * MIB
    print(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "bytes": size,
                "seconds": round(elapsed, 3),
                "mb_per_s": round(size / elapsed / 1e6, 1),
                "mib_per_s": round(size / elapsed / MIB, 1),
                "cloud_rss_before_mib": round(rss_before / 1024, 1),
                "cloud_peak_rss_growth_mib": round((peak - rss_before) / 1024, 1),
                "md5_matches": record["md5"] == md5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
