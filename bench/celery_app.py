"""The Celery app bench/versus_celery.py measures: one task that runs `true`, as Tiangong's `execute` does.

The worker imports this module (`celery -A bench.celery_app worker`); the broker and the result backend
are the Redis database named by BENCH_CELERY_REDIS, which the bench flushes before it starts.
"""

from __future__ import annotations

import os
import subprocess

from celery import Celery

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/13")

app = Celery("tiangong_bench", broker=REDIS_URL, backend=REDIS_URL)
# Celery's defaults otherwise (JSON, prefetch multiplier 4, acks before the task runs): the comparison
# is against Celery as people run it. Results expire after the run, not after a day.
app.conf.update(result_expires=600, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="bench.execute_true")
def execute_true() -> dict[str, object]:
    """Run `true` with its output captured, as Tiangong's `execute` task does; return the exit code and output."""
    done = subprocess.run(["true"], capture_output=True, check=False)
    return {"exit_code": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()}
