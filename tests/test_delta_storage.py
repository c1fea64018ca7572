"""Fine-tunes stored and sent as deltas against their base, through a real server: bit for bit."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from deltahub.artifacts import FileEntry
from deltahub.compaction import Compactor
from deltahub.errors import IntegrityError, InvalidInputError, PreconditionError
from deltahub_client import deltas as client_deltas
from tests.conftest import cli_json, store_state
from tests.helpers import ServeProcess, local_hub, make_tiny_llama

WEIGHTS = "model.safetensors"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _same_files(a: Path, b: Path) -> None:
    for f in a.iterdir():
        if f.is_file():
            assert _sha(b / f.name) == _sha(f), f.name


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A base and fine-tunes of it nudged by about what a few optimiser steps do."""
    root = tmp_path_factory.mktemp("models")
    base = make_tiny_llama(root / "base", seed=0)
    tunes = [make_tiny_llama(root / f"ft{i}", seed=0, perturb=1e-5, perturb_seed=i + 1) for i in range(3)]
    return base, tunes


@pytest.fixture()
def hub_by_hand(tmp_path, backend_config):
    """A server whose files are stored as deltas only when a test runs the compactor."""
    with local_hub(tmp_path / "data", delta_encoding=False, **backend_config) as world:
        yield world


class Downloads:
    """Records which blobs a client downloads (from the threads a pull downloads on)."""

    def __init__(self, hub, monkeypatch) -> None:
        self.shas: list[str] = []
        self.bytes = 0
        lock = threading.Lock()
        original = hub.download_blob

        def recorded(sha, target, *, bar=None):
            original(sha, target, bar=bar)
            with lock:
                self.shas.append(sha)
                self.bytes += Path(target).stat().st_size

        monkeypatch.setattr(hub, "download_blob", recorded)
        streamed = hub._blob_stream

        def counted(sha, offset, length):  # deltas are streamed into their decoder, not downloaded to a file
            with lock:
                self.shas.append(sha)
            for chunk in streamed(sha, offset, length):
                with lock:
                    self.bytes += len(chunk)
                yield chunk

        monkeypatch.setattr(hub, "_blob_stream", counted)


def _stored_as_delta(hub, store, base, ft):
    """base/llama and fin/llama (tuned from it) pushed, and the compactor run: (base rev, fine-tune rev)."""
    b = hub.push(base, "base/llama", kind="model").revision
    f = hub.push(ft, "fin/llama", kind="model", base="base/llama").revision
    _compact(store)
    return b, f


def _compact(store, grace_s: float = 0.0):
    stats = Compactor(store, copy_grace_s=grace_s).run_once()
    return stats


