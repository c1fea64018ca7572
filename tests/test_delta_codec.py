"""The lossless delta codec: by hand, and bit-identical round trips for every float dtype."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import given, settings, strategies as st

from deltahub.deltas import codec
from deltahub.errors import IntegrityError, InvalidInputError

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2]


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def test_byte_planes_by_hand():
    data = bytes([1, 2, 3, 4, 5, 6, 7, 8])  # two 4-byte items
    assert codec.planes(data, 4).tobytes() == bytes([1, 5, 2, 6, 3, 7, 4, 8])
    assert codec.unplanes(bytes([1, 5, 2, 6, 3, 7, 4, 8]), 4).tobytes() == data
    assert codec.planes(data, 1).tobytes() == data
    # planes two bytes wide: the low halves of the items, then their high halves
    assert codec.planes(data, 4, 2).tobytes() == bytes([1, 2, 5, 6, 3, 4, 7, 8])
    assert codec.unplanes(bytes([1, 2, 5, 6, 3, 4, 7, 8]), 4, width=2).tobytes() == data
    # 2-byte items (bfloat16, float16): their low bytes, then their high bytes
    assert codec.planes(data, 2).tobytes() == bytes([1, 3, 5, 7, 2, 4, 6, 8])
    assert codec.unplanes(bytes([1, 3, 5, 7, 2, 4, 6, 8]), 2).tobytes() == data


@pytest.mark.parametrize("itemsize,width", [(2, 1), (4, 2), (4, 1), (8, 1), (8, 2)])
def test_planes_are_the_transposed_items_at_any_length_and_into_any_buffer(itemsize, width):
    """Two planes are cut by mask and shift, more by strided copies: both are the items' transpose, over
    more than one block, and rejoined into a view that starts at an odd offset."""
    raw = np.random.default_rng(itemsize * width).integers(0, 256, (3 * codec._BLOCK + 5) * itemsize, dtype=np.uint8)
    expected = raw.view(codec._UINT[width]).reshape(-1, itemsize // width).T.ravel().view(np.uint8)
    assert codec.planes(raw.tobytes(), itemsize, width).tobytes() == expected.tobytes()
    into = np.zeros(len(raw) + 3, dtype=np.uint8)
    codec.unplanes(expected.tobytes(), itemsize, into[1:-2], width)
    assert into[1:-2].tobytes() == raw.tobytes() and into[0] == into[-1] == into[-2] == 0


def test_float32_differences_go_in_half_planes_and_frames_from_before_widths_still_decode():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(4096, generator=g)
    tuned = base + 1e-6 * torch.randn(4096, generator=g)
    frames = {m: codec._frame(m, 4, len(_bytes(tuned)), b"") for m in (codec.DIFF, codec.XOR)}
    assert frames[codec.DIFF][6] == 2 and frames[codec.XOR][6] == 1  # the width byte
    frame = bytearray(codec.encode(_bytes(tuned), 2, _bytes(base)))  # as 16-bit items: single-byte planes
    assert frame[6] == 1
    frame[6] = 0  # as frames were written before widths
    assert codec.decode(bytes(frame), _bytes(base)) == _bytes(tuned)


def test_xor_and_difference_by_hand():
    base = struct.pack("<2I", 0x3F800000, 7)       # 1.0f, and an integer 7
    data = struct.pack("<2I", 0x3F800001, 5)       # one ulp more, and 7 - 2
    xor, diff = codec._words(data, 4) ^ codec._words(base, 4), codec._words(data, 4) - codec._words(base, 4)
    assert xor.tolist() == [1, 7 ^ 5] and diff.tolist() == [1, 2 ** 32 - 2]  # differences wrap, and unwrap
    frame = codec.encode(data * 1000, 4, base * 1000)
    assert codec.decode(frame, base * 1000) == data * 1000


def test_a_close_fine_tune_encodes_small_and_the_same_bytes_as_plain():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(256, 256, generator=g)
    tuned = base + 1e-4 * torch.randn(256, 256, generator=g)
    frame = codec.encode(_bytes(tuned), 4, _bytes(base))
    method, itemsize, length = codec.describe(frame)
    assert method in ("xor", "diff") and itemsize == 4 and length == tuned.numel() * 4
    assert len(frame) < 0.7 * length and codec.needs_base(frame)
    assert codec.decode(frame, _bytes(base)) == _bytes(tuned)
    unrelated = codec.encode(_bytes(torch.randn(256, 256, generator=g)), 4, _bytes(base))
    assert codec.describe(unrelated)[0] in ("plain", "planes")  # a delta that does not pay is not used
    assert len(unrelated) <= HEADER + 256 * 256 * 4


HEADER = codec.HEADER.size


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2 ** 16), scale=st.sampled_from([0.0, 1e-3, 1.0, 1e3]))
def test_round_trips_are_bit_identical_for_every_float_dtype(dtype, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=g) * 3).to(dtype)
    tuned = (base.to(torch.float64) + scale * torch.randn(n, generator=g, dtype=torch.float64)).to(dtype)
    if n:  # special values survive too
        tuned.view(torch.uint8)[: tuned.element_size()] = 0xFF  # a NaN pattern, bit for bit
    data, ref, size = _bytes(tuned), _bytes(base), tuned.element_size()
    for against in (ref, None):
        frame = codec.encode(data, size, against)
        assert codec.decode(frame, against) == data
        assert len(frame) <= HEADER + len(data)


def test_corruption_and_the_wrong_base_are_detected():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4096, generator=g)
    tuned = base + 1e-5 * torch.randn(4096, generator=g)
    frame = bytearray(codec.encode(_bytes(tuned), 4, _bytes(base)))
    assert codec.describe(frame)[0] != "plain"
    damaged = bytearray(frame)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(IntegrityError):
        codec.decode(bytes(damaged), _bytes(base))
    with pytest.raises(IntegrityError, match="header"):
        codec.decode(b"DHD", _bytes(base))
    with pytest.raises(IntegrityError, match="not a delta frame"):
        codec.decode(b"XXXX" + bytes(frame[4:]), _bytes(base))
    with pytest.raises(IntegrityError, match="encoded against"):
        codec.decode(bytes(frame), _bytes(base[:100]))
    with pytest.raises(InvalidInputError, match="against its base"):
        codec.decode(bytes(frame), None)
    with pytest.raises(InvalidInputError, match="whole number"):
        codec.encode(b"abc", 2)
    with pytest.raises(InvalidInputError, match="no delta between them"):
        codec.encode(b"abcd", 2, b"ab")


@pytest.mark.parametrize("extra", [-4, 4])
def test_a_payload_that_decodes_to_another_length_than_its_header_is_refused(extra):
    """A client's frame may carry a zstd payload without its content size, so the length is known only by
    decoding: one longer than the header's is cut off and refused, one shorter refused."""
    data = bytes(range(256)) * 64
    payload = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compress(
        data + bytes(extra) if extra > 0 else data[:extra])
    frame = codec.HEADER.pack(codec.MAGIC, codec.PLANES, 4, 1, len(data)) + payload
    with pytest.raises(IntegrityError, match="more than" if extra > 0 else f"decodes to {len(data) + extra} bytes"):
        codec.decode(frame)


def test_decoding_into_a_buffer_writes_exactly_the_frame_there():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1 << 16, generator=g)  # above the sampling size: the method is chosen on samples
    tuned = base + 1e-4 * torch.randn(1 << 16, generator=g)
    frame = codec.encode(_bytes(tuned), 4, _bytes(base))
    out = np.zeros(len(_bytes(tuned)) + 8, dtype=np.uint8)
    codec.decode_into(frame, out[4:-4], _bytes(base))
    assert out[4:-4].tobytes() == _bytes(tuned) and not out[:4].any() and not out[-4:].any()
    with pytest.raises(InvalidInputError, match="decoded into"):
        codec.decode_into(frame, out, _bytes(base))
    odd = bytearray(frame)
    odd[8:16] = (len(_bytes(tuned)) + 2).to_bytes(8, "little")  # a length that is not whole items
    with pytest.raises(IntegrityError, match="whole number"):
        codec.decode(bytes(odd), _bytes(base))
