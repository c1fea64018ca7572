"""Safetensors files encoded against their base's, rebuilt byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from deltahub.deltas import filedelta
from deltahub.deltas.filedelta import decode_file, depends_on, encode_file
from deltahub.errors import IntegrityError


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def pair(tmp_path):
    def make(dtype):
        g = torch.Generator().manual_seed(0)
        base = {f"layers.{i}.w": torch.randn(64, 64, generator=g) for i in range(4)}
        base["embed"] = torch.randn(100, 64, generator=g)
        tuned = {k: v + 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        tuned["head.new"] = torch.randn(10, 64, generator=g)            # not in the base
        tuned["embed"] = torch.randn(120, 64, generator=g)              # resized: no delta
        b, t = tmp_path / f"base-{dtype}.safetensors", tmp_path / f"ft-{dtype}.safetensors"
        save_file({k: v.to(dtype) for k, v in base.items()}, str(b), metadata={"format": "pt"})
        save_file({k: v.to(dtype) for k, v in tuned.items()}, str(t), metadata={"format": "pt"})
        return b, t
    return make


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn,
                                   torch.float8_e5m2, torch.float64], ids=str)
def test_a_fine_tune_rebuilds_bit_for_bit(pair, tmp_path, dtype):
    base, tuned = pair(dtype)
    encoded = io.BytesIO()
    stats = encode_file(tuned, {_sha(base): base}, encoded, workers=2, window=2)
    assert stats.file_bytes == tuned.stat().st_size and stats.tensors == 6
    assert stats.against_base <= 4  # the four matching layers at most; the new and resized tensors never
    if dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert stats.against_base == 4 and stats.stored_bytes < 0.8 * stats.file_bytes
    assert depends_on(encoded) == ([_sha(base)] if stats.against_base else [])
    out = io.BytesIO()
    assert decode_file(encoded, {_sha(base): base}, out) == _sha(tuned)
    assert out.getvalue() == tuned.read_bytes()


def test_without_its_base_or_with_damage_an_encoded_file_refuses_to_rebuild(pair):
    base, tuned = pair(torch.float32)
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    with pytest.raises(IntegrityError, match="needs base file"):
        decode_file(encoded, {}, io.BytesIO())
    raw = bytearray(encoded.getvalue())
    raw[len(raw) // 3] ^= 0x10
    with pytest.raises(IntegrityError):
        decode_file(io.BytesIO(bytes(raw)), {_sha(base): base}, io.BytesIO())
    with pytest.raises(IntegrityError, match="not an encoded file"):
        decode_file(io.BytesIO(b"nonsense" * 10), {}, io.BytesIO())


@pytest.mark.parametrize("expect", ["size", "sha256"])
def test_a_container_of_another_file_than_expected_is_refused_before_it_is_decoded(pair, monkeypatch, expect):
    """The caller's manifest entry is checked against the index first: a hub sending another file's delta
    (or one declaring terabytes) makes the client decode and write nothing."""
    base, tuned = pair(torch.float32)
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    decoded = []
    monkeypatch.setattr(filedelta.codec, "decode", lambda *a: decoded.append(a))
    wrong = {"size": tuned.stat().st_size + 1, "sha256": None} if expect == "size" else {
        "size": tuned.stat().st_size, "sha256": _sha(base)}
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match=f"not the {wrong[expect]} expected: it is another file's delta"):
        decode_file(encoded, {_sha(base): base}, out, **wrong)
    assert not decoded and out.getvalue() == b""
    monkeypatch.undo()
    encoded.seek(0)
    assert decode_file(encoded, {_sha(base): base}, out, size=tuned.stat().st_size, sha256=_sha(tuned)) == _sha(tuned)


def test_a_file_with_no_base_still_round_trips(pair):
    _, tuned = pair(torch.bfloat16)
    encoded, out = io.BytesIO(), io.BytesIO()
    stats = encode_file(tuned, {}, encoded)
    assert stats.against_base == 0
    decode_file(encoded, {}, out)
    assert out.getvalue() == tuned.read_bytes()


def test_large_tensors_go_in_pieces_each_against_the_same_bytes_of_the_base(pair, tmp_path, monkeypatch):
    monkeypatch.setattr(filedelta, "PIECE", 4096)  # the 100x64 float32 embedding is 25600 bytes: 7 pieces
    base, tuned = pair(torch.float32)
    save_file({"embed": torch.randn(100, 64) * 1e-3 + load_file(str(base))["embed"]}, str(tuned))
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    index = filedelta.read_index(encoded)
    embed = [r for r in index["regions"] if r["length"] == 25600]
    assert index["piece"] == 4096 and len(embed) == 1 and len(embed[0]["frames"]) == 7
    assert embed[0]["base"] == [_sha(base), "embed"]
    out = io.BytesIO()
    assert decode_file(encoded, {_sha(base): base}, out) == _sha(tuned)
    assert out.getvalue() == tuned.read_bytes()


def test_an_empty_file_is_written_piece_by_piece_at_each_offset_and_any_other_output_in_order(
        pair, tmp_path, monkeypatch):
    base, tuned = pair(torch.bfloat16)
    monkeypatch.setattr(filedelta, "PIECE", 4096)  # many pieces, so many offsets
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    assert len(filedelta.read_index(encoded)["regions"][1]["frames"]) > 1
    for mode in ("wb", "w+b"):
        target = tmp_path / f"out-{mode}"
        with open(target, mode) as fh:
            assert filedelta._positioned_output(fh) == fh.fileno()
            assert decode_file(encoded, {_sha(base): base}, fh) == _sha(tuned)
        assert target.read_bytes() == tuned.read_bytes()
    # a file that already holds bytes is written after them, in order, as a stream would be
    target = tmp_path / "appended"
    target.write_bytes(b"head")
    with open(target, "ab") as fh:
        assert filedelta._positioned_output(fh) is None
        assert decode_file(encoded, {_sha(base): base}, fh) == _sha(tuned)
    assert target.read_bytes() == b"head" + tuned.read_bytes()
    # a write that takes less than it is given is carried on from where it stopped
    real = os.pwrite
    monkeypatch.setattr(filedelta.os, "pwrite", lambda fd, data, at: real(fd, bytes(data)[:777], at))
    target = tmp_path / "short-writes"
    with open(target, "wb") as fh:
        assert decode_file(encoded, {_sha(base): base}, fh) == _sha(tuned)
    assert target.read_bytes() == tuned.read_bytes()


def test_a_version_1_container_is_still_read(pair):
    base, tuned = pair(torch.float16)  # every region fits one piece: the frames are version 1's too
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    index = filedelta.read_index(encoded)
    frames = encoded.read(sum(sum(r["frames"]) for r in index["regions"]))
    del index["piece"]
    for region in index["regions"]:
        (region["frame"],) = region.pop("frames")
    raw_index = json.dumps(index).encode()
    old = filedelta.PREFIX.pack(filedelta.MAGIC, 1) + frames + raw_index + filedelta.TRAILER.pack(len(raw_index))
    out = io.BytesIO()
    assert decode_file(io.BytesIO(old), {_sha(base): base}, out) == _sha(tuned)
    assert out.getvalue() == tuned.read_bytes()


@pytest.mark.parametrize("damage", ["piece 0", "piece text", "a frame short", "a frame more"])
def test_an_index_whose_pieces_do_not_fit_its_regions_is_refused(pair, damage):
    base, tuned = pair(torch.float32)
    encoded = io.BytesIO()
    encode_file(tuned, {_sha(base): base}, encoded)
    index = filedelta.read_index(encoded)
    frames = encoded.read(sum(sum(r["frames"]) for r in index["regions"]))
    region = max(index["regions"], key=lambda r: r["length"])
    if damage == "piece 0":
        index["piece"] = 0
    elif damage == "piece text":
        index["piece"] = "1M"
    elif damage == "a frame short":
        region["frames"] = region["frames"][1:]
    else:
        region["frames"].append(0)
    raw_index = json.dumps(index).encode()
    bad = filedelta.PREFIX.pack(filedelta.MAGIC, 2) + frames + raw_index + filedelta.TRAILER.pack(len(raw_index))
    with pytest.raises(IntegrityError, match="malformed"):
        decode_file(io.BytesIO(bad), {_sha(base): base}, io.BytesIO())
