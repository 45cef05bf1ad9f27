"""What idle agents cost the cloud: N simulated agents with nothing to run, and the cloud process's CPU as a
share of one core while they wait; prints JSON (issue 18, target 3: 1,000 agents under 5 % of a core).

    .venv/bin/python bench/idle_agents.py [--agents 1000] [--seconds 60] [--warmup 30] [--baseline 20]
        [--setup sqlite|postgres] [--transport channel|http]

One cloud process (SQLite, or a fresh PostgreSQL database) is started; N agents register through the API
with the bootstrap registration token, each receiving its own agent token, as real agents do. Then one
separate process (this script with `--simulate`) runs all N on aiohttp, each with its own connection
pool, doing what `agent/loop.py` does when idle over its transport:

- http: a claim long-poll (`wait_s` = the agent's default claim_wait_seconds, 25 s, capacity = its default
  max_concurrency, 4) again as soon as one ends, and a heartbeat listing no task every idle interval with
  that `wait_s` (an idle agent beats at twice heartbeat_seconds, within a third of the lease: both from the
  registration reply, as agent/loop.py computes it), skipped while its claim is in flight when the cloud
  says a claim shows the agent online (`claims_show_online`), as agent/loop.py does. `--kinds claim` or
  `--kinds heartbeat` runs only one of the two loops, to see what each costs.
- channel: the same two loops through the agent's own client (agent.client.CloudClient) pinned to its
  WebSocket channel (agent/channel.py): one connection per agent carrying both. As agent/loop.py does, an
  idle agent beats only while its channel is not open (the open channel, which the cloud pings, is what
  shows it online), and the client's claims on the channel wait CHANNEL_CLAIM_WAIT_SECONDS (300 s).

Agents start spread over one heartbeat period (as a fleet does), and after `--warmup` seconds the cloud's
user+system CPU (/proc/<pid>/stat) is read over `--seconds`. Printed: the cloud's CPU as % of a core, and
per agent; requests per second by kind; the cloud's CPU with no agent at all over `--baseline` seconds
(its background pass), for comparison; and, when py-spy is found (.venv/bin/py-spy, $PY_SPY or PATH), a
profile of the cloud over the window. The target is reported as met or not; nothing is asserted.

A transport is one coroutine per agent (TRANSPORTS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.client import CloudClient  # noqa: E402
from agent.loop import MAX_BEAT_WAIT_SECONDS  # noqa: E402
from bench.measuring import cpu_s  # noqa: E402
from bench.roundtrip import started_setup  # noqa: E402
from tests.e2e.harness import AGENT, REGISTER  # noqa: E402

TARGET_PERCENT = 5.0
CLAIM_WAIT = 25.0
"""agent/settings.py claim_wait_seconds default."""
CAPACITY = 4
"""agent/settings.py max_concurrency default: an idle agent claims all its slots."""
CLAIMS_SHOW_ONLINE = {"http": False}
"""What the cloud's registration replies said (RegisterReply.claims_show_online), set in the simulator."""


