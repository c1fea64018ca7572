"""TLS and mutual TLS, and the refusal to send tokens in plaintext across a network."""

from __future__ import annotations

import pytest
import trustme

from deltahub.auth import TokenTable
from deltahub.errors import InvalidInputError, UnavailableError
from deltahub_client import Hub, TLSOptions
from deltahub_server import ServerConfig, create_server
from tests.conftest import run_cli

TOKENS = "tokens: [{token: t0k, scopes: {'*': admin}}]"


@pytest.fixture()
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@deltahub")
    paths = {}
    for name, blob in {"ca": ca.cert_pem, "cert": server.cert_chain_pems[0], "key": server.private_key_pem,
                       "client_cert": client.cert_chain_pems[0], "client_key": client.private_key_pem}.items():
        paths[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths


def _serve(tmp_path, pki, **extra):
    return create_server(ServerConfig(data_dir=tmp_path / "d", address="127.0.0.1:0", tokens=TokenTable.parse(TOKENS),
                                      tls_cert=pki["cert"], tls_key=pki["key"], **extra))


def test_tls_with_the_ca_works_and_plaintext_does_not(tmp_path, pki, tiny_base):
    running = _serve(tmp_path, pki)
    address = f"127.0.0.1:{running.port}"
    try:
        with Hub(address, "t0k", progress=False, tls=TLSOptions(ca=pki["ca"])) as hub:
            assert hub.health() == "SERVING"
            hub.push(tiny_base, "base/tiny", kind="model")
            assert [a.name for a in hub.list_artifacts()] == ["base/tiny"]
        with Hub(address, "t0k", progress=False, timeout=3) as plain, pytest.raises(UnavailableError):
            plain.list_artifacts()
        # the system roots do not trust this CA
        with Hub(address, "t0k", progress=False, timeout=3, tls=TLSOptions(enabled=True)) as untrusted:
            with pytest.raises(UnavailableError):
                untrusted.list_artifacts()
        # the CLI, with the CA from the environment
        proc = run_cli("--hub", address, "ls", "--json", env={"DELTAHUB_TOKEN": "t0k", "DELTAHUB_TLS_CA": str(pki["ca"])})
        assert proc.returncode == 0, proc.stderr
        assert "base/tiny" in proc.stdout
    finally:
        running.stop()


def test_mutual_tls_needs_a_client_certificate(tmp_path, pki):
    running = _serve(tmp_path, pki, tls_client_ca=pki["ca"])
    address = f"127.0.0.1:{running.port}"
    try:
        with Hub(address, "t0k", progress=False, timeout=3, tls=TLSOptions(ca=pki["ca"])) as anonymous:
            with pytest.raises(UnavailableError):
                anonymous.list_artifacts()
        tls = TLSOptions(ca=pki["ca"], cert=pki["client_cert"], key=pki["client_key"])
        with Hub(address, "t0k", progress=False, tls=tls) as hub:
            assert hub.list_artifacts() == []
        proc = run_cli("--hub", address, "--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client_cert"]),
                       "--tls-key", str(pki["client_key"]), "health", env={"DELTAHUB_TOKEN": "t0k"})
        assert proc.returncode == 0, proc.stderr
    finally:
        running.stop()


def test_in_process_worker_reaches_a_tls_hub(tmp_path, pki, tiny_base, tiny_dataset):
    running = _serve(tmp_path, pki)
    try:
        with Hub(f"127.0.0.1:{running.port}", "t0k", progress=False, tls=TLSOptions(ca=pki["ca"])) as hub:
            hub.push(tiny_base, "base/tiny", kind="model")
            hub.push(tiny_dataset, "data/d", kind="dataset")
            job = hub.train("lora", base="base/tiny", data=["data/d"], out="fin/lora",
                            config={"steps": 2, "batch_size": 2, "max_length": 16}, wait=True)
            assert job.state == "SUCCEEDED", job.error
    finally:
        running.stop()


def test_tokens_in_plaintext_off_loopback_are_refused(tmp_path, pki):
    config = ServerConfig(data_dir=tmp_path / "d", address="0.0.0.0:0", tokens=TokenTable.parse(TOKENS))
    with pytest.raises(InvalidInputError, match="--tls-cert CERT --tls-key KEY, or --insecure"):
        create_server(config)
    config.insecure = True
    create_server(config).stop()
    config.insecure = False
    config.tls_cert, config.tls_key = pki["cert"], pki["key"]
    create_server(config).stop()
    with pytest.raises(InvalidInputError, match="both --tls-cert and --tls-key"):
        create_server(ServerConfig(data_dir=tmp_path / "e", tls_cert=pki["cert"]))
