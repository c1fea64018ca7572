"""Push, pull, refs, deletes and lineage over a real gRPC channel."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from deltahub.artifacts import Kind
from deltahub.errors import NotFoundError, PreconditionError, StaleRefError

# every test here runs on the embedded default and on PostgreSQL + S3
pytestmark = pytest.mark.backends("embedded", "shared")


def test_push_model_then_repush_sends_nothing(server, tiny_base):
    hub, store, _ = server
    first = hub.push(tiny_base, "base/tiny-llama", kind="model")
    assert first.created and first.blobs_sent == len(first.revision.files) > 2
    assert first.bytes_sent == first.revision.size
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.path for f in first.revision.files}
    again = hub.push(tiny_base, "base/tiny-llama", kind="model")
    assert not again.created and again.blobs_sent == 0 and again.bytes_sent == 0
    assert again.revision.digest == first.revision.digest
    # the same bytes under another name share every blob
    other = hub.push(tiny_base, "base/copy", kind="model")
    assert other.bytes_sent == 0 and other.revision.digest == first.revision.digest


def test_a_push_plan_asks_the_blob_store_only_of_files_no_revision_holds(server, tiny_base, monkeypatch):
    """A revision's files are known stored (one catalog query): on S3 no request per file is made for them."""
    import hashlib

    from deltahub.artifacts import FileEntry

    hub, store, _ = server
    first = hub.push(tiny_base, "base/tiny-llama", kind="model").revision
    asked = []
    has = store.blobs.has
    monkeypatch.setattr(store.blobs, "has", lambda sha: asked.append(sha) or has(sha))
    new = FileEntry("notes.txt", hashlib.sha256(b"new").hexdigest(), 3)
    assert store.plan_push("base/more", Kind.MODEL, [*first.files, new]) == [(new.sha256, 3, 0)]
    assert asked == [new.sha256]


