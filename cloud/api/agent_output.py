"""An agent's log batch or result, cleaned before it is stored (cloud.services.output): on the event
loop when small, in a worker thread when large, so masking megabytes never stalls the cloud."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from cloud.api.deps import AppContext
from cloud.services import output
from wire.masker import Masker
from wire.tasks import LogBatch, LogLine, TaskReport


async def cleaned_lines(app: AppContext, task_id: str, batch: LogBatch) -> list[LogLine]:
    """The batch's lines with the task's secrets masked and NUL characters replaced."""
    masker = _masker(app, task_id, batch.task_token)
    if output.output_chars(batch.lines) > output.OFFLOAD_CHARS:
        return await run_in_threadpool(output.clean_lines, batch.lines, masker)
    return output.clean_lines(batch.lines, masker)


async def cleaned_report(app: AppContext, task_id: str, report: TaskReport) -> TaskReport:
    """The report with its secrets masked, NUL characters replaced, and its result cut to max_log_bytes."""
    masker = _masker(app, task_id, report.task_token)
    cap = app.settings.max_log_bytes
    if output.output_chars(report.lines, report) > output.OFFLOAD_CHARS:
        return await run_in_threadpool(output.clean_report, report, masker, cap)
    return output.clean_report(report, masker, cap)


def _masker(app: AppContext, task_id: str, token: str) -> Masker:
    masker = output.kept_masker(token)
    if masker is None:
        with app.db.transaction() as conn:
            masker = output.masker_for(conn, task_id, token, app.sealer)
    return masker
