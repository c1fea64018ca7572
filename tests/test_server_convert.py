"""The server's readers of requests (deltahub_server.convert), by hand: protobuf's zero means unset, a
message field's presence is what says whether it was given, and odd values are refused naming the field."""

from __future__ import annotations

import pytest

from deltahub.artifacts import DomainCard
from deltahub.errors import InvalidInputError
from deltahub.routing.router import DEFAULT_K
from deltahub.routing.scoring import DEFAULT_TEMPERATURE
from deltahub.v1 import common_pb2, jobs_pb2, merge_pb2, registry_pb2, router_pb2, train_pb2, transfer_pb2
from deltahub_server import convert


def test_zero_and_empty_mean_unset():
    tv = convert.task_vector_request_from_pb(
        registry_pb2.CreateTaskVectorRequest(finetuned="t/ft", base="t/base", out="t/tv"), "alice")
    assert (tv.rank, tv.energy, tv.ref, tv.card, tv.created_by) == (None, None, "main", DomainCard(), "alice")
    tv = convert.task_vector_request_from_pb(registry_pb2.CreateTaskVectorRequest(rank=8, energy=0.9, ref="v1"), "")
    assert (tv.rank, tv.energy, tv.ref) == (8, 0.9, "v1")
    assert convert.blob_range_from_pb(transfer_pb2.DownloadBlobRequest(offset=7)) == (7, None)
    assert convert.blob_range_from_pb(transfer_pb2.DownloadBlobRequest(offset=7, length=3)) == (7, 3)
    assert convert.gc_max_age_from_pb(registry_pb2.CollectGarbageRequest()) is None
    assert convert.ref_watch_from_pb(registry_pb2.WatchRefsRequest(after=4)) == (None, None, 4)
    assert convert.artifact_filter_from_pb(registry_pb2.ListArtifactsRequest(namespace="t")) == ("t", None)
    assert convert.evaluation_request_from_pb(merge_pb2.EvaluateRequest(target="t/m", data="t/d")) == (
        "t/m", "t/d", "auto")


def test_a_card_present_but_empty_replaces_the_card_and_an_absent_one_keeps_it():
    kept = convert.card_update_from_pb(registry_pb2.UpdateCardRequest(spec="t/a", labels={"k": "v"}))
    assert kept == (None, {"k": "v"}, False)
    cleared = registry_pb2.UpdateCardRequest(spec="t/a", replace_labels=True)
    cleared.card.SetInParent()
    assert convert.card_update_from_pb(cleared) == (DomainCard(), {}, True)


def test_job_lists_default_to_100_cap_at_10000_and_name_a_bad_field():
    assert convert.job_filter_from_pb(jobs_pb2.ListJobsRequest()) == (None, None, None, 100)
    assert convert.job_filter_from_pb(jobs_pb2.ListJobsRequest(namespace="t", kind="merge", state="failed",
                                                               limit=50_000)) == ("t", "merge", "FAILED", 10_000)
    for request, field in ((jobs_pb2.ListJobsRequest(limit=-1), "limit"),
                           (jobs_pb2.ListJobsRequest(kind="bake"), "kind"),
                           (jobs_pb2.ListJobsRequest(state="DONE"), "state")):
        with pytest.raises(InvalidInputError, match=field):
            convert.job_filter_from_pb(request)


def test_a_route_resolves_its_base_only_when_given_and_reads_optional_knobs_by_presence():
    asked = []

    def resolve(name: str) -> str:
        asked.append(name)
        return name + "@d1"

    plain = convert.route_request_from_pb(router_pb2.RouteRequest(queries=["q1", "q2"]), resolve)
    assert (plain.queries, plain.k, plain.base, plain.temperature, plain.min_score) == (
        ["q1", "q2"], DEFAULT_K, "", DEFAULT_TEMPERATURE, None)
    assert asked == []
    options = router_pb2.RouteOptions(k=0, base="t/base", min_score=0.0, labels={"d": "law"})
    given = convert.route_request_from_pb(router_pb2.RouteRequest(queries=["q"], options=options), resolve)
    # k=0 and min_score=0 were sent: they reach the router (which refuses k=0), not the defaults
    assert (given.k, given.min_score, given.base, given.labels) == (0, 0.0, "t/base@d1", {"d": "law"})
    assembled = convert.assemble_request_from_pb(router_pb2.AssembleRequest(query="q", options=options), resolve,
                                                 "bob")
    assert (assembled.route.queries, assembled.route.base, assembled.created_by) == (["q"], "t/base@d1", "bob")


def test_a_training_request_carries_its_config_and_a_bad_config_names_the_field():
    req = convert.training_request_from_pb(train_pb2.SubmitJobRequest(
        trainer="lora", base="t/base", datasets=["t/d"], out="t/a", config_json='{"r": 4}', replay=["t/old"],
        card=common_pb2.DomainCard(description="law")))
    assert (req.config, req.datasets, req.replay, req.card.description) == ({"r": 4}, ["t/d"], ["t/old"], "law")
    with pytest.raises(InvalidInputError, match="config_json"):
        convert.training_request_from_pb(train_pb2.SubmitJobRequest(config_json="[1]"))
    assert convert.held_from_pb(transfer_pb2.PlanPullRequest(held=["a" * 64])) == ["a" * 64]