class Window:
    """Counts of requests that ended inside the measured window, by kind."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.counts: Counter[str] = Counter()

    def ended(self, kind: str) -> None:
        if self.start <= time.monotonic() <= self.end:
            self.counts[kind] += 1


Transport = Callable[[str, str, str, float, Window, frozenset[str]], Awaitable[None]]


def idle_beat(heartbeat_s: float, lease_s: float) -> float:
    """How often an idle agent beats (agent/loop.py's _heartbeat_loop with nothing listed)."""
    return max(heartbeat_s, min(2 * heartbeat_s, lease_s / 3, MAX_BEAT_WAIT_SECONDS))


async def http_agent(
    url: str, token: str, agent_id: str, heartbeat_s: float, window: Window, kinds: frozenset[str]
) -> None:
    """An idle agent on the HTTP protocol: claim long-polls back to back, and a heartbeat loop (`kinds`
    leaves one of them out, to see what each costs)."""
    timeout = aiohttp.ClientTimeout(total=CLAIM_WAIT + MAX_BEAT_WAIT_SECONDS + 15, connect=10)
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        await _http_loops(http, agent_id, heartbeat_s, window, kinds)


async def _http_loops(
    http: aiohttp.ClientSession, agent_id: str, heartbeat_s: float, window: Window, kinds: frozenset[str]
) -> None:
    claiming = False

    async def claims() -> None:
        nonlocal claiming
        body = {"capacity": CAPACITY, "wait_s": CLAIM_WAIT}
        while True:
            claiming = True
            try:
                async with http.post(f"/api/v1/agents/{agent_id}/claim", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"claim {agent_id}: {r.status}")
            finally:
                claiming = False
            window.ended("claim")

    async def heartbeats() -> None:
        body = {"running": [], "tokens": {}, "wait_s": heartbeat_s}
        while True:
            started = time.monotonic()
            # As agent/loop.py: an idle agent with a claim in flight does not beat where the cloud counts the
            # claim as a sighting (RegisterReply.claims_show_online); `--kinds heartbeat` alone always beats.
            if not (claiming and CLAIMS_SHOW_ONLINE["http"]):
                async with http.post(f"/api/v1/agents/{agent_id}/heartbeat", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"heartbeat {agent_id}: {r.status}")
                window.ended("heartbeat")
            await asyncio.sleep(max(0.0, heartbeat_s - (time.monotonic() - started)))

    loops = {"claim": claims, "heartbeat": heartbeats}
    await asyncio.gather(*(loops[k]() for k in sorted(kinds)))


async def channel_agent(
    url: str, token: str, agent_id: str, heartbeat_s: float, window: Window, kinds: frozenset[str]
) -> None:
    """An idle agent on its WebSocket channel, through the agent's own client."""
    client = CloudClient(url, token, agent_id, channel="websocket")

    async def claims() -> None:
        while True:
            await client.claim(CAPACITY, CLAIM_WAIT)
            window.ended("claim")

    async def heartbeats() -> None:
        while True:
            started = time.monotonic()
            if not client.channel_open:  # as agent/loop.py: an idle agent on an open channel does not beat
                await client.heartbeat({}, wait_s=heartbeat_s)
                window.ended("heartbeat")
            await asyncio.sleep(max(0.0, heartbeat_s - (time.monotonic() - started)))

    loops = {"claim": claims, "heartbeat": heartbeats}
    try:
        await asyncio.gather(*(loops[k]() for k in sorted(kinds)))
    finally:
        await client.aclose()


TRANSPORTS: dict[str, Transport] = {"http": http_agent, "channel": channel_agent}
KINDS = frozenset({"claim", "heartbeat"})


async def simulate(
    url: str,
    agents: dict[str, str],
    transport: str,
    heartbeat_s: float,
    warmup: float,
    seconds: float,
    kinds: frozenset[str] = KINDS,
) -> dict[str, Any]:
    """Run every agent until the window ends; the requests each kind completed inside it."""
    run = TRANSPORTS[transport]
    t0 = time.monotonic()
    window = Window(t0 + warmup, t0 + warmup + seconds)

    async def one(agent_id: str, token: str) -> None:
        await asyncio.sleep(random.uniform(0, heartbeat_s))  # a fleet's agents did not all start at once
        await run(url, token, agent_id, heartbeat_s, window, kinds)

    jobs = [asyncio.create_task(one(a, t)) for a, t in agents.items()]
    print("started", flush=True)
    done, _ = await asyncio.wait(jobs, timeout=warmup + seconds)
    for job in jobs:
        job.cancel()
    failures = [repr(j.exception()) for j in done if not j.cancelled() and j.exception()]
    await asyncio.gather(*jobs, return_exceptions=True)
    per_s = {kind: round(n / seconds, 1) for kind, n in sorted(window.counts.items())}
    return {"requests_per_s": per_s, "agent_failures": len(failures), "first_failures": failures[:3]}


async def register_all(url: str, n: int) -> tuple[dict[str, str], float, bool]:
    """N agents registered with the bootstrap registration token: agent id -> its own agent token; the
    idle heartbeat interval the replies imply; and whether a claim in flight shows an agent online."""
    tokens: dict[str, str] = {}
    claims_online = False
    heartbeat_s, lease_s = 5.0, 30.0
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {AGENT}"}) as http:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            nonlocal heartbeat_s, lease_s, claims_online
            agent_id = f"idle-{i:05d}"
            async with sem, http.post(REGISTER, json={"agent_id": agent_id, "executors": ["shell"]}) as r:
                reply = await r.json()
                if r.status != 200:
                    raise SystemExit(f"register {agent_id}: {r.status} {reply}")
            tokens[agent_id] = reply["agent_token"]
            heartbeat_s, lease_s = float(reply["heartbeat_seconds"]), float(reply["lease_seconds"])
            claims_online = bool(reply.get("claims_show_online", False))

        await asyncio.gather(*(one(i) for i in range(n)))
    return tokens, idle_beat(heartbeat_s, lease_s), claims_online


def cloud_cpu_percent(pid: int, seconds: float, profile: Path | None = None) -> tuple[float, dict[str, Any] | None]:
    """The cloud's CPU over the next `seconds` as % of one core (and a py-spy summary if `profile`)."""
    before, t0 = cpu_s(pid), time.monotonic()
    summary = None
    if profile is not None:
        from bench.profile_summary import record_profile

        summary = record_profile(pid, profile, lambda: time.sleep(seconds))
    else:
        time.sleep(seconds)
    return round((cpu_s(pid) - before) / (time.monotonic() - t0) * 100, 2), summary


def py_spy() -> str | None:
    local = ROOT / ".venv" / "bin" / "py-spy"
    return str(local) if local.exists() else os.environ.get("PY_SPY") or shutil.which("py-spy")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with started_setup(args.setup) as cluster:
        pid = cluster.a.proc.pid if cluster.a.proc else 0
        out: dict[str, Any] = {"setup": args.setup, "transport": args.transport, "agents": args.agents}
        out["kinds"] = args.kinds
        out["cloud_cpu_percent_no_agents"], _ = cloud_cpu_percent(pid, args.baseline)
        tokens, heartbeat_s, claims_online = asyncio.run(register_all(cluster.a.url, args.agents))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(tokens, f)
        cmd = [sys.executable, __file__, "--simulate", f.name, "--url", cluster.a.url, "--transport", args.transport]
        cmd += ["--heartbeat", str(heartbeat_s), "--warmup", str(args.warmup), "--seconds", str(args.seconds)]
        cmd += ["--kinds", args.kinds] + (["--claims-show-online"] if claims_online else [])
        sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            if sim.stdout.readline().strip() != "started":
                raise SystemExit("the simulator did not start")
            sim_pid = sim.pid
            time.sleep(args.warmup)
            spy = py_spy()
            profile = Path(tempfile.gettempdir()) / "tiangong-idle-agents.pyspy.txt" if spy else None
            if spy:
                os.environ.setdefault("PY_SPY", spy)
            sim_cpu0 = cpu_s(sim_pid)
            percent, summary = cloud_cpu_percent(pid, args.seconds, profile)
            sim_percent = round((cpu_s(sim_pid) - sim_cpu0) / args.seconds * 100, 1)
            counted = json.loads(sim.stdout.read())
        finally:
            sim.wait(timeout=120)
            os.unlink(f.name)
        out["heartbeat_seconds"] = heartbeat_s
        out["cloud_cpu_percent"] = percent
        out["cloud_cpu_ms_per_agent_per_s"] = round(percent * 10 / args.agents, 4)
        out["simulator_cpu_percent"] = sim_percent
        out.update(counted)
        out["profile"] = summary or {"note": "py-spy not found: no profile"}
        met = "met" if percent < TARGET_PERCENT else "not met"
        out["target"] = {f"{args.agents} idle agents: cloud CPU {percent} % of a core < {TARGET_PERCENT} %": met}
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=30.0, help="more than one claim wait: a steady state")
    ap.add_argument("--baseline", type=float, default=20.0, help="seconds of the cloud with no agent")
    ap.add_argument("--setup", default="sqlite")
    ap.add_argument("--transport", default="channel", choices=sorted(TRANSPORTS), help="the agent default: channel")
    ap.add_argument("--kinds", default="claim,heartbeat", help="what each agent does: claim, heartbeat or both")
    ap.add_argument("--simulate", type=Path, help=argparse.SUPPRESS)  # the agents' process: a tokens file
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--heartbeat", type=float, default=5.0, help=argparse.SUPPRESS)
    ap.add_argument("--claims-show-online", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.simulate:
        CLAIMS_SHOW_ONLINE["http"] = args.claims_show_online
        agents = json.loads(args.simulate.read_text())
        kinds = frozenset(args.kinds.split(","))
        counted = asyncio.run(
            simulate(args.url, agents, args.transport, args.heartbeat, args.warmup, args.seconds, kinds)
        )
        print(json.dumps(counted), flush=True)
        return
    print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
