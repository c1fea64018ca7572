"""Every bad push is refused before commit, with a clear status and message,
and leaves the catalog and blob store exactly as they were."""

import hashlib
import json
import shutil
import struct

import grpc
import pytest
import torch

from deltahub.errors import (
    ChecksumMismatchError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    UnsafeFormatError,
)
from deltahub.v1 import common_pb2, registry_pb2, registry_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from tests.conftest import store_state
from tests.helpers import local_hub, make_adapter, make_tiny_llama, write_safetensors

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture()
def adapter_copy(tmp_path, tiny_adapter):
    dest = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, dest)
    return dest


def refused(server, folder, exc, match, *, kind="adapter", artifact="finance/bad", base="base/tiny-llama"):
    hub, store, _ = server
    before = store_state(store)
    with pytest.raises(exc, match=match):
        hub.push(folder, artifact, kind=kind, base=base)
    assert store_state(store) == before, "a refused push changed the store"
    assert list(store.blobs.inner._tmp.iterdir()) == []


def test_pickle_weights_are_refused_before_upload(server, pushed_base, adapter_copy):
    (adapter_copy / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle; never loaded
    refused(server, adapter_copy, UnsafeFormatError, "pickle")
    assert list(server[1].blobs.inner._uploads.iterdir()) == []  # not a byte was sent


def test_truncated_header_length(server, pushed_base, adapter_copy):
    (adapter_copy / WEIGHTS).write_bytes(struct.pack("<Q", 1 << 30) + b"{}")
    refused(server, adapter_copy, InvalidInputError, "corrupt or truncated safetensors header")


def test_corrupt_header_json(server, pushed_base, adapter_copy):
    raw = b"{this is not json}     "
    (adapter_copy / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw)
    refused(server, adapter_copy, InvalidInputError, "not valid JSON")


def test_header_declares_more_bytes_than_sent(server, pushed_base, adapter_copy):
    data = (adapter_copy / WEIGHTS).read_bytes()
    (adapter_copy / WEIGHTS).write_bytes(data[:-100])
    refused(server, adapter_copy, InvalidInputError, "header declares .* bytes of tensor data but the file holds only")


def test_nan_and_inf_values(server, pushed_base, adapter_copy):
    from safetensors.torch import load_file

    tensors = load_file(adapter_copy / WEIGHTS)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    write_safetensors(adapter_copy / WEIGHTS, tensors)
    refused(server, adapter_copy, InvalidInputError, "contains NaN")
    tensors[key][0, 0] = float("inf")
    write_safetensors(adapter_copy / WEIGHTS, tensors)
    refused(server, adapter_copy, InvalidInputError, "contains Inf")


def test_adapter_shapes_must_fit_the_base(server, pushed_base, tmp_path):
    from tests import helpers

    wide = dict(helpers.TINY_LLAMA, hidden_size=96, intermediate_size=192)
    old = helpers.TINY_LLAMA
    helpers.TINY_LLAMA = wide
    try:
        other_base = make_tiny_llama(tmp_path / "wide")
    finally:
        helpers.TINY_LLAMA = old
    adapter = make_adapter(other_base, tmp_path / "wide-adapter")
    refused(server, adapter, InvalidInputError, "does not fit base weight")


def test_target_modules_must_exist_in_the_base(server, pushed_base, adapter_copy):
    cfg = json.loads((adapter_copy / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "wq_missing"]
    (adapter_copy / "adapter_config.json").write_text(json.dumps(cfg))
    refused(server, adapter_copy, InvalidInputError, "wq_missing")


def test_tensor_for_a_module_the_base_lacks(server, pushed_base, adapter_copy):
    from safetensors.torch import load_file

    tensors = load_file(adapter_copy / WEIGHTS)
    tensors["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 64)
    write_safetensors(adapter_copy / WEIGHTS, tensors)
    refused(server, adapter_copy, InvalidInputError, "layers.7.self_attn.q_proj")


def test_missing_required_files(server, pushed_base, adapter_copy, tmp_path):
    (adapter_copy / "adapter_config.json").unlink()
    refused(server, adapter_copy, InvalidInputError, "missing required file adapter_config.json")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    refused(server, model, InvalidInputError, "no \\*.safetensors", kind="model", base=None)


def test_base_must_exist_and_be_a_model(server, pushed_base, tiny_adapter, tiny_dataset):
    refused(server, tiny_adapter, NotFoundError, "base 'base/nope' does not exist", base="base/nope")
    refused(server, tiny_adapter, NotFoundError, "no ref or revision 'v9'", base="base/tiny-llama@v9")
    refused(server, tiny_adapter, InvalidInputError, "needs a base model", base=None)
    server[0].push(tiny_dataset, "finance/news", kind="dataset")
    refused(server, tiny_adapter, PreconditionError, "is a dataset, not a model", base="finance/news")


@pytest.mark.parametrize("name", ["finance/../etc", "finance/a/b", "../x", "fin\\x/y", "finance"])
def test_names_with_path_separators(server, pushed_base, tiny_adapter, name):
    refused(server, tiny_adapter, InvalidInputError, "", artifact=name)


def test_kind_of_an_existing_artifact_cannot_change(server, pushed_base, tiny_dataset):
    refused(server, tiny_dataset, PreconditionError, "holds model revisions, not dataset",
            kind="dataset", artifact="base/tiny-llama", base=None)


def test_oversize_uploads_are_refused(tmp_path, tiny_base):
    with local_hub(tmp_path / "d", max_blob_bytes=100_000) as (hub, store, _):
        before = store_state(store)
        with pytest.raises(LimitExceededError, match="limit of 100000 bytes"):
            hub.push(tiny_base, "base/big", kind="model")
        assert store_state(store) == before
    with local_hub(tmp_path / "e", max_revision_bytes=1000) as (hub, _, _):
        with pytest.raises(LimitExceededError, match="revision of .* exceeds"):
            hub.push(tiny_base, "base/big", kind="model")


def _stubs(address):
    channel = grpc.insecure_channel(address)
    return channel, registry_pb2_grpc.RegistryStub(channel), transfer_pb2_grpc.TransferStub(channel)


def test_wire_level_statuses(server, pushed_base):
    """The statuses themselves, as any gRPC client sees them."""
    _, store, address = server
    channel, registry, transfer = _stubs(address)
    before = store_state(store)
    cases = [
        (registry.GetRevision, registry_pb2.GetRevisionRequest(spec="base/none"), grpc.StatusCode.NOT_FOUND, "does not exist"),
        (registry.GetRevision, registry_pb2.GetRevisionRequest(spec="../x"), grpc.StatusCode.INVALID_ARGUMENT, "path separator or '..'"),
        (transfer.PlanPush, transfer_pb2.PlanPushRequest(artifact="a/b", kind=99, files=[]),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown or missing artifact kind"),
        (transfer.PlanPush, transfer_pb2.PlanPushRequest(
            artifact="a/b", kind=common_pb2.ARTIFACT_KIND_DATASET,
            files=[common_pb2.FileEntry(path="../escape.jsonl", sha256="a" * 64, size=1)]),
         grpc.StatusCode.INVALID_ARGUMENT, "'..'"),
        (registry.CommitRevision, registry_pb2.CommitRevisionRequest(
            artifact="a/b", kind=common_pb2.ARTIFACT_KIND_DATASET,
            files=[common_pb2.FileEntry(path="x.jsonl", sha256="b" * 64, size=3)]),
         grpc.StatusCode.FAILED_PRECONDITION, "not been uploaded"),
        # the commit request as convert.commit_request_from_pb reads it: each bad field named
        (registry.CommitRevision, registry_pb2.CommitRevisionRequest(artifact="a/b", kind=99),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown or missing artifact kind"),
        (registry.CommitRevision, registry_pb2.CommitRevisionRequest(
            artifact="a/b", kind=common_pb2.ARTIFACT_KIND_DATASET, lineage=common_pb2.Lineage(recipe_json="{not json")),
         grpc.StatusCode.INVALID_ARGUMENT, "lineage recipe"),
        (registry.CommitRevision, registry_pb2.CommitRevisionRequest(
            artifact="a/b", kind=common_pb2.ARTIFACT_KIND_MODEL, encoded=[
                registry_pb2.EncodedFile(sha256="b" * 64, container="c" * 64),
                registry_pb2.EncodedFile(sha256="b" * 64, container="d" * 64)]),
         grpc.StatusCode.INVALID_ARGUMENT, "two different deltas"),
        (registry.UpdateRef, registry_pb2.UpdateRefRequest(
            artifact="base/tiny-llama", ref="main", revision="main", expected_revision="0" * 64),
         grpc.StatusCode.ABORTED, "not the expected"),
    ]
    for method, request, code, text in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request)
        assert info.value.code() == code, (request, info.value.details())
        assert text in info.value.details()
    assert store_state(store) == before
    channel.close()


def test_blob_whose_sha256_does_not_match(server):
    _, store, address = server
    channel, _, transfer = _stubs(address)
    before = store_state(store)
    data = b"some bytes"
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(grpc.RpcError) as info:
        transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=wrong, size=len(data), offset=0, data=data)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hashes to" in info.value.details()
    assert store_state(store) == before and store.blobs.upload_offset(wrong) == 0
    channel.close()


def test_client_sees_checksum_error_class(server):
    from deltahub_client.errors import translate

    _, _, address = server
    channel, _, transfer = _stubs(address)
    with pytest.raises(grpc.RpcError) as info:
        transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256="c" * 64, size=1, offset=0, data=b"x")]))
    assert isinstance(translate(info.value), ChecksumMismatchError)
    channel.close()


