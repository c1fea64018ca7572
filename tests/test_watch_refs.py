"""Registry.WatchRefs: every ref move as it happens, resumable, filtered by namespace and by what a token reads."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deltahub.auth import TokenTable
from deltahub.errors import PermissionDeniedError
from deltahub_client import Hub
from tests.conftest import run_cli
from tests.helpers import local_hub

TOKENS = """
tokens:
  - {name: admin, token: adm, scopes: {'*': admin}}
  - {name: fin-reader, token: fr, scopes: {fin: read, base: read}}
"""


def _follow(hub, *args, **kwargs) -> "queue.Queue":
    """Moves seen by a watch in a thread (daemon: the watch runs until the test's server stops)."""
    seen: queue.Queue = queue.Queue()
    ready = threading.Event()

    def run():
        moves = hub.watch_refs(*args, **kwargs)
        ready.set()
        try:
            for move in moves:
                seen.put(move)
        except Exception as err:  # noqa: BLE001 - the server stopping at the end of the test
            seen.put(err)

    threading.Thread(target=run, daemon=True).start()
    ready.wait(5)
    return seen


def _take(seen: "queue.Queue", n: int) -> list:
    return [seen.get(timeout=20) for _ in range(n)]


@pytest.mark.backends("embedded", "shared")
def test_ref_moves_stream_resume_and_stay_in_readable_namespaces(tmp_path, tiny_base, tiny_adapter, backend_config):
    with local_hub(tmp_path / "d", tokens=TokenTable.parse(TOKENS), **backend_config) as (_, _, address):
        with Hub(address, "adm", progress=False) as admin, Hub(address, "fr", progress=False) as reader:
            admin.push(tiny_base, "base/tiny", kind="model")
            mine = _follow(reader)                      # every namespace the token reads
            only_fin = _follow(admin, "fin")
            time.sleep(0.5)  # both watches open before the moves
            rev = admin.push(tiny_adapter, "fin/lora", kind="adapter", base="base/tiny").revision
            admin.push(tiny_adapter, "med/lora", kind="adapter", base="base/tiny")  # not the reader's
            admin.tag("fin/lora", "prod", "main")
            admin.delete_ref("fin/lora", "prod")
            got = _take(mine, 3)
            assert [(m.artifact, m.ref, m.digest) for m in got] == [
                ("fin/lora", "main", rev.digest), ("fin/lora", "prod", rev.digest), ("fin/lora", "prod", "")]
            assert got[2].deleted and got[0].seq < got[1].seq < got[2].seq
            assert [(m.artifact, m.ref) for m in _take(only_fin, 3)] == [
                ("fin/lora", "main"), ("fin/lora", "prod"), ("fin/lora", "prod")]
            assert mine.empty()  # med/lora's move was never sent to a token that cannot read med
            # resume after the first: the rest come again, from the log
            again = admin.watch_refs("fin", after=got[0].seq)
            assert [next(again).seq, next(again).seq] == [got[1].seq, got[2].seq]
            again.close()
            with pytest.raises(PermissionDeniedError):
                next(reader.watch_refs("med"))
            # the CLI: one line per event, --count to stop
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("deltahub")), "watch-refs", "fin", "--count", "1", "--json",
                 "--hub", address, "--token", "fr"], stdout=subprocess.PIPE, text=True)
            time.sleep(2)
            admin.tag("fin/lora", "v2", "main")
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0 and '"ref": "v2"' in out and rev.digest in out
    assert run_cli("watch-refs", "--help").returncode == 0


def test_hostile_ref_watches_get_statuses_not_errors_and_stalled_ones_are_bounded(tmp_path):
    """Raw gRPC, as any client may send it: bad fields are INVALID_ARGUMENT (never INTERNAL), another tenant's
    namespace PERMISSION_DENIED, and watches past the per-token stream limit RESOURCE_EXHAUSTED."""
    import grpc

    from deltahub.limits import StreamLimits
    from deltahub.v1 import registry_pb2, registry_pb2_grpc

    with local_hub(tmp_path / "d", tokens=TokenTable.parse(TOKENS),
                   streams=StreamLimits(max_streams_per_principal=2)) as (_, _, address):
        with grpc.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            meta = (("authorization", "Bearer fr"),)

            def first(request, metadata=meta):
                call = stub.WatchRefs(request, metadata=metadata, timeout=5)
                try:
                    next(call)
                except grpc.RpcError as err:
                    return err.code(), err.details()
                finally:
                    call.cancel()

            admin = (("authorization", "Bearer adm"),)  # malformed fields: refused whoever asks
            for request, code, metadata in [
                (registry_pb2.WatchRefsRequest(after=-5), grpc.StatusCode.INVALID_ARGUMENT, admin),
                (registry_pb2.WatchRefsRequest(namespace="../etc"), grpc.StatusCode.INVALID_ARGUMENT, admin),
                (registry_pb2.WatchRefsRequest(artifact="fin"), grpc.StatusCode.INVALID_ARGUMENT, admin),
                (registry_pb2.WatchRefsRequest(artifact="med/lora"), grpc.StatusCode.PERMISSION_DENIED, meta),
                (registry_pb2.WatchRefsRequest(namespace="med"), grpc.StatusCode.PERMISSION_DENIED, meta),
            ]:
                got, details = first(request, metadata)
                assert got == code, (request, got, details)
            assert first(registry_pb2.WatchRefsRequest(), metadata=())[0] == grpc.StatusCode.UNAUTHENTICATED
            # stalled watches that read nothing: two are held, the third is refused with what to do
            held = [stub.WatchRefs(registry_pb2.WatchRefsRequest(), metadata=meta) for _ in range(2)]
            for call in held:
                call.initial_metadata()  # each watch is open on the hub
            got, details = first(registry_pb2.WatchRefsRequest())
            assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams-per-principal" in details
            for call in held:
                call.cancel()