@pytest.mark.backends("embedded", "shared")
def test_a_compacted_fine_tune_is_stored_small_and_pulled_bit_for_bit(hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    b = hub.push(base, "base/llama", kind="model").revision
    f = hub.push(ft, "fin/llama", kind="model", base="base/llama").revision
    stats = _compact(store)
    sha = f.file(WEIGHTS).sha256
    enc = store.blobs.encoding(sha)
    assert enc is not None and enc.bases == (b.file(WEIGHTS).sha256,)
    assert stats.encoded == 1 and enc.stored < 0.8 * enc.size
    assert store.catalog.encoding(b.file(WEIGHTS).sha256).container == ""  # the base stays as itself
    assert stats.copies_dropped == 1 and not store.blobs.inner.has(sha)  # only its delta is stored now
    assert enc.container in {s for s, _, _ in store.blobs.inner.iter_blobs()}
    hub.pull("fin/llama", tmp_path / "plain")
    _same_files(ft, tmp_path / "plain")
    # a second pass finds nothing left to do
    assert _compact(store).looked_at == 0


@pytest.mark.backends("embedded", "shared")
def test_a_compacted_files_copy_becomes_its_rebuilt_copy_on_a_local_store(hub_by_hand, models, tmp_path,
                                                                          monkeypatch):
    """The first plain read after compaction decodes nothing on a local store: the copy as itself went
    into the rebuilt cache, settled. An object store's copy is deleted, and that read decodes."""
    from deltahub.storage import encoded
    from deltahub.storage.blobs import LocalBlobStore

    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    sha = f.file(WEIGHTS).sha256
    assert not store.blobs.inner.has(sha)
    local = isinstance(store.blobs.inner, LocalBlobStore)
    assert store.blobs.rebuilt.has(sha) == local
    if local:
        assert store.blobs.rebuilt.path(sha).stat().st_mode & 0o777 == encoded.SETTLED

        def no_decode(*a, **k):
            raise AssertionError("decoded a file its cache holds")

        monkeypatch.setattr(encoded, "decode_file", no_decode)
    hub.pull("fin/llama", tmp_path / "plain")
    _same_files(ft, tmp_path / "plain")


def test_a_pull_with_the_base_at_hand_receives_only_the_delta(hub_by_hand, models, tmp_path, monkeypatch):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    enc = store.blobs.encoding(f.file(WEIGHTS).sha256)
    got = Downloads(hub, monkeypatch)
    hub.pull("fin/llama", tmp_path / "out", base_dir=base)
    _same_files(ft, tmp_path / "out")
    assert enc.container in got.shas and f.file(WEIGHTS).sha256 not in got.shas
    # the other files, and the delta's bytes once each (its index is read first, from its end)
    assert got.bytes == sum(x.size for x in f.files) - enc.size + enc.stored
    # without the base the plain path: every file as itself
    plain = Downloads(hub, monkeypatch)
    hub.pull("fin/llama", tmp_path / "plain")
    assert f.file(WEIGHTS).sha256 in plain.shas and enc.container not in plain.shas
    _same_files(ft, tmp_path / "plain")


def test_a_push_with_the_base_at_hand_sends_a_delta_the_hub_checks(hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    hub.push(base, "base/llama", kind="model")
    result = hub.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base)
    size = sum(p.stat().st_size for p in ft.iterdir() if p.is_file())
    assert result.bytes_sent < 0.8 * size
    sha = result.revision.file(WEIGHTS).sha256
    enc = store.blobs.encoding(sha)
    assert enc is not None and not store.blobs.inner.has(sha)  # stored as the delta it arrived as
    hub.pull("fin/llama", tmp_path / "out")
    _same_files(ft, tmp_path / "out")
    # pushing the same again sends nothing
    assert hub.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base).bytes_sent == 0


def test_a_delta_that_does_not_rebuild_its_file_is_refused_and_nothing_is_stored(hub_by_hand, models, tmp_path,
                                                                                 monkeypatch):
    hub, store, _ = hub_by_hand
    base, (ft, other, _) = models
    hub.push(base, "base/llama", kind="model")
    before = store_state(store)
    real = client_deltas.encode_for_push

    def forged(path, bases, folder):  # the delta of another fine-tune, declared as this one's
        return real(other / WEIGHTS, bases, folder)

    monkeypatch.setattr("deltahub_client.hub.encode_for_push", forged)
    with pytest.raises(InvalidInputError, match="does not rebuild it"):
        hub.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base)
    assert store_state(store) == before

    def garbage(path, bases, folder):
        junk = folder / "junk"
        junk.write_bytes(b"DHDL" + b"\x01\x00\x00\x00" + b"\xff" * 64)
        return client_deltas.Container(junk, _sha(junk), junk.stat().st_size)

    monkeypatch.setattr("deltahub_client.hub.encode_for_push", garbage)
    with pytest.raises(InvalidInputError, match="not an encoded file"):
        hub.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base)
    assert store_state(store) == before


def test_a_delta_against_a_base_the_hub_lacks_is_refused(hub_by_hand, models, tmp_path, monkeypatch):
    hub, store, _ = hub_by_hand
    base, (ft, other, _) = models
    hub.push(base, "base/llama", kind="model")
    before = store_state(store)
    real = client_deltas.encode_for_push

    def against_other(path, bases, folder):  # encoded against a file the hub never received
        return real(path, {_sha(other / WEIGHTS): other / WEIGHTS}, folder)

    monkeypatch.setattr("deltahub_client.hub.encode_for_push", against_other)
    with pytest.raises(PreconditionError, match="push without --base-dir"):
        hub.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base)
    assert store_state(store) == before