def test_pulled_model_loads_with_transformers(server, pushed_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub, _, _ = server
    folder = hub.pull("base/tiny-llama@main", tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("the market rose", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == 96


def test_adapter_roundtrip_loads_with_peft_and_changes_logits(server, pushed_base, tiny_base, tiny_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub, _, _ = server
    card = {"description": "finance news", "samples": ["the market rallied"]}
    result = hub.push(tiny_adapter, "finance/lora", kind="adapter", base="base/tiny-llama", card=card,
                      labels={"domain": "finance"}, tags=["v1"])
    rev = result.revision
    assert rev.base == pushed_base.spec and rev.card.description == "finance news"
    assert rev.labels == {"domain": "finance"} and set(rev.refs) == {"main", "v1"}
    folder = hub.pull(f"finance/lora@{rev.digest[:12]}", tmp_path / "a")
    base_model = AutoModelForCausalLM.from_pretrained(tiny_base)
    ids = torch.tensor([[1, 5, 6, 7]])
    plain = base_model(ids).logits
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), folder)
    assert not torch.allclose(model(ids).logits, plain)
    # byte-identical to what was pushed
    for f in rev.files:
        assert (folder / f.path).read_bytes() == (tiny_adapter / f.path).read_bytes()


def test_dataset_and_task_vector_push(server, pushed_base, tiny_base, tiny_dataset, tmp_path):
    from tests.helpers import write_safetensors

    hub, _, _ = server
    ds = hub.push(tiny_dataset, "finance/news", kind="dataset").revision
    assert ds.kind is Kind.DATASET and ds.base == ""
    tv_dir = tmp_path / "tv"
    tv_dir.mkdir()
    shapes = {"model.layers.0.self_attn.q_proj.weight": (64, 64), "model.norm.weight": (64,)}
    write_safetensors(tv_dir / "task_vector.safetensors", {k: torch.randn(s) * 0.01 for k, s in shapes.items()})
    tv = hub.push(tv_dir, "finance/tv", kind="task_vector", base="base/tiny-llama").revision
    assert tv.kind is Kind.TASK_VECTOR and tv.base == pushed_base.spec


def test_server_side_task_vector_dense_and_low_rank(server, pushed_base, tiny_base, tiny_finetuned, tmp_path):
    hub, _, _ = server
    hub.push(tiny_finetuned, "finance/tiny-ft", kind="model")
    dense = hub.create_task_vector("finance/tiny-ft", "base/tiny-llama", "finance/tv-dense")
    assert dense.relative_error == 0.0
    rev = dense.revision
    assert rev.base == pushed_base.spec and rev.lineage.recipe["op"] == "task_vector"
    assert rev.lineage.parents[1] == pushed_base.spec
    deltas = load_file(hub.pull("finance/tv-dense", tmp_path / "d") / "task_vector.safetensors")
    ft, base = load_file(tiny_finetuned / "model.safetensors"), load_file(tiny_base / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(deltas[name], ft[name] - base[name], atol=1e-7)

    low = hub.create_task_vector("finance/tiny-ft", "base/tiny-llama", "finance/tv-r4", rank=4)
    assert 0.0 < low.relative_error < 1.0
    assert low.revision.lineage.metrics["relative_error"] == pytest.approx(low.relative_error)
    factors = load_file(hub.pull("finance/tv-r4", tmp_path / "r") / "task_vector.safetensors")
    assert factors[name + ".delta_A"].shape == (4, 128) and factors[name + ".delta_B"].shape == (64, 4)
    full = hub.create_task_vector("finance/tiny-ft", "base/tiny-llama", "finance/tv-e1", energy=1.0)
    assert full.relative_error < 1e-5
    # asking again is the same revision
    assert not hub.create_task_vector("finance/tiny-ft", "base/tiny-llama", "finance/tv-r4", rank=4).created


def test_refs_move_by_compare_and_swap(server, pushed_base, tiny_base, tmp_path):
    hub, _, _ = server
    first = pushed_base.digest
    changed = tmp_path / "changed"
    shutil.copytree(tiny_base, changed)
    cfg = json.loads((changed / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (changed / "config.json").write_text(json.dumps(cfg))
    second = hub.push(changed, "base/tiny-llama", kind="model", expected_revision=first).revision.digest
    assert second != first
    with pytest.raises(StaleRefError, match="not the expected"):
        hub.push(tiny_base, "base/tiny-llama", kind="model", expected_revision=first)
    assert hub.show("base/tiny-llama").digest == second  # the stale push moved nothing
    assert hub.tag("base/tiny-llama", "prod", first, expected_revision="") == (first, "")
    with pytest.raises(StaleRefError, match="already exists"):
        hub.tag("base/tiny-llama", "prod", second, expected_revision="")
    assert hub.tag("base/tiny-llama", "prod", second, expected_revision=first) == (second, first)
    assert [r.digest for r in hub.revisions("base/tiny-llama")] == [second, first]
    assert hub.artifact("base/tiny-llama").refs == {"main": second, "prod": second}


def test_delete_refs_first_then_revisions_and_blobs_are_collected(server, pushed_base, tiny_base, tiny_adapter, tmp_path):
    hub, store, _ = server
    hub.push(tiny_adapter, "finance/lora", kind="adapter", base="base/tiny-llama")
    with pytest.raises(PreconditionError, match="base of 1 other revision"):
        hub.delete_artifact("base/tiny-llama")
    rev = hub.show("finance/lora")
    with pytest.raises(PreconditionError, match="refs"):
        hub.delete_revision("finance/lora", rev.digest)
    assert hub.delete_ref("finance/lora", "main") == rev.digest
    result = hub.delete_revision("finance/lora", rev.digest[:10])
    assert result.deleted_revisions == [rev.digest] and result.blobs_removed == len(rev.files)
    assert all(not store.blobs.has(f.sha256) for f in rev.files)
    with pytest.raises(NotFoundError):
        hub.show("finance/lora@" + rev.digest)
    # now the base can go, with every blob
    removed = hub.delete_artifact("base/tiny-llama")
    assert removed.deleted_refs == ["main"] and removed.blobs_removed == len(pushed_base.files)
    assert list(store.blobs.iter_blobs()) == []
    assert hub.list_artifacts() == []


def test_shared_blobs_survive_deleting_one_user(server, tiny_base):
    hub, store, _ = server
    a = hub.push(tiny_base, "base/a", kind="model").revision
    hub.push(tiny_base, "base/b", kind="model")
    assert hub.delete_artifact("base/a").blobs_removed == 0
    assert all(store.blobs.has(f.sha256) for f in a.files)


def test_card_update_and_listing(server, pushed_base, tiny_adapter):
    hub, _, _ = server
    hub.push(tiny_adapter, "finance/lora", kind="adapter", base="base/tiny-llama", labels={"a": "1"})
    rev = hub.update_card("finance/lora", card={"description": "bonds", "samples": ["yield"]}, labels={"b": "2"})
    assert rev.card.samples == ("yield",) and rev.labels == {"a": "1", "b": "2"}
    assert [a.name for a in hub.list_artifacts("finance")] == ["finance/lora"]
    assert [a.name for a in hub.list_artifacts(kind="model")] == ["base/tiny-llama"]
    assert hub.artifact("finance/lora").revision_count == 1


def test_health_and_reflection(server):
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    hub, _, address = server
    assert hub.health() == "SERVING"
    assert hub.health("deltahub.v1.Registry") == "SERVING"
    with grpc.insecure_channel(address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"deltahub.v1.Registry", "deltahub.v1.Transfer", "grpc.health.v1.Health"} <= services


def test_reflection_v1_and_v1alpha_describe_fields_with_their_comments(server):
    """What a generic client (grpcurl describe) reads: both protocol versions, every file, and the comments."""
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    _, _, address = server
    with grpc.insecure_channel(address) as channel:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            listed, found = call(iter([
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="deltahub.v1.MergeRequest"),
            ]), timeout=10)
            names = {s.name for s in listed.list_services_response.service}
            assert {"deltahub.v1.Merge", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"} <= names
            files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                     for b in found.file_descriptor_response.file_descriptor_proto]
            merge = next(f for f in files if f.name == "deltahub/v1/merge.proto")
            comments = " ".join(loc.leading_comments + loc.trailing_comments for loc in merge.source_code_info.location)
            assert "largest relative Frobenius error" in comments  # MergeRequest.max_error's comment
        # the whole API resolves through reflection alone (imports included), as a generic client needs
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        assert "max_error" in pool.FindMessageTypeByName("deltahub.v1.MergeRequest").fields_by_name
        assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]
