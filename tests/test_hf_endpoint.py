"""The Hugging Face Hub download API (``serve --http-address``), driven by the real clients in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import urllib.error
import urllib.request
import pytest

from deltahub.auth import TokenTable
from tests.helpers import local_hub, make_adapter

TOKENS = """
tokens:
  - {name: admin, token: adm, scopes: {'*': admin}}
  - {name: other, token: oth, scopes: {elsewhere: read}}
"""


def _client(port: int, code: str, token: str | None = None, tmp: Path | None = None) -> dict:
    """Runs ``code`` (which sets ``out``) with HF_ENDPOINT at the hub; returns ``out``."""
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp / "hf-home")}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    script = "import json\nout = {}\n" + code + "\nprint('OUT=' + json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("OUT="))[4:])


class _Reply:
    def __init__(self, status: int, headers, content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content


def _http(method: str, url: str, headers: dict | None = None) -> _Reply:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}), timeout=30) as r:
            return _Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as err:
        return _Reply(err.code, err.headers, err.read())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["embedded", "shared"])
def endpoint(request, tmp_path, tiny_base):
    """The download API over the embedded default, and over PostgreSQL + S3 (ranges answered by S3)."""
    shared = {} if request.param == "embedded" else {
        "catalog": request.getfixturevalue("pg_url"), "blob_store": request.getfixturevalue("s3_url")}
    with local_hub(tmp_path / "d", http_address="127.0.0.1:0", **shared) as (hub, store, address):
        from deltahub_server.app import RunningServer  # the fixture's server: its bound HTTP port
        import gc

        running = next(o for o in gc.get_objects() if isinstance(o, RunningServer) and o.store is store)
        hub.push(tiny_base, "base/tiny", kind="model", tags=["v1"])
        adapter = make_adapter(tiny_base, tmp_path / "lora", r=4, seed=3)
        hub.push(adapter, "fin/lora", kind="adapter", base="base/tiny")
        yield hub, running.http_port, tiny_base, adapter


def test_snapshot_download_by_ref_and_commit_loads_by_name(endpoint, tmp_path):
    hub, port, base, adapter = endpoint
    rev = hub.show("base/tiny")
    hub.merge("linear", ["fin/lora"], out="fin/merged", form="adapter")  # names its base "base/tiny"
    out = _client(port, f"""
from huggingface_hub import snapshot_download, HfApi
from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError
from huggingface_hub import hf_hub_download
info = HfApi().model_info('base/tiny', revision='v1', files_metadata=True)
out['sha'] = info.sha
out['siblings'] = {{s.rfilename: s.size for s in info.siblings}}
out['by_ref'] = snapshot_download('base/tiny', revision='v1', cache_dir='{tmp_path}/c1')
out['by_commit'] = snapshot_download('base/tiny', revision=info.sha, cache_dir='{tmp_path}/c2')
out['tree'] = sorted(HfApi().list_repo_files('base/tiny', revision=info.sha))
errors = {{}}
for what, call in [('repo', lambda: snapshot_download('nobody/here', cache_dir='{tmp_path}/c3')),
                   ('revision', lambda: snapshot_download('base/tiny', revision='nope', cache_dir='{tmp_path}/c3')),
                   ('file', lambda: hf_hub_download('base/tiny', 'missing.bin', cache_dir='{tmp_path}/c3'))]:
    try:
        call()
    except Exception as err:
        errors[what] = [c.__name__ for c in type(err).__mro__]
out['errors'] = errors
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
out['tokens'] = AutoTokenizer.from_pretrained('base/tiny', cache_dir='{tmp_path}/c4')('the market rallied')['input_ids']
model = AutoModelForCausalLM.from_pretrained('base/tiny', cache_dir='{tmp_path}/c4')
ids = torch.tensor([[1, 2, 3, 4]])
out['base_logits'] = model(ids).logits.flatten()[:16].tolist()
tuned = PeftModel.from_pretrained(model, 'fin/lora', cache_dir='{tmp_path}/c4')
out['lora_logits'] = tuned(ids).logits.flatten()[:16].tolist()
from peft import AutoPeftModelForCausalLM
merged = AutoPeftModelForCausalLM.from_pretrained('fin/merged', cache_dir='{tmp_path}/c5')  # finds its base by name
out['merged_logits'] = merged(ids).logits.flatten()[:16].tolist()
""", tmp=tmp_path)
    assert out["sha"] == rev.digest[:40] and len(out["sha"]) == 40
    assert out["siblings"] == {f.path: f.size for f in rev.files}
    for key in ("by_ref", "by_commit"):
        got = Path(out[key])
        assert got.name == rev.digest[:40]
        assert {f.path: _sha(got / f.path) for f in rev.files} == {f.path: f.sha256 for f in rev.files}
    assert out["tree"] == sorted(f.path for f in rev.files)
    assert "RepositoryNotFoundError" in out["errors"]["repo"]
    assert "RevisionNotFoundError" in out["errors"]["revision"]
    assert "EntryNotFoundError" in out["errors"]["file"]
    # the same logits as the pushed folders give
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(base)("the market rallied")["input_ids"] == out["tokens"]
    model = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(ids).logits.flatten()[:16].tolist() == out["base_logits"]
    assert PeftModel.from_pretrained(model, adapter)(ids).logits.flatten()[:16].tolist() == out["lora_logits"]
    assert out["merged_logits"] == pytest.approx(out["lora_logits"], abs=1e-5)  # a linear merge of one adapter


def test_resolve_headers_head_and_range_resume(endpoint, tmp_path):
    hub, port, base, _ = endpoint
    rev = hub.show("base/tiny")
    weights = next(f for f in rev.files if f.path == "model.safetensors")
    url = f"http://127.0.0.1:{port}/base/tiny/resolve/main/model.safetensors"
    head = _http("HEAD", url)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == rev.digest[:40]
    assert head.headers["ETag"] == f'"{weights.sha256}"' and int(head.headers["Content-Length"]) == weights.size
    part = _http("GET", url, {"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 100-199/{weights.size}"
    assert part.content == (base / "model.safetensors").read_bytes()[100:200]
    assert _http("GET", url, {"Range": f"bytes={weights.size}-"}).status_code == 416
    # hf_hub_download resumes from an .incomplete file left by an interrupted download
    cache = tmp_path / "resume"
    blobs = cache / "models--base--tiny" / "blobs"
    blobs.mkdir(parents=True)
    data = (base / "model.safetensors").read_bytes()
    (blobs / f"{weights.sha256}.incomplete").write_bytes(data[: len(data) // 2])
    out = _client(port, f"""