def test_tensors_the_base_lacks_and_every_float_dtype_round_trip(hub_by_hand, tmp_path):
    hub, store, _ = hub_by_hand
    g = torch.Generator().manual_seed(0)
    weights = {f"layers.{i}.w": torch.randn(96, 96, generator=g) for i in range(4)}
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        name = str(dtype).split(".")[1].replace("_", "-")
        b, f = tmp_path / f"b-{name}", tmp_path / f"f-{name}"
        b.mkdir(), f.mkdir()
        save_file({k: v.to(dtype) for k, v in weights.items()}, str(b / WEIGHTS), metadata={"format": "pt"})
        tuned = {k: (v + 1e-3 * torch.randn(v.shape, generator=g)).to(dtype) for k, v in weights.items()}
        tuned["head.new"] = torch.randn(64, 96, generator=g).to(dtype)  # not in the base
        save_file(tuned, str(f / WEIGHTS), metadata={"format": "pt"})
        for folder in (b, f):
            (folder / "config.json").write_text('{"model_type": "toy"}')
        hub.push(b, f"base/{name}", kind="model")
        hub.push(f, f"fin/{name}", kind="model", base=f"base/{name}")
    stats = _compact(store)
    assert stats.encoded >= 3, stats.notes  # float8 deltas may not pay; those are kept as they are
    for path in tmp_path.glob("f-*"):
        name = path.name[2:]
        out = tmp_path / "out" / name
        hub.pull(f"fin/{name}", out)
        assert _sha(out / WEIGHTS) == _sha(path / WEIGHTS)
        loaded = load_file(str(out / WEIGHTS))
        assert "head.new" in loaded


