"""Property-based fuzzing of the validators clients reach first: safetensors headers, manifests, JSON.

Each validator either accepts or raises a deltahub error naming the problem;
no input makes it raise anything else (which the server would answer INTERNAL).
What the header validator accepts, the safetensors library reads.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from deltahub import jsondoc
from deltahub.artifacts import FileEntry
from deltahub.errors import DeltahubError, InvalidInputError
from deltahub.formats.rules import check_files
from deltahub.formats.safetensors_header import DTYPE_SIZES, parse_header

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

dims = st.one_of(st.integers(-2, 6), st.booleans(), st.floats(0, 4), st.text(max_size=2), st.integers(2**62, 2**64))
entries = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(sorted(DTYPE_SIZES)), st.text(max_size=6)),
    "shape": st.one_of(st.lists(dims, max_size=3), st.integers(), st.none()),
    "data_offsets": st.one_of(st.lists(st.one_of(st.integers(-4, 200), st.booleans()), min_size=0, max_size=3),
                              st.text(max_size=3)),
}, optional={"extra": st.integers()})


@st.composite
def tiled_headers(draw):
    """Headers that tile their data exactly, some then nudged by one field: the near misses matter most."""
    doc, offset = {}, 0
    for name in draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True)):
        dtype = draw(st.sampled_from(sorted(DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        n = DTYPE_SIZES[dtype]
        for d in shape:
            n *= d
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if draw(st.booleans()):
        victim = draw(st.sampled_from(sorted(doc)))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        doc[victim][field] = draw(entries)[field]
    return doc


headers = st.one_of(st.dictionaries(st.text(min_size=1, max_size=8), entries, max_size=4), tiled_headers())


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 400))
def test_header_bytes_never_crash_the_validator(raw, data_size):
    try:
        parse_header(raw, data_size, label="f")
    except DeltahubError:
        pass


@FUZZ
@given(headers, st.integers(0, 4))
def test_accepted_headers_are_read_by_the_safetensors_library(doc, slack):
    raw = json.dumps(doc).encode()
    ends = [e["data_offsets"][-1] for e in doc.values()
            if isinstance(e.get("data_offsets"), list) and e["data_offsets"] and type(e["data_offsets"][-1]) is int]
    data_size = max([0, *ends]) + (slack if slack > 2 else 0)
    try:
        header = parse_header(raw, data_size, label="f")
    except DeltahubError:
        return
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw + b"\0" * data_size)
        with safe_open(path, framework="pt") as f:
            assert set(f.keys()) == set(header.tensors)
            for name, info in header.tensors.items():
                assert tuple(f.get_slice(name).get_shape()) == info.shape
    finally:
        os.unlink(path)


segments = st.one_of(st.text(min_size=0, max_size=12), st.sampled_from(["..", ".", "", "a" * 300, "x.bin", "y.py"]))
paths = st.builds(lambda parts: "/".join(parts), st.lists(segments, min_size=1, max_size=4))


@FUZZ
@given(st.lists(paths, min_size=0, max_size=5))
def test_manifests_are_accepted_only_when_every_file_can_be_checked_out(names):
    files = [FileEntry(p, "a" * 64, 1) for p in names]
    try:
        check_files(files)
    except DeltahubError:
        return
    root = "/r"
    seen = set()
    for f in files:
        parts = f.path.split("/")
        assert all(p not in ("", ".", "..") and len(p.encode()) <= 255 for p in parts)
        assert not any(ord(c) < 32 or ord(c) == 127 for c in f.path)
        assert os.path.normpath(os.path.join(root, f.path)).startswith(root + "/")
        seen.add(f.path)
    # no file is another's folder
    assert not any(p.startswith(q + "/") for p in seen for q in seen)


json_like = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
                         lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=3), kids,
                                                                                            max_size=3)),
                         max_leaves=30)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.builds(json.dumps, json_like), st.integers(1, 5000).map(lambda n: "[" * n)))
def test_json_from_clients_is_parsed_or_refused(text):
    try:
        doc = jsondoc.loads(text, "doc", max_depth=16)
    except InvalidInputError:
        return
    assert jsondoc.depth(doc) <= 16