from huggingface_hub import hf_hub_download
out['path'] = hf_hub_download('base/tiny', 'model.safetensors', cache_dir='{cache}')
""", tmp=tmp_path)
    assert _sha(Path(out["path"])) == weights.sha256


def test_tokens_gate_the_files(tmp_path, tiny_base):
    with local_hub(tmp_path / "d", http_address="127.0.0.1:0", tokens=TokenTable.parse(TOKENS)) as (_, store, address):
        from deltahub_client import Hub
        from deltahub_server.app import RunningServer
        import gc

        port = next(o for o in gc.get_objects() if isinstance(o, RunningServer) and o.store is store).http_port
        with Hub(address, "adm", progress=False) as admin:
            admin.push(tiny_base, "base/tiny", kind="model")
        url = f"http://127.0.0.1:{port}/base/tiny/resolve/main/config.json"
        assert _http("GET", url).status_code == 401
        assert _http("GET", url, {"Authorization": "Bearer wrong"}).status_code == 401
        assert _http("GET", url, {"Authorization": "Bearer oth"}).status_code == 403
        missing = url.replace("base/tiny", "base/none")  # no existence leak to a token without read scope
        assert _http("GET", missing, {"Authorization": "Bearer oth"}).status_code == 403
        assert _http("GET", url, {"Authorization": "Bearer adm"}).status_code == 200
        code = f"""
from huggingface_hub import hf_hub_download
try:
    hf_hub_download('base/tiny', 'config.json', cache_dir='{tmp_path}/c')
    out['error'] = None
except Exception as err:
    out['error'] = [c.__name__ for c in type(err).__mro__]
"""
        denied = _client(port, code, tmp=tmp_path)["error"]
        assert denied and "HfHubHTTPError" in denied  # the client's own error, never the file
        assert _client(port, code, token="adm", tmp=tmp_path)["error"] is None


def test_serve_command_starts_the_endpoint_and_refuses_to_expose_it(tmp_path):
    import socket

    from deltahub.errors import InvalidInputError
    from deltahub_server import ServerConfig
    from deltahub_server.app import check_exposure
    from tests.helpers import ServeProcess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServeProcess(tmp_path / "d", "--http-address", f"127.0.0.1:{port}")
    try:
        missing = _http("GET", f"http://127.0.0.1:{port}/api/models/no/such")
        assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "RepoNotFound"
        import time

        deadline = time.time() + 10  # the log line may still be on its way through the drain thread
        while not any(f"HF_ENDPOINT=http://127.0.0.1:{port}" in line for line in server.log):
            assert time.time() < deadline, "".join(server.log)
            time.sleep(0.1)
    finally:
        server.stop()
    with pytest.raises(InvalidInputError, match="plaintext HTTP"):
        check_exposure(ServerConfig(data_dir=tmp_path / "x", http_address="0.0.0.0:8080"))


def test_odd_requests_get_client_errors_never_500(endpoint):
    _, port, _, _ = endpoint
    root = f"http://127.0.0.1:{port}"
    for path, status in [
        ("/api/models/bad%20ns/x", 404),                                   # not a name: no such repo
        ("/api/models/base/tiny/revision/%2E%2E%2Fmain", 404),
        ("/api/models/base/tiny/revision/" + "a" * 3000, 404),
        ("/base/tiny/resolve/main/..%2Fconfig.json", 404),                 # only the revision's own paths
        ("/api/models/base/tiny/tree/main/no/such/dir", 404),
    ]:
        got = _http("GET", root + path)
        assert got.status_code == status, (path, got.status_code, got.content[:200])
    url = root + "/base/tiny/resolve/main/config.json"
    for bad in ("bytes=abc", "bytes=-", "items=0-1", "bytes=5-2"):
        assert _http("GET", url, {"Range": bad}).status_code == 416, bad
