"""Pure pieces: names, manifest digests, header checks, low-rank math, registry."""

import hashlib
import json
import struct

import pytest
import torch

from deltahub.artifacts import FileEntry, Kind, canonical_manifest, manifest_digest
from deltahub.deltas.lowrank import factor, rank_for_energy
from deltahub.errors import InvalidInputError, UnsafeFormatError
from deltahub.formats.rules import check_path
from deltahub.formats.safetensors_header import parse_header, read_header
from deltahub.formats.tensors import check_finite
from deltahub.names import ArtifactName, RevisionSpec, check_ref
from deltahub.registry import Registry

SHA = "a" * 64


@pytest.mark.parametrize("bad", ["noslash", "a/b/c", "../x", "a/..", "a/.hidden", "/a/b", "a\\b/c", "a/", "/b", ""])
def test_bad_artifact_names_are_refused(bad):
    with pytest.raises(InvalidInputError):
        ArtifactName.parse(bad)


def test_revision_spec_parses_ref_and_digest():
    assert RevisionSpec.parse("fin/lora").revision is None
    assert RevisionSpec.parse("fin/lora@v1").revision == "v1"
    assert str(RevisionSpec.parse("fin/lora@" + "ab" * 32).artifact) == "fin/lora"
    with pytest.raises(InvalidInputError):
        RevisionSpec.parse("fin/lora@")
    with pytest.raises(InvalidInputError):
        check_ref("../main")


def test_manifest_digest_is_sha256_of_sorted_canonical_json():
    files = [FileEntry("b.json", SHA, 3), FileEntry("a.safetensors", "b" * 64, 10)]
    raw = canonical_manifest(Kind.ADAPTER, "base/x@" + "c" * 64, files)
    # order-independent, compact, sorted keys: checkable by hand
    assert raw == json.dumps(
        {"base": "base/x@" + "c" * 64, "files": [["a.safetensors", "b" * 64, 10], ["b.json", SHA, 3]], "kind": "adapter"},
        sort_keys=True, separators=(",", ":"),
    ).encode()
    assert manifest_digest(Kind.ADAPTER, "base/x@" + "c" * 64, files[::-1]) == hashlib.sha256(raw).hexdigest()
    # the same files against another base are another revision
    assert manifest_digest(Kind.ADAPTER, "base/y@" + "c" * 64, files) != manifest_digest(Kind.ADAPTER, "base/x@" + "c" * 64, files)


@pytest.mark.parametrize("path", ["pytorch_model.bin", "model.pt", "x/weights.pth", "opt.pkl", "m.ckpt"])
def test_pickle_files_are_refused_by_name(path):
    with pytest.raises(UnsafeFormatError, match="pickle"):
        check_path(path)


@pytest.mark.parametrize("path", ["../x", "a/../b", "/abs", "a//b", "./a", "a\\b"])
def test_paths_must_be_relative_and_plain(path):
    with pytest.raises(InvalidInputError):
        check_path(path)


def _header(entries: dict) -> bytes:
    return json.dumps(entries).encode()


def test_header_checks_each_way_to_be_wrong():
    ok = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    assert parse_header(_header(ok), 16, label="f").tensors["w"].shape == (2, 2)
    with pytest.raises(InvalidInputError, match="truncated"):
        parse_header(_header(ok), 8, label="f")
    with pytest.raises(InvalidInputError, match="trail"):
        parse_header(_header(ok), 20, label="f")
    with pytest.raises(InvalidInputError, match="needs 16"):
        parse_header(_header({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}), 12, label="f")
    with pytest.raises(InvalidInputError, match="dtype"):
        parse_header(_header({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}), 1, label="f")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_header(b"{not json", 0, label="f")
    # as strict as the safetensors library: booleans are not dimensions, names are unique
    with pytest.raises(InvalidInputError, match="invalid shape"):
        parse_header(_header({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}), 4, label="f")
    with pytest.raises(InvalidInputError, match="'w' appears twice"):
        parse_header(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                     b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4, label="f")
    with pytest.raises(InvalidInputError, match="nested"):
        parse_header(b'{"__metadata__": ' + b"[" * 5000 + b"]" * 5000 + b"}", 0, label="f")
    with pytest.raises(InvalidInputError, match="gap or overlap"):
        parse_header(_header({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                              "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}), 6, label="f")


def test_header_length_beyond_file_is_caught(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        read_header(path)
    path.write_bytes(b"abc")
    with pytest.raises(InvalidInputError, match="shorter"):
        read_header(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", ["NaN", "Inf", "-Inf"])
def test_check_finite_names_the_tensor_and_the_fault(tmp_path, dtype, bad):
    from safetensors.torch import save_file

    clean = torch.ones(4, 3, dtype=dtype)
    broken = clean.clone()
    broken[2, 1] = float(bad.lower())
    save_file({"a.weight": clean, "b.weight": broken}, str(tmp_path / "w.safetensors"))
    path = tmp_path / "w.safetensors"
    with pytest.raises(InvalidInputError, match=f"w: tensor 'b.weight' contains {bad.lstrip('-')} values"):
        check_finite(path, read_header(path), label="w")


def test_check_finite_passes_finite_tensors_whose_sum_overflows(tmp_path):
    from safetensors.torch import save_file

    # 3e38 + 3e38 overflows the float32 accumulator: the quick sum flags it, the exact scan clears it
    big = torch.full((2,), 3e38, dtype=torch.bfloat16)
    assert not torch.isfinite(big.sum(dtype=torch.float32))
    save_file({"big": big, "small": torch.zeros(3, dtype=torch.float16)}, str(tmp_path / "w.safetensors"))
    check_finite(tmp_path / "w.safetensors", read_header(tmp_path / "w.safetensors"), label="w")


def test_rank_for_energy_by_hand():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.65) == 2
    assert rank_for_energy(s, 13 / 14) == 2
    assert rank_for_energy(s, 1.0) == 3


def test_factor_reports_exact_relative_error():
    # delta = diag(3, 2, 1): rank 1 keeps 3; error sqrt((4+1)/14)
    delta = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    f = factor(delta, rank=1)
    assert f.rank == 1
    assert torch.allclose(f.B @ f.A, torch.diag(torch.tensor([3.0, 0.0, 0.0])), atol=1e-6)
    assert f.relative_error == pytest.approx((5 / 14) ** 0.5)
    full = factor(delta, energy=1.0)
    assert full.rank == 3 and full.relative_error == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(full.B @ full.A, delta, atol=1e-6)


def test_registry_refuses_duplicates_and_lists_known():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already"):
        reg.register("a", 2)
    with pytest.raises(InvalidInputError, match="known: a"):
        reg.get("b")
