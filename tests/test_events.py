"""Catalog change events: recorded in SQLite, and published to a real Redis stream when configured."""

import uuid

import pytest

from deltahub.events import RedisEventSink
from tests.helpers import local_hub


def test_events_are_recorded_in_the_catalog(server, pushed_base, tiny_adapter):
    hub, store, _ = server
    hub.push(tiny_adapter, "finance/lora", kind="adapter", base="base/tiny-llama")
    hub.update_card("finance/lora", card={"description": "d", "samples": []})
    hub.delete_artifact("finance/lora")
    rows = [r for r in store.catalog.events_since(0) if r["artifact"] == "finance/lora"]
    assert [r["kind"] for r in rows] == ["commit", "ref", "card", "ref", "delete"]
    assert (rows[1]["ref"], rows[3]["ref"], rows[3]["digest"]) == ("main", "main", "")  # moved, then deleted


def test_events_reach_a_redis_stream(tmp_path, redis_url, tiny_base):
    import redis

    stream = f"deltahub:test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    with local_hub(tmp_path / "d", redis_url=redis_url) as (hub, store, _):
        store.catalog.sink = RedisEventSink(redis_url, stream=stream)
        try:
            rev = hub.push(tiny_base, "base/tiny", kind="model").revision
            hub.tag("base/tiny", "prod")
            entries = client.xrange(stream)
            seen = [(f[b"kind"].decode(), f[b"artifact"].decode(), f[b"digest"].decode()) for _, f in entries]
            assert seen == [("commit", "base/tiny", rev.digest), ("ref", "base/tiny", rev.digest),
                            ("ref", "base/tiny", rev.digest)]
        finally:
            client.delete(stream)


def test_a_refused_commit_publishes_nothing(tmp_path, redis_url, tiny_adapter):
    import redis

    from deltahub.errors import NotFoundError

    stream = f"deltahub:test:{uuid.uuid4().hex}"
    with local_hub(tmp_path / "d") as (hub, store, _):
        store.catalog.sink = RedisEventSink(redis_url, stream=stream)
        with pytest.raises(NotFoundError):
            hub.push(tiny_adapter, "finance/x", kind="adapter", base="base/none")
        assert redis.Redis.from_url(redis_url).xlen(stream) == 0
