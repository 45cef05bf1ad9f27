"""Two builds of Tiangong side by side on the sequential sync round trip; prints JSON (issue 18).

    .venv/bin/python bench/side_by_side.py BASE [OTHER] [--calls 2000] [--block 50]

BASE and OTHER are git revisions; OTHER left out means this checkout as it is (uncommitted changes
included). A revision is checked out into a temporary worktree, removed afterwards; both builds run on
this checkout's .venv (a revision whose dependencies differ needs `make install` of its own first).

Each build gets its own cloud (SQLite, a process) and one agent (concurrency 1), started before the
first call; then `execute true` round trips (sync, a fresh HTTP connection per call, as curl makes them)
alternate between the two in blocks of `--block` calls until each has made `--calls`. This VM's speed
moves within minutes, by more than most changes measured here; alternating blocks give both builds the
same machine, so the ratios hold where figures taken one after the other drift. Printed per build: p50,
p95, p99, and the CPU per call of its cloud and its agent; then OTHER / BASE for each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# This checkout's, in both builds' children too (standard library only).
from bench.measuring import WARM_UP, percentiles, sampled_calls, sync_true_call  # noqa: E402


@contextlib.contextmanager
def build(rev: str | None) -> Iterator[Path]:
    """The source tree of `rev` (a temporary worktree), or this checkout for None."""
    if rev is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="tiangong-side-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def serve(tree: Path) -> None:
    """In a child process: start `tree`'s cloud and agent (its own test harness), then make the number of
    round trips each stdin line asks for, answering each line with their times and the CPU they took."""
    # `tree`'s harness, which starts `tree`'s code (`python -m cli.main` in it).
    sys.path.insert(0, str(tree))
    from tests.e2e.harness import ADMIN
    from tests.faults.harness import Cluster

    with tempfile.TemporaryDirectory(prefix="tiangong-side-run-") as tmp:
        cluster = Cluster(Path(tmp)).start()
        try:
            agent = cluster.agent("side", max_concurrency=1)
            assert cluster.a.proc is not None and agent.proc is not None
            call = sync_true_call(cluster.a.port, ADMIN, "side")
            pids = {"cloud": cluster.a.proc.pid, "agent": agent.proc.pid}
            for _ in range(WARM_UP):
                call()
            print("ready", flush=True)
            for line in sys.stdin:
                block = sampled_calls(call, int(line), pids, warm_up=0)
                cpu_ms = {name: block[f"{name}_cpu_ms_per_call"] * int(line) for name in pids}
                print(json.dumps({"samples_ms": block["samples_ms"], "cpu_ms": cpu_ms}), flush=True)
        finally:
            cluster.close()


def summary(samples_ms: list[float], cpu_ms: dict[str, float]) -> dict[str, Any]:
    """A build's figures: percentiles of its round trips, and CPU per call (ms) of each of its processes."""
    n = len(samples_ms)
    return percentiles(samples_ms) | {f"{name}_cpu_ms_per_call": round(ms / n, 3) for name, ms in cpu_ms.items()}


def ratios(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """OTHER / BASE for every figure both have (the call count aside)."""
    return {key: round(other[key] / base[key], 3) for key in base if key != "n" and base[key] and key in other}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", nargs="?", help="a git revision")
    ap.add_argument("other", nargs="?", help="a git revision (default: this checkout as it is)")
    ap.add_argument("--calls", type=int, default=2000, help="round trips per build")
    ap.add_argument("--block", type=int, default=50, help="round trips in a row before the other build's turn")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child process's mode
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if args.base is None:
        ap.error("name the base revision, e.g. HEAD~1")
    names = {"base": args.base, "other": args.other or "this checkout"}
    with build(args.base) as base_tree, build(args.other) as other_tree:
        trees = {"base": base_tree, "other": other_tree}
        children = {
            name: subprocess.Popen(
                [sys.executable, __file__, "--serve", str(tree)],
                cwd=tree,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, tree in trees.items()
        }
        got: dict[str, dict[str, Any]] = {name: {"samples_ms": [], "cpu_ms": {}} for name in trees}
        try:
            for name, child in children.items():
                assert child.stdout is not None
                if child.stdout.readline().strip() != "ready":
                    raise SystemExit(f"the {name} build ({names[name]}) did not start; its error is above")
            for _ in range(max(1, args.calls // args.block)):
                for name, child in children.items():
                    assert child.stdin is not None and child.stdout is not None
                    child.stdin.write(f"{args.block}\n")
                    child.stdin.flush()
                    block = json.loads(child.stdout.readline())
                    got[name]["samples_ms"] += block["samples_ms"]
                    for process, ms in block["cpu_ms"].items():
                        got[name]["cpu_ms"][process] = got[name]["cpu_ms"].get(process, 0.0) + ms
        finally:
            for child in children.values():
                if child.stdin is not None:
                    child.stdin.close()
            for child in children.values():
                child.wait(timeout=60)
    figures = {name: summary(g["samples_ms"], g["cpu_ms"]) for name, g in got.items()}
    out = {
        "builds": names,
        "block": args.block,
        **figures,
        "other_over_base": ratios(figures["base"], figures["other"]),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
