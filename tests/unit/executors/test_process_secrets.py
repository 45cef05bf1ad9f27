"""A process's output leaves the executor with the task's secrets masked, however the output was cut."""

from __future__ import annotations

from pathlib import Path

from executors.db.params import scrub, scrub_value
from executors.process import CHUNK
from tests.unit.executors.harness import make_task, run_task
from wire.secrets import MASK
from wire.tasks import LogStream, TaskStatus

SECRET = "Tok-s3cr3t-42"


def test_a_secret_written_in_pieces_is_masked(tmp_path: Path) -> None:
    command = "printf 'Tok-s3'; sleep 0.2; printf 'cr3t-42 and Tok-s3cr3t-42Tok-s3cr3t-42\\n'"
    task = make_task(command, env={"API_TOKEN": SECRET})
    out, ctx = run_task(task, tmp_path)
    assert out.status is TaskStatus.success
    assert out.result == f"{MASK} and {MASK}{MASK}\n"
    assert ctx.lines == [(LogStream.stdout, f"{MASK} and {MASK}{MASK}")]


def test_a_secret_across_the_cut_of_an_overlong_line_is_masked(tmp_path: Path) -> None:
    # The line is logged in CHUNK pieces: the first cut falls inside the secret.
    script = f"import sys; sys.stdout.write('a' * {CHUNK - 4} + '{SECRET}' + 'b' * 10 + '\\n')"
    task = make_task(type="python", command=script, password=SECRET)
    out, ctx = run_task(task, tmp_path)
    pieces = ctx.stream(LogStream.stdout)
    assert len(pieces) >= 2
    assert "".join(pieces) == "a" * (CHUNK - 4) + MASK + "b" * 10
    assert out.result == "a" * (CHUNK - 4) + MASK + "b" * 10 + "\n"


def test_secrets_in_stderr_and_the_error_are_masked(tmp_path: Path) -> None:
    task = make_task(f"echo 'login failed for {SECRET}' >&2; exit 3", dsn=SECRET, secret_keys=["dsn"])
    out, ctx = run_task(task, tmp_path)
    assert out.status is TaskStatus.failed
    assert out.error == f"exit code 3: login failed for {MASK}"
    assert ctx.stream(LogStream.stderr) == [f"login failed for {MASK}"]


def test_secrets_of_the_command_line_are_masked_in_output(tmp_path: Path) -> None:
    command = "echo Pw-glued-1 Pw-eq-2 Pw-sep-3 # mysql -pPw-glued-1 --password=Pw-eq-2 --password Pw-sep-3"
    out, _ = run_task(make_task(command), tmp_path)
    assert out.result == f"{MASK} {MASK} {MASK}\n"


def test_nul_characters_become_the_replacement_character(tmp_path: Path) -> None:
    out, ctx = run_task(make_task("printf 'a\\0b\\n'"), tmp_path)
    assert out.result == "a\ufffdb\n"
    assert ctx.lines == [(LogStream.stdout, "a\ufffdb")]


def test_database_scrub_masks_values_not_the_word_password() -> None:
    """A server's `Wrong password` stays readable when the password tried was `password` itself."""
    assert scrub("Code: 193. Wrong password for user default", ["password"]) == (
        "Code: 193. Wrong password for user default"
    )
    assert scrub("user:Hunter-22@db Hunter-22", ["Hunter-22", "ab"]) == f"user:{MASK}@db {MASK}"
    assert scrub_value({"rows": [["Hunter-22", 1]]}, ["Hunter-22"]) == {"rows": [[MASK, 1]]}
