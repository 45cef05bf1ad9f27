"""Masking runs in linear time on any input, and finds a task's secret values by key, list and shape."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from wire.masker import Masker, task_secrets
from wire.secrets import MASK, mask_args, mask_command, mask_secrets, mask_text

ROOT = Path(__file__).resolve().parents[3]


def test_masking_adversarial_megabytes_completes() -> None:
    """Inputs that made the old URL regex backtrack (29 s on 40 KB) or could make any pattern quadratic.
    In a child process, so that a regression fails on the hang guard instead of hanging the suite; the
    figures themselves are in bench/masking.py."""
    code = textwrap.dedent(
        """
        from wire.masker import Masker, task_secrets
        from wire.secrets import mask_command, mask_secrets, mask_text
        n = 1_000_000
        inputs = [
            "a" * n, "a://b:" * (n // 6), "-a." * (n // 3), "--password '" * (n // 12),
            "authorization: " * (n // 15), "pwd_" * (n // 4), '--password "a' * (n // 13),
            ("a" * 41 + "_pass=") * (n // 47), "x" * n + "://", "http://u:" + "p" * n,
        ]
        masker = Masker.of(["s3cr3t-value", "a" * 3000 + "b", "hunter22"])
        for text in inputs:
            mask_text(text); mask_command(text, mysql=True); masker.text(text)
            task_secrets({"cmd": "mysql", "args": [text], "x": text}, {"V": text}, text)
            mask_secrets({"args": [text, "--password", text], "s": text})
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_url_passwords_are_masked_as_before() -> None:
    assert mask_text("mysql://app:s3cr3t@db:3306/x") == f"mysql://app:{MASK}@db:3306/x"
    assert mask_text("a mysql://app:s3cr3t@db and pg://u:p%40w@h") == f"a mysql://app:{MASK}@db and pg://u:{MASK}@h"
    assert mask_text("see http://example.com/a:b") == "see http://example.com/a:b"
    assert mask_text("://u:p@h") == "://u:p@h"  # no scheme


def test_command_line_shapes_are_masked() -> None:
    command = (
        "mysql -uroot -pS3cret db && curl -H 'Authorization: Bearer xyz123' --password=abcd --token 'q w' "
        "x --db-password Pw9 && PGPASSWORD=zz9 psql"
    )
    assert mask_command(command) == (
        f"mysql -uroot -p{MASK} db && curl -H 'Authorization: Bearer {MASK}' --password={MASK} --token '{MASK}' "
        f"x --db-password {MASK} && PGPASSWORD={MASK} psql"
    )
    # Look-alikes keep their values: -p of other tools, flags naming a file, words that end in "pass".
    kept = "mkdir -p /x && ssh -p2222 h --password-file /etc/pw --bypass x COMPASS=north --verbose"
    assert mask_command(kept) == kept
    assert mask_args(["-uroot", "-pS3cret", "--password", "hunter2", "--token", "-x"], mysql=True) == [
        "-uroot",
        f"-p{MASK}",
        "--password",
        MASK,
        "--token",
        "-x",
    ]


def test_shown_params_mask_keys_listed_in_secret_keys_and_execute_args() -> None:
    params = {"cmd": "mysql", "args": ["-pS3cret", "--password", "x"], "secret_keys": ["dsn"], "dsn": "abc"}
    assert mask_secrets(params, frozenset(["dsn"]), mysql=True) == {
        "cmd": "mysql",
        "args": [f"-p{MASK}", "--password", MASK],
        "secret_keys": ["dsn"],  # the list of names is not itself a secret
        "dsn": MASK,
    }


def test_a_tasks_secret_values_are_found_everywhere_it_was_given_them() -> None:
    params = {
        "cmd": "mysql",
        "args": ["-pArgPw-1", "--password", "ArgPw-2"],
        "target": {"password": "TargetPw-3", "port": 3306},
        "headers": {"Authorization": "Bearer BearerTok-4", "Proxy-Authorization": "Basic dXNlcjpCYXNpY1B3LTU="},
        "secret_keys": ["dsn"],
        "dsn": "DsnValue-6",
        "url": "https://u:UrlPw-7@h/x",
    }
    env = {"API_TOKEN": "EnvTok-8", "DSN": "not-listed", "dsn": "EnvDsn-9"}
    found = set(task_secrets(params, env, "echo --password=CmdPw-10"))
    expected = {"ArgPw-1", "ArgPw-2", "TargetPw-3", "Bearer BearerTok-4", "BearerTok-4", "BasicPw-5"}
    expected |= {"DsnValue-6", "UrlPw-7", "EnvTok-8", "EnvDsn-9", "CmdPw-10"}
    assert expected <= found
    assert "3306" not in found and "not-listed" not in found and "https://u:UrlPw-7@h/x" not in found


@pytest.mark.parametrize("build", [Masker.for_task, Masker.for_task_later])
def test_values_mask_every_occurrence_but_never_ordinary_words(build: Callable[..., Masker]) -> None:
    masker = build({"password": "password", "token": "abc", "api_key": "K3y-value"}, {})
    assert masker.holdback == len("K3y-value") - 1  # a line cut in pieces keeps a secret's length back
    assert masker.secrets == ("K3y-value",)  # "password" is a word and "abc" too short to mask
    assert masker.text("Wrong password; K3y-valueK3y-value K3y-value") == f"Wrong password; {MASK}{MASK} {MASK}"
    assert masker.lines(["a K3y-value", "K3y-", "value", "x\ny K3y-value"]) == [
        f"a {MASK}",
        "K3y-",
        "value",
        f"x\ny {MASK}",
    ]
    # As JSON output and URLs carry a value with quotes or '@' in it.
    special = Masker.of(['pa"ss@word1'])
    assert special.text('{"pw": "pa\\"ss@word1"} ?pw=pa%22ss%40word1') == f'{{"pw": "{MASK}"}} ?pw={MASK}'


def test_data_is_masked_at_any_depth_without_recursion() -> None:
    masker = Masker.of(["S3cret-value"])
    deep: object = "S3cret-value"
    for _ in range(5000):
        deep = [deep]
    value = masker.value({"rows": [{"S3cret-value": "x S3cret-value"}], "deep": deep, "n": 1})
    assert value["rows"] == [{MASK: f"x {MASK}"}] and value["n"] == 1
    inner = value["deep"]
    for _ in range(5000):
        inner = inner[0]
    assert inner == MASK
    shown = mask_secrets({"x": deep, "password": "pw"})  # a stored row of any depth can be shown
    assert shown["password"] == MASK


@pytest.mark.parametrize(
    "command",
    [
        "export PGPASSWORD=hunter22; psql -h db -c 'select 1'",
        "PGPASSWORD=hunter22&&psql",
        "run --password=hunter22|tee x",
        "mysql -phunter22; echo done",
        "run --token=hunter22)",
    ],
)
def test_a_shell_character_after_a_bare_value_does_not_hide_the_secret(command: str) -> None:
    """The secret ends at the shell metacharacter, so the bare value printed by the task is masked."""
    masker = Masker.for_task({}, {}, command)
    assert "hunter22" not in masker.text("x hunter22 x")
