"""Cluster access for `k8s` tasks: which credentials, one cached dynamic client per cluster, discovery.

Credentials, first match wins:
1. the agent config names `kubeconfig` (and/or `context`): that file (or `KUBECONFIG`) and context;
2. running in a pod (KUBERNETES_SERVICE_HOST and a service-account token): the pod's service account;
3. otherwise `KUBECONFIG`, else `~/.kube/config`, with its current context.
An explicit setting beats detection so an agent in one cluster can be pointed at another.

Everything here blocks (file reads, HTTP): the executor calls it from a worker thread.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executors.k8s.errors import K8sError, describe_discovery, describe_transport

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
MAX_CLIENTS = 8
"""Clusters kept connected at once; an agent normally talks to one."""


@dataclass(frozen=True)
class Source:
    """Where the credentials come from."""

    in_cluster: bool
    kubeconfig: str = ""
    """A path, or several joined by os.pathsep as in KUBECONFIG."""
    context: str | None = None

    def describe(self) -> str:
        if self.in_cluster:
            return "the pod's service account"
        return f"kubeconfig {self.kubeconfig}" + (f" (context {self.context})" if self.context else "")


def choose_source(config: Mapping[str, Any], environ: Mapping[str, str]) -> Source:
    """Pick the credentials for the agent config `config` (see the module docstring for the order)."""
    kubeconfig, context = config.get("kubeconfig"), config.get("context")
    fallback = environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if kubeconfig or context:
        return Source(False, str(kubeconfig or fallback), str(context) if context else None)
    if environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").is_file():
        return Source(True)
    return Source(False, fallback)


class Cluster:
    """One cluster's dynamic client, its default namespace, and a lock around discovery."""

    def __init__(self, api_client: Any, dynamic: Any, default_namespace: str, source: Source) -> None:
        self.api_client = api_client
        self.dynamic = dynamic
        self.host: str = api_client.configuration.host
        self.default_namespace = default_namespace
        """The kubeconfig context's namespace, or the pod's own namespace, else `default`."""
        self.source = source
        # The discoverer fills its cache lazily and is not thread-safe; tasks run in parallel threads.
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        """The API resource for `apiVersion`/`kind`, found by discovery (a miss refreshes it once)."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

        prefix = "apis" if "/" in api_version else "api"  # so a CRD kind named Pod cannot shadow v1 Pod
        with self._lock:
            try:
                return self.dynamic.resources.get(prefix=prefix, api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise K8sError(
                    f"the cluster has no kind {kind} in apiVersion {api_version} (a typo, or its CRD is not installed)",
                    "NoKind",
                ) from None
            except ResourceNotUniqueError:
                raise K8sError(f"kind {kind} in apiVersion {api_version} is ambiguous on this cluster") from None

    def close(self) -> None:
        self.api_client.close()


_clients: OrderedDict[tuple[Any, ...], Cluster] = OrderedDict()
_clients_lock = threading.Lock()


def connect(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Cluster:
    """The cached Cluster for this agent config; built (and discovered) on first use or when the
    kubeconfig file changed."""
    source = choose_source(config, os.environ if environ is None else environ)
    key = (source, _mtimes(source))
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            _clients.move_to_end(key)
            return found
    cluster = _build(source)  # outside the lock: may run a credential plugin or wait on the network
    with _clients_lock:
        found = _clients.get(key)
        if found is not None:
            cluster.close()
            return found
        _clients[key] = cluster
        while len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)[1].close()
    return cluster


def close_all() -> None:
    """Drop every cached client and close its connections (tests, shutdown)."""
    with _clients_lock:
        while _clients:
            _clients.popitem()[1].close()


def _mtimes(source: Source) -> tuple[float, ...]:
    if source.in_cluster:
        return ()
    paths = [Path(p).expanduser() for p in source.kubeconfig.split(os.pathsep) if p]
    return tuple(p.stat().st_mtime if p.exists() else -1.0 for p in paths)


def _build(source: Source) -> Cluster:
    import urllib3
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.dynamic import DynamicClient

    configuration = client.Configuration()
    try:
        if source.in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
            namespace = _read(SERVICE_ACCOUNT_DIR / "namespace")
        else:
            kube_config.load_kube_config(
                config_file=source.kubeconfig,
                context=source.context,
                client_configuration=configuration,
                persist_config=False,  # never rewrite the operator's kubeconfig
            )
            namespace = _context_namespace(source)
    except (ConfigException, OSError, ValueError) as exc:
        missing = not source.in_cluster and all(_mtime < 0 for _mtime in _mtimes(source))
        hint = (
            f"; not running in a pod and no kubeconfig at {source.kubeconfig} "
            "(set kubeconfig in the agent config, or KUBECONFIG)"
            if missing
            else ""
        )
        raise K8sError(f"no cluster access through {source.describe()}: {exc}{hint}", "NoAccess") from None
    api_client = client.ApiClient(configuration)
    try:  # the first discovery requests go out here
        dynamic = DynamicClient(api_client, cache_file=str(_cache_file(source, configuration.host)))
    except Exception as exc:
        api_client.close()
        if isinstance(getattr(exc, "status", None), int):
            raise describe_discovery(exc) from None
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError | ValueError):
            raise describe_transport(exc, configuration.host) from None
        raise
    return Cluster(api_client, dynamic, namespace or "default", source)


def _context_namespace(source: Source) -> str | None:
    from kubernetes import config as kube_config

    contexts, current = kube_config.list_kube_config_contexts(config_file=source.kubeconfig)
    chosen = next((c for c in contexts if c.get("name") == source.context), None) if source.context else current
    return ((chosen or {}).get("context") or {}).get("namespace")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


_cache_dir: Path | None = None


def _cache_file(source: Source, host: str) -> Path:
    """The discovery cache of one cluster, in a directory private to this process.

    The client's default is a predictable file in /tmp keyed by host only: another local user could plant
    a poisoned one, and two clusters behind the same proxy URL would share it.
    """
    global _cache_dir
    with _clients_lock:
        if _cache_dir is None:
            _cache_dir = Path(tempfile.mkdtemp(prefix="tiangong-k8s-"))  # mode 0700
            atexit.register(shutil.rmtree, _cache_dir, True)
    digest = hashlib.sha256(repr((source, host)).encode()).hexdigest()[:24]
    return _cache_dir / f"discovery-{digest}.json"
