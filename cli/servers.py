"""Commands that run processes: the cloud, an agent, or both together for local use."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cli import handoff
from cli.supervise import Supervisor
from wire import logs


def _logging(level: str = "INFO") -> None:
    """The process's own log: JSON lines unless stderr is a terminal (TIANGONG_LOG_FORMAT=json|text|auto)."""
    fmt = os.environ.get("TIANGONG_LOG_FORMAT", "auto").strip().lower() or "auto"
    if fmt not in ("auto", "json", "text"):
        raise typer.BadParameter(f"TIANGONG_LOG_FORMAT: {fmt!r} is not one of auto, json, text")
    logs.configure(level, fmt)  # type: ignore[arg-type]  # checked just above


def cloud(
    host: Annotated[str, typer.Option(envvar="TIANGONG_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TIANGONG_PORT", help="Port to listen on.")] = 8080,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (TIANGONG_DATA_DIR).")] = None,
    secrets_fd: Annotated[int | None, typer.Option(hidden=True, help="Pipe with secret settings.")] = None,
) -> None:
    """Run the cloud server."""
    check_port(host, port)
    # Tasks of an agent of the same user on this machine could read our environment.
    given = _secrets_out_of_env(secrets_fd)
    from cloud.server import serve
    from cloud.settings import CloudSettings

    _logging()
    overrides: dict[str, object] = dict(handoff.as_settings(given))
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = CloudSettings(**overrides)  # type: ignore[arg-type]
    serve(settings, host, port)


def agent(
    server: Annotated[str | None, typer.Option(help="Cloud URL (TIANGONG_SERVER).")] = None,
    agent_id: Annotated[str | None, typer.Option(help="Agent id (TIANGONG_AGENT_ID).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Agent token (TIANGONG_AGENT_TOKEN); --token-file keeps it out of `ps`.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the agent token (TIANGONG_AGENT_TOKEN_FILE).")
    ] = None,
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
    from agent.private import private_dir
    from agent.settings import AgentSettings, parse_labels

    _logging()
    overrides: dict[str, object] = {
        k: v
        for k, v in {
            "server": server,
            "agent_id": agent_id,
            "agent_token": token,
            "agent_token_file": token_file,
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
        raise typer.BadParameter("an agent token is required: --token-file, TIANGONG_AGENT_TOKEN_FILE or --token")
    if token is not None or handoff.secrets_in(os.environ):
        # Tasks could read the token from this process's environment or command line: start again
        # without it, reading it from a pipe instead.
        handoff.reexec_without_secrets(
            settings.agent_token.get_secret_value(), ["--token", "--token-file"], "--token-file", as_path=True
        )
    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise typer.BadParameter(f"data_dir: {settings.data_dir}: {exc.strerror or exc}") from exc
    asyncio.run(serve(settings))


def up(
    host: Annotated[str, typer.Option(help="Address the cloud listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the cloud listens on.")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="Data directory for the cloud and the agent.")] = Path("./data"),
    agent_id: Annotated[str, typer.Option(help="Id of the local agent.")] = "local",
    secrets_fd: Annotated[int | None, typer.Option(hidden=True, help="Pipe with secret settings.")] = None,
) -> None:
    """The cloud plus one local agent, on embedded SQLite: everything for a first run."""
    check_port(host, port)  # before anything starts: a cloud already there would answer our agent with 401s
    given = _secrets_out_of_env(secrets_fd)  # the local agent's tasks could read them from our environment
    from cloud.settings import CloudSettings
    from cloud.tokens import load_tokens

    _logging()
    # From the start, not only once the banner is out: a SIGTERM right after the banner must still stop
    # the children cleanly (the default action would kill this process and orphan them).
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = data_dir.resolve()
    settings = CloudSettings(data_dir=data_dir, **handoff.as_settings(given))  # type: ignore[arg-type]
    tokens = load_tokens(data_dir, settings.admin_token, settings.agent_token)
    # The children see no secret in their environment (nor on their command lines): each gets its own
    # through a pipe, read at start.
    cloud_secrets = {**given, "TIANGONG_ADMIN_TOKEN": tokens.admin, "TIANGONG_AGENT_TOKEN": tokens.agent}
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    procs = [
        _start(["cloud", "--host", host, "--port", str(port), "--data-dir", str(data_dir)], json.dumps(cloud_secrets))
    ]
    code = 0
    try:
        _wait_until(lambda: _ready(url), procs[0], "the cloud to become ready")
        agent_args = ["agent", "--server", url, "--agent-id", agent_id, "--data-dir", str(data_dir / "agent")]
        procs.insert(0, _start(agent_args, tokens.agent, as_path=True))
        # Print the example only once it works: the agent must have registered first.
        _wait_until(lambda: _agent_online(url, tokens.admin, agent_id), procs[0], f"agent {agent_id} to come online")
        _banner(url, tokens.admin, agent_id)
        code = Supervisor(procs, agent_id, lambda: _start(agent_args, tokens.agent, as_path=True)).run()
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
    if code:
        raise typer.Exit(code)


def check_port(host: str, port: int) -> None:
    """Exit with one line when `host:port` is taken. Found later, the cloud would fail to bind while our
    readiness check and agent talked to whatever holds the port (`401: invalid token` from another cloud)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = f"port {port} on {host} is already in use (another `tiangong up` or another server)"
                typer.echo(f"error: {why}: stop it, or choose another port: --port 9090 (make run PORT=9090)", err=True)
            else:
                typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None


def _secrets_out_of_env(secrets_fd: int | None) -> dict[str, str]:
    """The secret settings handed over in pipe `secrets_fd`; given in the environment instead, this
    process starts again without them there, with them in a pipe."""
    given = handoff.read_secrets(secrets_fd) if secrets_fd is not None else {}
    in_env = handoff.secrets_in(os.environ)
    if in_env:
        payload = json.dumps({**in_env, **given})
        handoff.reexec_without_secrets(payload, ["--secrets-fd"], "--secrets-fd", as_path=False)
    return given


def _start(args: list[str], secret: str, *, as_path: bool = False) -> subprocess.Popen[bytes]:
    """`tiangong <args>` with `secret` in a pipe: `--token-file /dev/fd/<n>` (as_path) or `--secrets-fd <n>`."""
    fd = handoff.pipe_with(secret)
    try:
        option = ["--token-file", f"/dev/fd/{fd}"] if as_path else ["--secrets-fd", str(fd)]
        cmd = [sys.executable, "-m", "cli.main", *args, *option]
        return subprocess.Popen(cmd, env=handoff.without_secrets(os.environ), pass_fds=(fd,))
    finally:
        os.close(fd)  # the child has its own copy


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
