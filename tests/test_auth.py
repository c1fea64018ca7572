"""Bearer tokens with scopes per namespace, checked by the interceptor on every RPC."""

import grpc
import pytest

from deltahub.auth import Scope, TokenTable
from deltahub.errors import InvalidInputError, PermissionDeniedError, UnauthenticatedError
from tests.helpers import local_hub

TOKENS = """
tokens:
  - {name: admin, token: root-token, scopes: {"*": admin}}
  - {name: fin-writer, token: fin-token, scopes: {finance: write, base: read}}
  - {name: reader, sha256: "%s", scopes: {"*": read}}
"""


@pytest.fixture()
def secured(tmp_path):
    import hashlib

    table = TokenTable.parse(TOKENS % hashlib.sha256(b"read-token").hexdigest())
    with local_hub(tmp_path / "d", tokens=table) as (_, _, address):
        yield address


def test_scopes_are_ordered_and_namespaced():
    table = TokenTable.parse(TOKENS % ("0" * 64))
    p = table.authenticate("fin-token")
    assert p.allows("finance", Scope.WRITE) and not p.allows("finance", Scope.ADMIN)
    assert p.allows("base", Scope.READ) and not p.allows("base", Scope.WRITE)
    assert not p.allows("law", Scope.READ)
    with pytest.raises(UnauthenticatedError):
        table.authenticate("nope")
    with pytest.raises(InvalidInputError, match="unknown scope"):
        TokenTable.parse("tokens: [{token: x, scopes: {a: superuser}}]")


def test_tokens_load_from_file_or_environment(tmp_path):
    f = tmp_path / "tokens.yaml"
    f.write_text(TOKENS % ("0" * 64))
    assert len(TokenTable.load(f)) == 3
    assert len(TokenTable.load(environ={"DELTAHUB_TOKENS": '{"tokens": [{"token": "t", "scopes": {"*": "read"}}]}'})) == 1
    assert len(TokenTable.load(environ={"DELTAHUB_TOKENS_FILE": str(f)})) == 3
    assert not TokenTable.load(environ={})


def test_every_rpc_needs_a_known_token_with_the_right_scope(secured, tiny_base, tiny_adapter):
    from deltahub_client import Hub

    with Hub(secured, progress=False) as anonymous:
        with pytest.raises(UnauthenticatedError, match="needs a bearer token"):
            anonymous.list_artifacts()
        assert anonymous.health() == "SERVING"  # health stays open for probes
    with Hub(secured, "wrong", progress=False) as bad:
        with pytest.raises(UnauthenticatedError, match="not known"):
            bad.show("base/x")
    with Hub(secured, "root-token", progress=False) as admin:
        admin.push(tiny_base, "base/tiny", kind="model")
        assert admin.show("base/tiny").created_by == "admin"
    with Hub(secured, "fin-token", progress=False) as writer:
        with pytest.raises(PermissionDeniedError, match="lacks write scope on namespace 'base'"):
            writer.push(tiny_base, "base/other", kind="model")
        rev = writer.push(tiny_adapter, "finance/lora", kind="adapter", base="base/tiny").revision
        assert rev.created_by == "fin-writer"
        with pytest.raises(PermissionDeniedError, match="admin"):
            writer.delete_artifact("finance/lora")
    with Hub(secured, "read-token", progress=False) as reader:
        assert {a.name for a in reader.list_artifacts()} == {"base/tiny", "finance/lora"}
        with pytest.raises(PermissionDeniedError):
            reader.tag("finance/lora", "prod")
        with pytest.raises(PermissionDeniedError, match="lacks admin scope"):
            reader.collect_garbage()


def test_listing_shows_only_readable_namespaces(tmp_path, tiny_base):
    from deltahub_client import Hub

    table = TokenTable.parse("tokens: [{token: a, scopes: {'*': admin}}, {token: l, scopes: {law: read}}]")
    with local_hub(tmp_path / "d", tokens=table) as (_, _, address):
        with Hub(address, "a", progress=False) as admin:
            admin.push(tiny_base, "base/tiny", kind="model")
            admin.push(tiny_base, "law/tiny", kind="model")
        with Hub(address, "l", progress=False) as law:
            assert [a.name for a in law.list_artifacts()] == ["law/tiny"]


def test_open_hub_listens_on_loopback_only(tmp_path):
    from deltahub_server import ServerConfig, create_server

    with pytest.raises(InvalidInputError, match="loopback only"):
        create_server(ServerConfig(data_dir=tmp_path / "d", address="0.0.0.0:0"))


def test_raw_metadata_is_read(secured):
    from deltahub.v1 import registry_pb2, registry_pb2_grpc

    with grpc.insecure_channel(secured) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        resp = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(), metadata=(("authorization", "Bearer root-token"),))
        assert list(resp.artifacts) == []
        with pytest.raises(grpc.RpcError) as info:
            stub.ListArtifacts(registry_pb2.ListArtifactsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
