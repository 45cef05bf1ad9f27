"""Commands that run processes: the cloud, an agent, or both together for local use."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters


def cloud(
    host: Annotated[str, typer.Option(envvar="TIANGONG_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TIANGONG_PORT", help="Port to listen on.")] = 8080,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (TIANGONG_DATA_DIR).")] = None,
) -> None:
    """Run the cloud server."""
    from cloud.server import serve
    from cloud.settings import CloudSettings

    _logging()
    settings = CloudSettings() if data_dir is None else CloudSettings(data_dir=data_dir)
    serve(settings, host, port)


def agent(
    server: Annotated[str | None, typer.Option(help="Cloud URL (TIANGONG_SERVER).")] = None,
    agent_id: Annotated[str | None, typer.Option(help="Agent id (TIANGONG_AGENT_ID).")] = None,
    token: Annotated[str | None, typer.Option(help="Agent token (TIANGONG_AGENT_TOKEN).")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Tasks at once (TIANGONG_MAX_CONCURRENCY).")] = None,
    labels: Annotated[list[str] | None, typer.Option(help="k=v, repeatable (TIANGONG_LABELS as JSON).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Work dir and caches (TIANGONG_DATA_DIR).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML: connections, goinception_url, kubeconfig (TIANGONG_AGENT_CONFIG).")
    ] = None,
) -> None:
    """Run an agent: long-poll the cloud for tasks and run them."""
    import asyncio

    from pydantic import ValidationError

    from agent.config import load_config
    from agent.loop import serve
    from agent.settings import AgentSettings, parse_labels

    _logging()
    overrides: dict[str, object] = {
        k: v
        for k, v in {
            "server": server,
            "agent_id": agent_id,
            "agent_token": token,
            "max_concurrency": max_concurrency,
            "data_dir": data_dir,
            "agent_config": config,
        }.items()
        if v is not None
    }
    try:
        if labels:
            overrides["labels"] = parse_labels(labels)
        settings = AgentSettings(**overrides)  # type: ignore[arg-type]
        load_config(settings.agent_config)  # a bad file stops the agent here, with the reason
    except (ValueError, ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not settings.agent_token.get_secret_value():
        raise typer.BadParameter("an agent token is required: --token or TIANGONG_AGENT_TOKEN")
    asyncio.run(serve(settings))


def up(
    host: Annotated[str, typer.Option(help="Address the cloud listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the cloud listens on.")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="Data directory for the cloud and the agent.")] = Path("./data"),
    agent_id: Annotated[str, typer.Option(help="Id of the local agent.")] = "local",
) -> None:
    """The cloud plus one local agent, on embedded SQLite: everything for a first run."""
    from cloud.settings import CloudSettings
    from cloud.tokens import load_tokens

    # From the start, not only once the banner is out: a SIGTERM right after the banner must still stop
    # the children cleanly (the default action would kill this process and orphan them).
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = data_dir.resolve()
    settings = CloudSettings(data_dir=data_dir)
    tokens = load_tokens(data_dir, settings.admin_token, settings.agent_token)
    env = {**os.environ, "TIANGONG_ADMIN_TOKEN": tokens.admin, "TIANGONG_AGENT_TOKEN": tokens.agent}
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    me = [sys.executable, "-m", "cli.main"]
    cloud_proc = subprocess.Popen(
        [*me, "cloud", "--host", host, "--port", str(port), "--data-dir", str(data_dir)], env=env
    )
    procs = [cloud_proc]
    try:
        _wait_until(lambda: _ready(url), cloud_proc, "the cloud to become ready")
        agent_proc = subprocess.Popen(
            [*me, "agent", "--server", url, "--agent-id", agent_id, "--data-dir", str(data_dir / "agent")], env=env
        )
        procs.insert(0, agent_proc)
        # Print the example only once it works: the agent must have registered first.
        _wait_until(lambda: _agent_online(url, tokens.admin, agent_id), agent_proc, f"agent {agent_id} to come online")
        _banner(url, tokens.admin, agent_id)
        _wait_any(procs)
    except KeyboardInterrupt:
        pass  # SIGINT/SIGTERM while starting: stop what was started
    finally:
        for proc in procs:  # the agent first, so it can drain while the cloud still answers
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _agent_online(url: str, admin_token: str, agent_id: str) -> bool:
    import httpx

    try:
        r = httpx.get(f"{url}/api/v1/agents/{agent_id}", headers={"Authorization": f"Bearer {admin_token}"}, timeout=1)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and r.json().get("status") == "online"


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Poll `check` until true; stop early with a clear message if `proc` exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            typer.echo(f"gave up waiting for {what}: the process exited with code {proc.returncode}", err=True)
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            typer.echo(f"gave up waiting for {what} after {timeout:.0f} s", err=True)
            raise typer.Exit(1)
        time.sleep(0.1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_any(procs: list[subprocess.Popen[bytes]]) -> None:
    """Until one child exits or we get SIGINT/SIGTERM."""
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _banner(url: str, admin_token: str, agent_id: str) -> None:
    body = f'{{"agent_id":"{agent_id}","type":"shell","command":"echo hello","sync":true,"timeout":30}}'
    print(
        f"\nTiangong is up at {url}  (API docs: {url}/docs)\n"
        f"Admin token: {admin_token}\n\nTry it:\n"
        f"  export TOKEN={admin_token}\n"
        f'  curl -s -X POST {url}/api/v1/tasks -H "Authorization: Bearer $TOKEN" \\\n'
        f"    -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n",
        flush=True,
    )