def test_dataset_rows_are_checked(server, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "a.jsonl").write_text('{"text": "ok"}\n{"txt": "no text field"}\n')
    refused(server, ds, InvalidInputError, "a.jsonl:2: a row must be an object with a string 'text'",
            kind="dataset", artifact="d/x", base=None)
    (ds / "a.jsonl").write_text('{"text": "ok"}\nnot json\n')
    refused(server, ds, InvalidInputError, "a.jsonl:2: not valid JSON", kind="dataset", artifact="d/x", base=None)


def test_task_vector_keys_and_shapes_are_checked(server, pushed_base, tmp_path):
    tv = tmp_path / "tv"
    tv.mkdir()
    write_safetensors(tv / "task_vector.safetensors", {"model.layers.0.self_attn.q_proj.weight": torch.zeros(3, 3)})
    refused(server, tv, InvalidInputError, "has shape \\[3, 3\\], base parameter has \\[64, 64\\]", kind="task_vector")
    write_safetensors(tv / "task_vector.safetensors", {"not.a.param": torch.zeros(3)})
    refused(server, tv, InvalidInputError, "names no parameter", kind="task_vector")
    write_safetensors(tv / "task_vector.safetensors", {"model.layers.0.self_attn.q_proj.weight.delta_A": torch.zeros(2, 64)})
    refused(server, tv, InvalidInputError, "needs both", kind="task_vector")
