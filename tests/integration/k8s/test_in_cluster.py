"""The in-cluster path, as in a pod: KUBERNETES_SERVICE_HOST/PORT, the service account's token, CA and
namespace files, HTTPS verified against that CA. Always the fake API server (served over TLS here): a
real cluster's in-cluster path needs a pod. Only the file paths the client reads are redirected."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from executors.base import Outcome
from executors.k8s import KubernetesExecutor
from executors.k8s import client as k8s_client
from executors.k8s.client import close_all
from tests.fakes.kube_api import FakeKubeApi
from tests.integration.k8s.manifests import as_yaml, configmap
from tests.unit.executors.harness import Harness, make_task
from wire.tasks import TaskStatus

POD_NAMESPACE = "apps"


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None
) -> x509.Certificate:
    """A CA certificate (issuer None: self-signed) or a server certificate for 127.0.0.1 signed by `issuer`."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _certificate(name, key, None)


@dataclass
class Pod:
    fake: FakeKubeApi
    service_account: Path
    workdir: Path

    def run(self, command: str) -> tuple[Outcome, Harness]:
        """One k8s task with an empty agent config: nothing names a kubeconfig, so the pod's account is used."""
        task = make_task(command, type="k8s", exec_timeout=30)

        async def main() -> tuple[Outcome, Harness]:
            ctx = Harness(workdir=self.workdir, deadline=asyncio.get_running_loop().time() + 30, config={})
            return await KubernetesExecutor(poll_seconds=0.02).run(task, ctx), ctx

        return asyncio.run(main())


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pod]:
    """The fake API server over HTTPS with a cluster CA, and a service-account directory as the kubelet
    mounts it (token, ca.crt, namespace), with the environment a pod has."""
    from kubernetes.config import incluster_config

    ca_key, ca = _new_ca("fake-cluster-ca")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("kube-apiserver", server_key, ("fake-cluster-ca", ca_key))
    (tmp_path / "server.pem").write_bytes(
        _pem(server_cert)
        + server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "server.pem")

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(_pem(ca))
    (account / "namespace").write_text(POD_NAMESPACE)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with FakeKubeApi(token="sa-token-7c1e", tls=tls) as fake:
        (account / "token").write_text(fake.token)
        namespaces = fake.store.type_of("", "v1", "namespaces")
        fake.store.create(
            namespaces, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NAMESPACE}}, "tests"
        )
        monkeypatch.setattr(k8s_client, "SERVICE_ACCOUNT_DIR", account)
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", fake.url.rsplit(":", 1)[1])
        monkeypatch.delenv("KUBECONFIG", raising=False)
        close_all()  # no client cached by an earlier test under the same in-cluster key
        try:
            yield Pod(fake, account, workdir)
        finally:
            close_all()


def test_in_a_pod_objects_land_in_the_service_accounts_namespace(pod: Pod) -> None:
    out, ctx = pod.run(as_yaml(configmap("from-the-pod")))
    assert out.status is TaskStatus.success, out.error
    assert out.data == [{"kind": "ConfigMap", "name": "from-the-pod", "namespace": POD_NAMESPACE, "action": "created"}]
    assert ctx.lines[0][1] == f"cluster {pod.fake.url} through the pod's service account"
    assert pod.fake.url.startswith("https://")
    configmaps = pod.fake.store.type_of("", "v1", "configmaps")
    assert pod.fake.store.key(configmaps, POD_NAMESPACE, "from-the-pod") in pod.fake.store.objects
    writes = [s for s in pod.fake.seen if s.method == "PATCH"]
    assert [s.path for s in writes] == [f"/api/v1/namespaces/{POD_NAMESPACE}/configmaps/from-the-pod"]
    # Every request, discovery included, carried the service account's token.
    assert pod.fake.seen and {s.authorization for s in pod.fake.seen} == {"bearer sa-token-7c1e"}


def test_the_api_server_is_verified_against_the_service_accounts_ca(pod: Pod) -> None:
    _, other_ca = _new_ca("some-other-ca")
    (pod.service_account / "ca.crt").write_bytes(_pem(other_ca))
    out, _ = pod.run(as_yaml(configmap("never")))
    assert out.status is TaskStatus.failed
    assert "cannot reach the Kubernetes API" in out.error and "CERTIFICATE_VERIFY_FAILED" in out.error
    assert pod.fake.seen == []  # no request got past the handshake
