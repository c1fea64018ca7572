"""Route and Assemble against a real server, with the real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import threading

import pytest

from deltahub.errors import InvalidInputError, NotFoundError
from tests.conftest import cli_json, run_cli
from tests.helpers import local_hub, make_adapter, make_tiny_llama

pytest.importorskip("sentence_transformers")

CARDS = {
    "finance": {"description": "Finance: stock markets, bonds, interest rates, central banks and earnings.",
                "samples": ["The Federal Reserve raised interest rates by a quarter point.",
                            "Bond yields climbed as inflation expectations rose.",
                            "The company's quarterly earnings beat analyst estimates."]},
    "law": {"description": "Law: contracts, courts, lawsuits, statutes and legal liability.",
            "samples": ["The appellate court reversed the lower court's ruling.",
                        "The tenant sued the landlord for breach of the lease agreement.",
                        "A non-compete clause may be unenforceable under state law."]},
    "medicine": {"description": "Medicine: diagnosis, symptoms, drugs, dosages and patient treatment.",
                 "samples": ["The patient presented with fever and a persistent cough.",
                             "The recommended adult dose of ibuprofen is 200 to 400 mg.",
                             "MRI scans help diagnose soft tissue injuries."]},
    "cooking": {"description": "Cooking: recipes, baking, ingredients and kitchen techniques.",
                "samples": ["Knead the bread dough for ten minutes until smooth.",
                            "Sear the steak in a hot cast iron pan before roasting.",
                            "Whisk the eggs and sugar until pale and fluffy."]},
}
QUERIES = {
    "finance": "Will the central bank cut rates next quarter?",
    "law": "Can my landlord keep my deposit after I break the lease?",
    "medicine": "What are the side effects of taking too much ibuprofen?",
    "cooking": "How long should I bake a sourdough loaf?",
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    base = make_tiny_llama(tmp_path_factory.mktemp("router-base"), seed=0)
    other = make_tiny_llama(tmp_path_factory.mktemp("router-other"), seed=5)
    made = {d: make_adapter(base, tmp_path_factory.mktemp(d), r=2, seed=i) for i, d in enumerate(CARDS)}
    made["other-finance"] = make_adapter(other, tmp_path_factory.mktemp("other-fin"), r=2, seed=9)
    return base, other, made


@pytest.fixture()
def routed(server, adapters):
    hub, store, address = server
    base, other, made = adapters
    hub.push(base, "base/tiny", kind="model")
    hub.push(other, "base/other", kind="model")
    for i, domain in enumerate(CARDS):
        ns = "fin" if domain == "finance" else "domains"
        hub.push(made[domain], f"{ns}/{domain}", kind="adapter", base="base/tiny", card=CARDS[domain],
                 labels={"tier": "gold" if i % 2 == 0 else "silver"})
    hub.push(made["other-finance"], "fin/other-base", kind="adapter", base="base/other", card=CARDS["finance"])
    return hub, store, address


def top1(result):
    return [r.adapters[0].artifact if r.adapters else None for r in result.routes]


def test_queries_route_to_their_domain(routed):
    hub, _, _ = routed
    result = hub.route(list(QUERIES.values()), k=2, base="base/tiny", min_score=-1)  # every top-2 hit kept
    assert top1(result) == ["fin/finance", "domains/law", "domains/medicine", "domains/cooking"]
    for r in result.routes:
        assert len(r.adapters) == 2 and r.adapters[0].score > r.adapters[1].score
        assert sum(a.weight for a in r.adapters) == pytest.approx(1.0)
        assert r.adapters[0].weight > r.adapters[1].weight
    assert result.embedder == "all-minilm-l6-v2" and result.candidates == 4
    # the LoraRetriever baseline routes these clear cases the same way
    assert top1(hub.route(list(QUERIES.values()), k=1, base="base/tiny", scoring="centroid", min_score=-1)) == top1(result)


def test_filters_threshold_and_bad_input(routed):
    hub, _, _ = routed
    q = QUERIES["finance"]
    assert top1(hub.route(q, base="base/other")) == ["fin/other-base"]
    assert {a.artifact for a in hub.route(q, k=5, namespace="fin").routes[0].adapters} == {"fin/finance", "fin/other-base"}
    gold = hub.route(q, k=5, labels={"tier": "gold"}, min_score=-1).routes[0].adapters
    assert {a.artifact for a in gold} == {"fin/finance", "domains/medicine"}
    # below the minimum score: no adapter, a reason, and the best score seen
    none = hub.route("Quantum chromodynamics of gluon fields", min_score=0.9).routes[0]
    assert none.serve_base and none.adapters == () and "serve the base" in none.reason
    assert none.best_score is not None and none.best_score < 0.9
    # by default the embedder's floor (0.2 for MiniLM): an unrelated query gets the base, a clear one its domain
    # alone, not a second unrelated adapter with half the weight
    default = hub.route(["Quantum chromodynamics of gluon fields", q], k=2, base="base/tiny").routes
    assert default[0].serve_base and "the embedder's default --min-score" in default[0].reason
    assert [a.artifact for a in default[1].adapters] == ["fin/finance"]
    for kwargs, error, needle in [
        (dict(queries=[""]), InvalidInputError, "query 0 is empty"),
        (dict(queries=[]), InvalidInputError, "at least one query"),
        (dict(queries=[q], k=0), InvalidInputError, "k must be"),
        (dict(queries=[q], temperature=0.0), InvalidInputError, "temperature"),
        (dict(queries=[q], scoring="bm25"), InvalidInputError, "known: samples, centroid"),
        (dict(queries=[q], base="base/missing"), NotFoundError, "base/missing"),
    ]:
        with pytest.raises(error, match=needle):
            hub.route(**kwargs)


def test_card_updates_and_deletes_change_routing(routed):
    hub, _, _ = routed
    astro = "Which telescope is best for watching Saturn's rings?"
    before = hub.route([astro, QUERIES["cooking"]], base="base/tiny").routes
    assert before[1].adapters[0].artifact == "domains/cooking"
    hub.update_card("domains/cooking", card={
        "description": "Astronomy: telescopes, planets, stars and observing the night sky.",
        "samples": ["Jupiter's moons are visible through binoculars.", "A refractor telescope suits planetary viewing."]})
    after = hub.route([astro, QUERIES["cooking"]], base="base/tiny").routes
    assert after[0].adapters[0].artifact == "domains/cooking"
    assert before[0].serve_base  # nothing fitted astronomy before (the default floor)
    assert after[0].adapters[0].score > before[0].best_score + 0.2
    assert all(a.artifact != "domains/cooking" for a in after[1].adapters)
    hub.delete_artifact("domains/cooking")
    result = hub.route([astro, QUERIES["cooking"]], k=5)
    assert all(a.artifact != "domains/cooking" for r in result.routes for a in r.adapters)


def test_adapters_without_a_card_are_reported_not_routed(routed, adapters):
    hub, _, _ = routed
    hub.push(adapters[2]["law"], "domains/nocard", kind="adapter", base="base/tiny")
    result = hub.route(QUERIES["law"], k=10)
    assert "domains/nocard" not in {a.artifact for a in result.routes[0].adapters}
    assert result.unrouted_count == 1 and result.unrouted == ("domains/nocard",)
    assert "no domain card" in result.unrouted_reason
    assert hub.route(QUERIES["law"], namespace="fin").unrouted_count == 0


def test_an_adapter_without_a_card_is_known_by_its_training_data(routed, adapters, tmp_path):
    hub, _, address = routed
    from tests.helpers import make_dataset

    (tmp_path / "bio").mkdir()  # not tmp_path itself: the hub's data folder lives there
    data = make_dataset(tmp_path / "bio", ["Photosynthesis converts light into chemical energy in chloroplasts.",
                                   "Mitochondria produce ATP through cellular respiration.",
                                   "DNA replication is semi-conservative."])
    spec = hub.push(data, "data/biology", kind="dataset").revision.spec
    proc = run_cli("--hub", address, "push", str(adapters[2]["law"]), "bio/cells", "--kind", "adapter",
                   "--base", "base/tiny", "--parent", spec, "-q")
    assert proc.returncode == 0, proc.stderr
    result = hub.route("How do plant cells make energy from sunlight?", k=1)
    assert result.routes[0].adapters[0].artifact == "bio/cells" and result.unrouted_count == 0


def test_another_process_follows_the_catalog(routed, adapters, tmp_path):
    """A second router over the same data folder (another server process) sees commits through the catalog."""
    from deltahub.routing.router import Router, RouteRequest
    from deltahub.store import HubStore

    hub, store, _ = routed
    other = HubStore.open(store.config.data_dir)
    try:
        router = Router(other.catalog)
        q = "Which statute of limitations applies to medical malpractice?"
        assert router.route(RouteRequest([q], k=10)).candidates == 5
        hub.push(adapters[2]["law"], "domains/malpractice", kind="adapter", base="base/tiny", card={
            "description": "Medical malpractice law: negligence claims against doctors and hospitals."})
        answer = router.route(RouteRequest([q], k=1))
        assert answer.candidates == 6 and answer.routes[0].adapters[0].artifact == "domains/malpractice"
    finally:
        other.close()


def test_assemble_builds_once_and_caches(routed, monkeypatch):
    hub, store, _ = routed
    from deltahub_trainers import worker

    builds = []
    real_build = worker.build_merge

    def counting_build(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(worker, "build_merge", counting_build)  # what the hub's workers build with
    first = hub.assemble(QUERIES["medicine"], k=2, base="base/tiny")
    assert not first.cached and len(builds) == 1
    assert first.adapters[0].artifact == "domains/medicine" and first.form == "adapter" and first.method == "linear"
    assert first.artifact == f"assembled/{first.recipe_hash[:16]}"
    again = hub.assemble(QUERIES["medicine"], k=2, base="base/tiny")
    assert again.cached and again.digest == first.digest and len(builds) == 1
    rev = hub.show(first.spec)
    assert rev.lineage.recipe["method"] == "linear" and rev.lineage.recipe["weights"] == [
        round(a.weight, 4) for a in first.adapters]

    # two concurrent identical requests: one merge
    results = []
    threads = [threading.Thread(target=lambda: results.append(hub.assemble(QUERIES["law"], k=3, base="base/tiny")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 2 and len({r.digest for r in results}) == 1 and sorted(r.cached for r in results) == [False, True]
    jobs = hub.jobs("assembled", kind="assemble")
    assert len(jobs) in (2, 3) and all(j.state == "SUCCEEDED" for j in jobs)  # a second job waits on the flight


def test_assemble_explicit_adapters_loads_with_peft(routed, tmp_path, monkeypatch):
    hub, _, _ = routed
    result = hub.assemble(adapters=["fin/finance", "domains/law"], weights=[0.7, 0.3])
    assert [a.weight for a in result.adapters] == [0.7, 0.3]
    merged = hub.merge("linear", ["fin/finance", "domains/law"], weights=[0.7, 0.3], out="team/same", form="adapter")
    assert merged.cached and merged.recipe_hash == result.recipe_hash  # the same recipe as the merge endpoint's
    model, again = hub.load_assembled(adapters=["fin/finance", "domains/law"], weights=[0.7, 0.3], cache_dir=tmp_path)
    assert again.cached and type(model).__name__.startswith("PeftModel")
    import tempfile

    import torch

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded, _ = hub.load_assembled(adapters=["fin/finance", "domains/law"], weights=[0.7, 0.3])  # no cache_dir
    assert list(scratch.iterdir()) == []  # nothing left behind
    with torch.no_grad():
        assert loaded(torch.arange(1, 9).unsqueeze(0)).logits.isfinite().all()  # and the model still works
    magmax = hub.assemble(QUERIES["finance"], k=2, base="base/tiny", method="magmax")
    assert magmax.method == "magmax" and not magmax.serve_base
    assert hub.show(magmax.spec).lineage.recipe["weights"] is None  # magmax picks its own
    base_only = hub.assemble("Quantum chromodynamics of gluon fields", base="base/tiny", min_score=0.9)
    assert base_only.serve_base and base_only.spec.startswith("base/tiny@") and not base_only.digest


def test_assemble_bad_input(routed):
    hub, store, _ = routed
    before = len(store.list_artifacts())
    for kwargs, error, needle in [
        (dict(query=QUERIES["law"], method="frankenmerge"), InvalidInputError, "known: .*magmax"),
        (dict(query=""), InvalidInputError, "give a query"),
        (dict(query=QUERIES["law"], k=0), InvalidInputError, "k must be"),
        (dict(query=QUERIES["law"], weights=[1.0]), InvalidInputError, "explicit adapter list"),
        (dict(adapters=["fin/finance"], weights=[0.5, 0.5]), InvalidInputError, "2 weight"),
        (dict(adapters=["fin/nothing"]), NotFoundError, "fin/nothing"),
        (dict(adapters=["base/tiny"]), InvalidInputError, "is a model"),
        (dict(query=QUERIES["law"], base="base/none"), NotFoundError, "base/none"),
    ]:
        with pytest.raises(error, match=needle):
            hub.assemble(**kwargs)
    with pytest.raises(Exception, match="share one base|different bases"):
        hub.assemble(adapters=["fin/finance", "fin/other-base"])
    assert len(store.list_artifacts()) == before


def test_route_and_assemble_from_the_cli(routed):
    _, _, address = routed
    doc = cli_json("--hub", address, "route", QUERIES["cooking"], QUERIES["law"], "--k", "2", "--base", "base/tiny")
    assert [r["adapters"][0]["artifact"] for r in doc["routes"]] == ["domains/cooking", "domains/law"]
    text = run_cli("--hub", address, "route", "Quantum chromodynamics", "--min-score", "0.95")
    assert text.returncode == 0 and "no adapter" in text.stdout
    built = cli_json("--hub", address, "assemble", QUERIES["cooking"], "--k", "2", "--base", "base/tiny")
    assert built["adapters"][0]["artifact"] == "domains/cooking" and built["cached"] is False
    again = cli_json("--hub", address, "assemble", "--adapters", "domains/cooking,domains/law", "--weights", "0.5,0.5")
    assert again["method"] == "linear" and len(again["adapters"]) == 2
    bad = run_cli("--hub", address, "route", "x", "--k", "0")
    assert bad.returncode == 1 and "k must be" in bad.stderr
    status = cli_json("--hub", address, "router")
    assert status["indexed"] == 5 and status["embedder"] == "all-minilm-l6-v2"


def test_router_follows_redis_events(tmp_path, adapters, redis_url):
    """With Redis configured, a router in another process wakes on the event stream, not on its poll timer."""
    import time

    from deltahub.routing.router import Router
    from deltahub.store import HubStore

    base, _, made = adapters
    with local_hub(tmp_path / "data", redis_url=redis_url) as (hub, _, _):
        other = HubStore.open(tmp_path / "data")
        router = Router(other.catalog, redis_url=redis_url, poll_s=60.0)
        try:
            hub.push(base, "base/tiny", kind="model")
            router.start().wait_ready()
            time.sleep(0.2)  # the follower is blocked on the stream now
            hub.push(made["law"], "domains/law", kind="adapter", base="base/tiny", card=CARDS["law"])
            deadline = time.monotonic() + 20
            while "domains/law" not in router.index and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "domains/law" in router.index
        finally:
            router.stop()
            other.close()


def test_another_embedder_re_embeds_the_cards(routed):
    """Embeddings are kept per embedder: a router on a new embedder embeds every card again, and routes."""
    import numpy as np

    from deltahub.routing.embedders import EMBEDDERS, load_embedder
    from deltahub.routing.router import Router, RouteRequest

    class Rotated:
        """The default encoder seen through a fixed orthogonal map: another vector space, same geometry."""

        name, dim = "minilm-rotated", 384

        def __init__(self):
            self.inner = load_embedder()
            q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((384, 384)))
            self.rotation = q.astype(np.float32)

        def embed(self, texts):
            return self.inner.embed(texts) @ self.rotation

    if "minilm-rotated" not in EMBEDDERS:
        EMBEDDERS.register("minilm-rotated", Rotated)
    hub, store, _ = routed
    hub.route(QUERIES["law"])  # the server's router has embedded the cards with the default
    assert store.catalog.embeddings("minilm-rotated") == {}
    router = Router(store.catalog, embedder="minilm-rotated")
    answer = router.route(RouteRequest([QUERIES["law"]], k=1))
    assert answer.embedder == "minilm-rotated" and answer.routes[0].adapters[0].artifact == "domains/law"
    assert len(store.catalog.embeddings("minilm-rotated")) == 5
    assert len(store.catalog.embeddings("all-minilm-l6-v2")) == 5  # the default's rows are kept
    with pytest.raises(InvalidInputError, match="known: .*all-minilm-l6-v2"):
        Router(store.catalog, embedder="word2vec")


def test_assemble_an_arrow_mixture_that_peft_loads(routed, adapters, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub, store, _ = routed
    ask = dict(k=2, base="base/tiny", form="arrow", params={"top_k": 2}, min_score=-1)  # two adapters, fitting or not
    result = hub.assemble(QUERIES["finance"], **ask)
    assert result.form == "arrow" and not result.cached and len(result.adapters) == 2
    assert hub.assemble(QUERIES["finance"], **ask).cached
    rev = hub.show(result.spec)
    assert {f.path for f in rev.files} == {"arrow_config.json", "task_0/adapter_config.json",
                                           "task_0/adapter_model.safetensors", "task_1/adapter_config.json",
                                           "task_1/adapter_model.safetensors"}
    first = hub.show(result.adapters[0].spec)
    assert rev.file("task_0/adapter_model.safetensors").sha256 == first.file("adapter_model.safetensors").sha256
    model, _ = hub.load_assembled(QUERIES["finance"], cache_dir=tmp_path, **ask)
    logits = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.shape == (1, 4, 96) and torch.isfinite(logits).all()
    # each expert is a plain peft adapter
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "merged" / "task_1")

    # bad input: a method with a mixture; experts of different ranks (peft's Arrow needs one) -> nothing stored
    with pytest.raises(InvalidInputError, match="routed mixture"):
        hub.assemble(QUERIES["law"], form="arrow", method="ties")
    hub.push(make_adapter(adapters[0], tmp_path / "r4", r=4, seed=7), "odd/r4", kind="adapter", base="base/tiny")
    before = len(store.list_artifacts())
    with pytest.raises(InvalidInputError, match="one rank"):
        hub.assemble(adapters=["fin/finance", "odd/r4"], form="arrow")
    assert len(store.list_artifacts()) == before
