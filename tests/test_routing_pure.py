"""Router scoring and index: pure numpy, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deltahub.routing import scoring
from deltahub.routing.index import AdapterIndex, IndexEntry, RouteFilter


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_centroid_is_the_normalised_mean():
    c = scoring.centroid(np.stack([unit(1, 0), unit(0, 1)]))
    assert np.allclose(c, unit(1, 1))


def test_best_sample_scores_average_the_top_m():
    q = unit(1, 0)[None]
    # adapter 0: cosines 1, 0, -1 ; adapter 1: cosine 0.6 (one sample)
    samples = np.stack([unit(1, 0), unit(0, 1), unit(-1, 0), unit(0.6, 0.8)])
    got = scoring.best_sample_scores(q, samples, np.array([3, 1]), top_m=2)
    assert np.allclose(got, [[0.5, 0.6]])
    assert np.allclose(scoring.best_sample_scores(q, samples, np.array([3, 1]), top_m=1), [[1.0, 0.6]])
    with pytest.raises(ValueError):
        scoring.best_sample_scores(q, samples, np.array([3, 1]), top_m=0)


def test_top_k_and_softmax():
    s = np.array([0.1, 0.9, -np.inf, 0.5])
    assert scoring.top_k(s, 2).tolist() == [1, 3]
    assert scoring.top_k(s, 10).tolist() == [1, 3, 0]  # -inf is never chosen
    w = scoring.softmax_weights(np.array([0.0, np.log(3.0)]), temperature=1.0)
    assert np.allclose(w, [0.25, 0.75])
    hot = scoring.softmax_weights(np.array([0.5, 0.4]), temperature=0.01)
    assert hot[0] > 0.99 and np.isclose(hot.sum(), 1.0)
    with pytest.raises(ValueError):
        scoring.softmax_weights(np.array([1.0]), temperature=0.0)


def _index(**kw):
    idx = AdapterIndex(2, **kw)
    idx.upsert(IndexEntry("fin/a", "d1", "base/x@1", "adapter", {"tier": "gold"}), np.stack([unit(1, 0), unit(1, 0.1)]))
    idx.upsert(IndexEntry("law/b", "d2", "base/x@1", "adapter"), np.stack([unit(0, 1)]))
    idx.upsert(IndexEntry("law/c", "d3", "base/y@1", "adapter", {"tier": "gold"}), np.stack([unit(-1, 0.2)]))
    return idx


def test_index_search_filters_and_updates():
    idx = _index()
    q = unit(1, 0.05)[None]
    assert [e.artifact for e, _ in idx.search(q, 3)[0]] == ["fin/a", "law/b", "law/c"]
    assert [e.artifact for e, _ in idx.search(q, 3, RouteFilter(namespace="law"))[0]] == ["law/b", "law/c"]
    assert [e.artifact for e, _ in idx.search(q, 3, RouteFilter(base="base/y@1"))[0]] == ["law/c"]
    assert [e.artifact for e, _ in idx.search(q, 3, RouteFilter(labels={"tier": "gold"}))[0]] == ["fin/a", "law/c"]
    assert [e.artifact for e, _ in idx.search(q, 3, RouteFilter(namespaces=frozenset({"law"})))[0]] == ["law/b", "law/c"]
    assert idx.search(q, 3, RouteFilter(namespace="nobody"))[0] == []
    # a new card replaces the row; its labels follow
    idx.upsert(IndexEntry("law/c", "d4", "base/y@1", "adapter"), np.stack([unit(1, 0.06)]))
    top, score = idx.search(q, 1)[0][0]
    assert (top.artifact, top.digest) == ("law/c", "d4") and score == pytest.approx(1.0, abs=1e-3)
    assert [e.artifact for e, _ in idx.search(q, 3, RouteFilter(labels={"tier": "gold"}))[0]] == ["fin/a"]
    assert idx.remove("law/c") and not idx.remove("law/c")
    assert [e.artifact for e, _ in idx.search(q, 3)[0]] == ["fin/a", "law/b"]
    assert len(idx) == 2 and idx.count(RouteFilter(namespace="law")) == 1


def test_centroid_and_sample_scoring_differ_as_documented():
    idx = AdapterIndex(2)
    # "wide": samples on two sub-topics; its centroid lies between them
    idx.upsert(IndexEntry("n/wide", "1", "", "adapter"), np.stack([unit(1, 0), unit(1, 0.05), unit(0, 1)]))
    idx.upsert(IndexEntry("n/mid", "2", "", "adapter"), np.stack([unit(1, 0.3)]))
    q = unit(1, 0.02)[None]
    assert idx.search(q, 1, scoring_name="centroid")[0][0][0].artifact == "n/mid"
    top, score = idx.search(q, 1, scoring_name="samples")[0][0]
    assert top.artifact == "n/wide" and score == pytest.approx(1.0, abs=1e-3)


def test_ivf_search_agrees_with_exact_search():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centers = scoring.normalize(rng.standard_normal((40, 32)))
    exact, ivf = AdapterIndex(32, ivf_min=10**9), AdapterIndex(32, ivf_min=500, nprobe=16)
    for i in range(3000):
        samples = scoring.normalize(centers[i % 40] + 0.3 * rng.standard_normal((3, 32)))
        entry = IndexEntry(f"ns{i % 3}/a{i}", str(i), "", "adapter")
        exact.upsert(entry, samples)
        ivf.upsert(entry, samples)
    assert ivf.needs_ivf() and ivf.build_ivf() and ivf.search_kind == "ivf"
    ivf.remove("ns0/a0")  # updates after the build reach the IVF too
    exact.remove("ns0/a0")
    queries = scoring.normalize(centers[:20] + 0.2 * rng.standard_normal((20, 32)))
    for flt in (None, RouteFilter(namespace="ns1")):
        a = [[e.artifact for e, _ in hits] for hits in exact.search(queries, 3, flt)]
        b = [[e.artifact for e, _ in hits] for hits in ivf.search(queries, 3, flt)]
        agree = np.mean([x[0] == y[0] for x, y in zip(a, b)])
        assert agree >= 0.95, (agree, flt)
        assert all(h.startswith("ns1/") for hits in b for h in hits) or flt is None
