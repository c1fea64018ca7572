"""Import from and export to the Hugging Face cache layout, offline."""

import pytest


def test_export_is_found_by_huggingface_hub_and_transformers(server, pushed_base, tmp_path):
    from huggingface_hub import scan_cache_dir, snapshot_download
    from transformers import AutoModelForCausalLM

    hub, _, _ = server
    cache = tmp_path / "hf-cache"
    snapshot = hub.export_hf("base/tiny-llama", cache, repo_id="org/tiny-llama")
    assert snapshot.name == pushed_base.digest[:40]
    found = snapshot_download("org/tiny-llama", cache_dir=cache, local_files_only=True)
    assert found == str(snapshot)
    model = AutoModelForCausalLM.from_pretrained("org/tiny-llama", cache_dir=cache, local_files_only=True)
    assert model.config.num_hidden_layers == 2
    repos = {r.repo_id: r for r in scan_cache_dir(cache).repos}
    assert repos["org/tiny-llama"].nb_files == len(pushed_base.files)
    # exporting again rewrites nothing and gives the same snapshot
    assert hub.export_hf("base/tiny-llama", cache, repo_id="org/tiny-llama") == snapshot


def test_import_from_cache_and_from_snapshot_folder(server, pushed_base, tmp_path):
    from deltahub.errors import InvalidInputError, NotFoundError

    hub, _, _ = server
    cache = tmp_path / "hf-cache"
    snapshot = hub.export_hf("base/tiny-llama", cache, repo_id="org/tiny-llama")
    via_cache = hub.import_hf(cache, "imported/tiny", kind="model", repo_id="org/tiny-llama")
    assert via_cache.revision.digest == pushed_base.digest and via_cache.bytes_sent == 0
    via_snapshot = hub.import_hf(snapshot, "imported/tiny2", kind="model")
    assert via_snapshot.revision.digest == pushed_base.digest
    with pytest.raises(NotFoundError, match="not in the cache"):
        hub.import_hf(cache, "imported/x", kind="model", repo_id="org/absent")
    with pytest.raises(InvalidInputError, match="cache repo folder"):
        hub.import_hf(snapshot.parent.parent, "imported/x", kind="model")


def test_cli_export_and_import(server, pushed_base, tmp_path):
    from tests.conftest import cli_json

    _, _, address = server
    env = {"DELTAHUB_ADDRESS": address}
    out = cli_json("export-hf", "base/tiny-llama", str(tmp_path / "c"), "--repo-id", "org/m", env=env)
    assert out["snapshot"].endswith(pushed_base.digest[:40])
    imp = cli_json("import-hf", str(tmp_path / "c"), "again/m", "--kind", "model", "--repo-id", "org/m", env=env)
    assert imp["revision"]["digest"] == pushed_base.digest