@pytest.mark.backends("embedded", "shared")
def test_a_base_deleted_after_its_fine_tune_keeps_the_fine_tune_readable_until_gc_frees_both(
        hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    b = hub.push(base, "base/llama", kind="model").revision
    # named as no one's base (the hub refuses to delete a named base): found as the closest stored model
    f = hub.push(ft, "fin/llama", kind="model").revision
    _compact(store)
    base_sha = b.file(WEIGHTS).sha256
    assert store.blobs.encoding(f.file(WEIGHTS).sha256).bases == (base_sha,)
    hub.delete_artifact("base/llama")
    hub.collect_garbage()
    assert store.blobs.inner.has(base_sha)  # the fine-tune's delta needs it
    hub.pull("fin/llama", tmp_path / "out")
    _same_files(ft, tmp_path / "out")
    # and once the fine-tune goes, everything of both goes
    hub.delete_artifact("fin/llama")
    hub.collect_garbage()
    assert list(store.blobs.inner.iter_blobs()) == [] and list(store.blobs.rebuilt.iter_blobs()) == []
    assert store.catalog._query("SELECT COUNT(*) FROM encodings")[0][0] == 0


def test_gc_keeps_what_deltas_need_and_a_reader_of_a_dropped_copy(hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, (ft, ft2, _) = models
    b = hub.push(base, "base/llama", kind="model").revision
    f = hub.push(ft, "fin/llama", kind="model", base="base/llama").revision
    f2 = hub.push(ft2, "law/llama", kind="model", base="base/llama").revision
    _compact(store, grace_s=3600)  # copies as themselves are kept for their grace
    for rev in (f, f2):
        assert store.blobs.inner.has(rev.file(WEIGHTS).sha256)
    hub.collect_garbage()
    held = {s for s, _, _ in store.blobs.inner.iter_blobs()}
    needed = {b.file(WEIGHTS).sha256} | {store.blobs.encoding(r.file(WEIGHTS).sha256).container for r in (f, f2)}
    assert needed <= held
    hub.delete_artifact("law/llama")
    hub.collect_garbage()
    held = {s for s, _, _ in store.blobs.inner.iter_blobs()}
    assert store.blobs.encoding(f2.file(WEIGHTS).sha256) is None and f2.file(WEIGHTS).sha256 not in held
    assert {b.file(WEIGHTS).sha256, store.blobs.encoding(f.file(WEIGHTS).sha256).container} <= held
    hub.pull("fin/llama", tmp_path / "out")
    _same_files(ft, tmp_path / "out")


def test_concurrent_pushes_of_fine_tunes_of_one_base(hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, tunes = models
    hub.push(base, "base/llama", kind="model")
    errors = []

    def push(i, ft):
        try:
            hub.push(ft, f"team{i}/llama", kind="model", base="base/llama", base_dir=base if i % 2 else None)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=push, args=(i, ft)) for i, ft in enumerate(tunes)]
    threads += [threading.Thread(target=_compact, args=(store,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    _compact(store)
    for i, ft in enumerate(tunes):
        rev = hub.show(f"team{i}/llama")
        assert store.blobs.encoding(rev.file(WEIGHTS).sha256) is not None
        hub.pull(f"team{i}/llama", tmp_path / str(i), base_dir=base)
        _same_files(ft, tmp_path / str(i))


def test_a_corrupted_delta_is_detected_at_read(hub_by_hand, models, tmp_path):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    sha = f.file(WEIGHTS).sha256
    enc = store.blobs.encoding(sha)
    store.blobs.rebuilt.delete(sha)
    path = store.blobs.inner.path(enc.container)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        hub.pull("fin/llama", tmp_path / "out")
    assert not (tmp_path / "out" / WEIGHTS).exists()
    with pytest.raises(IntegrityError):  # and at the client, rebuilding it there
        hub.pull("fin/llama", tmp_path / "out2", base_dir=base)
    assert not (tmp_path / "out2" / WEIGHTS).exists()


def test_a_base_is_never_encoded_against_what_derives_from_it(hub_by_hand, models):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    b = hub.push(base, "base/llama", kind="model").revision
    f = hub.push(ft, "fin/llama", kind="model", base="base/llama").revision
    _compact(store)  # the base comes first (oldest): it is what the fine-tune names, so it stays itself
    assert store.catalog.encoding(b.file(WEIGHTS).sha256).container == ""
    assert store.blobs.encoding(f.file(WEIGHTS).sha256).bases == (b.file(WEIGHTS).sha256,)


def test_the_server_stores_fine_tunes_as_deltas_in_the_background(server, models, tmp_path):
    hub, store, _ = server
    base, (ft, *_) = models
    hub.push(base, "base/llama", kind="model")
    f = hub.push(ft, "fin/llama", kind="model", base="base/llama").revision
    sha = f.file(WEIGHTS).sha256
    deadline = time.time() + 60
    while store.blobs.encoding(sha) is None and time.time() < deadline:
        time.sleep(0.2)
    assert store.blobs.encoding(sha) is not None
    hub.pull("fin/llama", tmp_path / "out", base_dir=base)
    _same_files(ft, tmp_path / "out")


def test_export_to_a_hugging_face_cache_holding_the_base_receives_deltas(hub_by_hand, models, tmp_path,
                                                                         monkeypatch):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    cache = tmp_path / "hf"
    hub.export_hf("base/llama", cache)
    got = Downloads(hub, monkeypatch)
    snapshot = hub.export_hf("fin/llama", cache)
    assert f.file(WEIGHTS).sha256 not in got.shas and store.blobs.encoding(f.file(WEIGHTS).sha256).container in got.shas
    _same_files(ft, snapshot)
    # and a plain pull finds the base in the default cache by itself
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    again = Downloads(hub, monkeypatch)
    hub.pull("fin/llama", tmp_path / "out")
    assert f.file(WEIGHTS).sha256 not in again.shas
    _same_files(ft, tmp_path / "out")


def test_push_and_pull_with_base_dir_from_the_command_line(models, tmp_path):
    base, (ft, *_) = models
    served = ServeProcess(tmp_path / "data")
    try:
        env = served.env
        cli_json("push", str(base), "base/llama", "--kind", "model", env=env)
        pushed = cli_json("push", str(ft), "fin/llama", "--kind", "model", "--base", "base/llama",
                          "--base-dir", str(base), env=env)
        assert pushed["bytes_sent"] < 0.8 * (ft / WEIGHTS).stat().st_size
        cli_json("pull", "fin/llama", str(tmp_path / "out"), "--base-dir", str(base), env=env)
        _same_files(ft, tmp_path / "out")
    finally:
        served.stop()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_a_first_read_streams_as_it_decodes_and_a_reader_that_leaves_stops_it(hub_by_hand, models):
    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    sha = f.file(WEIGHTS).sha256
    store.blobs.rebuilt.delete(sha)  # the compactor's check left no copy; make sure
    left = store.blobs.read_chunks(sha, chunk_size=4096)
    assert len(next(left)) == 4096
    left.close()  # the reader leaves: the decode stops and keeps nothing
    deadline = time.time() + 10
    while store.blobs._rebuilding and time.time() < deadline:
        time.sleep(0.05)
    assert not store.blobs.rebuilt.has(sha) and not list((store.blobs.rebuilt.root / "tmp").iterdir())
    readers = [list(store.blobs.read_chunks(sha, chunk_size=1 << 16)) for _ in range(3)]
    got = [hashlib.sha256(b"".join(r)).hexdigest() for r in readers]
    assert got == [sha] * 3 and store.blobs.rebuilt.has(sha)
    # whole chunks however the decoded pieces fall (the header's few bytes put every piece off by them)
    assert all(len(c) == 1 << 16 for r in readers for c in r[:-1]) and all(0 < len(r[-1]) <= 1 << 16 for r in readers)


def test_a_base_folder_taken_for_the_base_by_path_and_size_but_not_it_falls_back_to_the_whole_file(
        hub_by_hand, models, tmp_path, caplog):
    hub, store, _ = hub_by_hand
    base, (ft, other, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    imposter = tmp_path / "imposter"  # the base's paths and sizes, another model's bytes: not hashed, so not known
    shutil.copytree(base, imposter)
    shutil.copy(other / WEIGHTS, imposter / WEIGHTS)
    assert (imposter / WEIGHTS).stat().st_size == (base / WEIGHTS).stat().st_size
    with caplog.at_level("WARNING", logger="deltahub_client.hub"):
        hub.pull("fin/llama", tmp_path / "out", base_dir=imposter)
    _same_files(ft, tmp_path / "out")
    assert "not the base revision's" in caplog.text
    assert hub._manifest("no/such") == ()  # a base this caller cannot see: its folder is hashed instead


def test_a_download_sends_the_range_asked_for(hub_by_hand, models):
    hub, store, _ = hub_by_hand
    base, _ = models
    rev = hub.push(base, "base/llama", kind="model").revision
    entry = rev.file(WEIGHTS)
    whole = (base / WEIGHTS).read_bytes()
    assert b"".join(hub._blob_stream(entry.sha256, 100, 5000)) == whole[100:5100]
    assert b"".join(hub._blob_stream(entry.sha256, entry.size - 10, 0)) == whole[-10:]  # 0: to the end
    assert b"".join(hub._blob_stream(entry.sha256, entry.size - 10, 1000)) == whole[-10:]  # clipped at the end


def test_readers_cancelled_mid_rebuild_leave_no_server_error(hub_by_hand, tmp_path, caplog):
    hub, store, _ = hub_by_hand
    g = torch.Generator().manual_seed(3)
    weights = {f"w{i}": torch.randn(512, 1024, generator=g) for i in range(4)}  # 8 MiB: several chunks
    folders = []
    for name, tensors in (("base", weights), ("ft", {k: v + 1e-4 * torch.randn(v.shape, generator=g)
                                                      for k, v in weights.items()})):
        folder = tmp_path / name
        folder.mkdir()
        save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
        (folder / "config.json").write_text('{"model_type": "llama"}')
        folders.append(folder)
    _, f = _stored_as_delta(hub, store, *folders)
    sha = f.file(WEIGHTS).sha256
    assert store.blobs.encoding(sha) is not None
    with caplog.at_level("ERROR"):
        for _ in range(8):
            store.blobs.rebuilt.delete(sha)
            stream = hub._blob_stream(sha, 0, 0)  # a first read: streamed while the hub decodes it
            assert next(stream)
            stream.close()  # cancelled while the hub's next chunk is being decoded
            deadline = time.time() + 10
            while store.blobs._rebuilding and time.time() < deadline:
                time.sleep(0.01)
    assert "unexpected error" not in caplog.text and "already executing" not in caplog.text
    hub.pull("fin/llama", tmp_path / "after")  # and the hub still serves it
    _same_files(folders[1], tmp_path / "after")


def test_a_restart_keeps_settled_rebuilt_files_and_drops_the_rest(hub_by_hand, models):
    from deltahub.storage.encoded import SETTLED, EncodedBlobStore

    hub, store, _ = hub_by_hand
    base, (ft, *_) = models
    _, f = _stored_as_delta(hub, store, base, ft)
    sha = f.file(WEIGHTS).sha256
    hub.pull("fin/llama", store.blobs.rebuilt.root.parent / "warm")
    path = store.blobs.rebuilt.path(sha)
    deadline = time.time() + 30
    while path.stat().st_mode & 0o777 != SETTLED and time.time() < deadline:  # fsynced, then marked
        time.sleep(0.05)
    assert path.stat().st_mode & 0o777 == SETTLED

    def restarted():
        return EncodedBlobStore(store.blobs.inner, store.catalog, store.blobs.rebuilt.root.parent, cache_bytes=1 << 30)

    inode = path.stat().st_ino
    again = restarted()  # a settled file is kept and read as it is, not rebuilt
    assert again.rebuilt.has(sha) and again.require(sha).stat().st_ino == inode
    path.chmod(0o600)
    path.write_bytes(b"short")  # as a crash may leave a file written, not yet fsynced
    again = restarted()
    assert not again.rebuilt.has(sha)
    assert hashlib.sha256(b"".join(again.read_chunks(sha))).hexdigest() == sha


@pytest.mark.parametrize("tail", [1 << 30, 4096, 7])
def test_a_remote_container_is_decoded_from_two_downloads_each_byte_sent_once(models, tmp_path, monkeypatch, tail):
    """RemoteBlob against a blob served from memory: the index is read from a tail fetched at once, the
    frames stream up to where that tail begins, whatever the tail's size against the container's."""
    import io

    from deltahub.deltas.filedelta import encode_file

    base, (ft, *_) = models
    packed = io.BytesIO()
    encode_file(ft / WEIGHTS, {_sha(base / WEIGHTS): base / WEIGHTS}, packed)
    blob = packed.getvalue()
    downloads, received = [], []

    def open_at(offset, length):
        downloads.append((offset, length))
        return (blob[at:min(at + 1000, offset + length)] for at in range(offset, offset + length, 1000))

    monkeypatch.setattr(client_deltas.RemoteBlob, "TAIL", tail)
    remote = client_deltas.RemoteBlob(len(blob), open_at, received.append)
    entry = FileEntry(WEIGHTS, _sha(ft / WEIGHTS), (ft / WEIGHTS).stat().st_size)
    client_deltas.rebuild(remote, {_sha(base / WEIGHTS): base / WEIGHTS}, tmp_path / WEIGHTS, entry, 0o644)
    assert _sha(tmp_path / WEIGHTS) == _sha(ft / WEIGHTS)
    assert sum(received) == len(blob) and sum(n for _, n in downloads) == len(blob)
    # a tail holding the trailer and index: two downloads (tail, frames); the whole blob: one; a tail
    # shorter than the 8-byte trailer is never fetched: trailer, index and frames come in three
    assert len(downloads) == (1 if tail >= len(blob) else 2 if tail == 4096 else 3)


def test_a_hub_sending_another_files_delta_gets_nothing_rebuilt(models, tmp_path):
    """The client checks the container's index against the manifest's entry before it decodes a frame."""
    import io

    from deltahub.deltas.filedelta import encode_file

    base, (ft, other, *_) = models
    packed = io.BytesIO()
    encode_file(other / WEIGHTS, {_sha(base / WEIGHTS): base / WEIGHTS}, packed)
    blob = packed.getvalue()
    remote = client_deltas.RemoteBlob(len(blob), lambda at, n: (c for c in [blob[at:at + n]]), lambda n: None)
    entry = FileEntry(WEIGHTS, _sha(ft / WEIGHTS), (ft / WEIGHTS).stat().st_size)
    with pytest.raises(IntegrityError, match=f"{WEIGHTS}: the encoded file rebuilds sha256 .* another file's delta"):
        client_deltas.rebuild(remote, {_sha(base / WEIGHTS): base / WEIGHTS}, tmp_path / WEIGHTS, entry, 0o644)
    assert list(tmp_path.iterdir()) == []  # no target, no temp file left


@pytest.mark.parametrize("skew", [-1, 1])
def test_a_hub_sending_a_tail_of_the_wrong_length_is_an_integrity_error(skew, tmp_path):
    """A stream of a delta's tail one byte short or long is refused, and nothing is rebuilt from it."""
    blob = bytes(range(256)) * 4096  # 1 MiB: a tail of 256 KiB, then frames

    def open_at(offset, length):
        data = blob[offset:offset + length]
        yield data[:-1] if skew < 0 else data + b"x"

    remote = client_deltas.RemoteBlob(len(blob), open_at, lambda n: None)
    remote.seek(-8, 2)
    with pytest.raises(IntegrityError, match="last"):
        remote.read(8)
    remote.close()


def test_a_file_far_larger_than_its_base_is_pushed_as_it_is_not_as_a_delta(models, tmp_path):
    """A hub refuses a delta rebuilding to over --max-delta-growth times its bases (2 by default, plus
    1 MiB); the client does not send one: a fine-tune that gained a tensor twice its base's size goes whole."""
    base, ft = models[0] / "model.safetensors", models[1][0] / "model.safetensors"
    grown = load_file(str(ft))
    extra = (2 * base.stat().st_size + (2 << 20)) // 4
    grown["extra.weight"] = torch.randn(extra, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "grown.safetensors"
    save_file(grown, str(path))
    bases = {_sha(base): base}
    assert client_deltas.encode_for_push(path, bases, tmp_path) is None
    assert client_deltas.encode_for_push(ft, bases, tmp_path) is not None
