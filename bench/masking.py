"""Time of every masking function on 10 MB of mixed text and on adversarial input; prints JSON.

    .venv/bin/python bench/masking.py [--mb 10]

Mixed text: log-like lines of words, numbers, JSON, non-ASCII, URLs with and without passwords,
command lines with `--password=x`, and the task's secret values here and there. Adversarial: 1 MB
inputs built to make a pattern backtrack (the old URL regex took ~29 s on 40 KB of `a`), reported
with the old regex's time on 5 KB and 10 KB for comparison (it grew with the square of the length).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wire.masker import Masker, task_secrets  # noqa: E402
from wire.secrets import mask_command, mask_secrets, mask_text  # noqa: E402

SECRETS = ["Pw-s3cret-71", "Tok-9f8e7d6c", "dsn-Secret-55", "bearer-Xy7-credential", "K3y-" + "x" * 60]
_OLD_URL = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<post>@)", re.I)


def mixed_text(size: int) -> str:
    rng = random.Random(7)
    words = ["deploy", "ok", "error", "Wrong", "password", "user", "host", "42", "é", "数据", "--verbose", "x=1"]
    pieces = [
        lambda: " ".join(rng.choices(words, k=rng.randint(3, 15))),
        lambda: f"connect mysql://app:{rng.choice(SECRETS)}@db:3306/x ok",
        lambda: f"GET https://example.com/a/b?q={rng.randint(0, 9999)} 200",
        lambda: json.dumps({"id": rng.randint(0, 10**6), "msg": "done", "token": rng.choice(SECRETS)}),
        lambda: f"mysql -uroot -p{rng.choice(SECRETS)} -e 'select 1' --password={rng.choice(SECRETS)}",
    ]
    lines: list[str] = []
    total = 0
    while total < size:
        line = rng.choice(pieces)()
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=10)
    args = parser.parse_args()
    text = mixed_text(int(args.mb * 1_000_000))
    lines = text.split("\n")
    masker = Masker.of(SECRETS)
    params = {"password": SECRETS[0], "args": lines[:20_000], "headers": {"Authorization": "Bearer " + SECRETS[3]}}
    mixed = {
        "mb": args.mb,
        "secrets": len(masker.secrets),
        "output_text_s": timed(lambda: masker.text(text)),
        "output_lines_s": timed(lambda: masker.lines(lines)),
        "output_data_s": timed(lambda: masker.value({"rows": [[line] for line in lines]})),
        "mask_text_s": timed(lambda: mask_text(text)),
        "mask_command_s": timed(lambda: mask_command(text, mysql=True)),
        "task_secrets_s": timed(lambda: task_secrets(params, {"TOKEN": SECRETS[1]}, text)),
        "shown_params_s": timed(lambda: mask_secrets(params)),
    }
    n = 1_000_000
    adversarial_inputs = {
        "a": "a" * n,
        "scheme_colon": "a://b:" * (n // 6),
        "url_passwords": "a://u:p@h " * (n // 10),
        "flags": "--password '" * (n // 12),
        "dashes": "-a." * (n // 3),
        "headers": "authorization: " * (n // 15),
        "assignments": "x_pwd=1 " * (n // 8),
    }
    adversarial: dict[str, float] = {}
    for name, sample in adversarial_inputs.items():
        adversarial[name] = max(
            timed(lambda s=sample: mask_text(s)),  # type: ignore[misc]
            timed(lambda s=sample: mask_command(s, mysql=True)),  # type: ignore[misc]
            timed(lambda s=sample: masker.text(s)),  # type: ignore[misc]
            timed(lambda s=sample: task_secrets({"args": [s]}, {}, s)),  # type: ignore[misc]
        )
    old = {f"old_url_regex_a{k}_s": timed(lambda k=k: _OLD_URL.sub("", "a" * k)) for k in (5000, 10000)}  # type: ignore[misc]
    figures = {"mixed": mixed, "adversarial_1mb_worst_s": adversarial, **old}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
