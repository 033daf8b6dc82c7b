"""Redis checks against the sandbox's real server."""

from __future__ import annotations

import pytest
import redis

from agent.status import Status
from sandbox import stack

pytestmark = pytest.mark.integration
URL = stack.AGENT_ENV["REDIS_URL"]


@pytest.fixture
def client():
    client = redis.Redis.from_url(URL, decode_responses=True)
    yield client
    client.delete("bull:rbtest:wait", "bull:rbtest:failed", "rbtest:stream", "rbtest:hash", "custom:rbtest:dead")
    client.close()


def test_ping(probe) -> None:
    assert probe("redis.ping", url=URL).status is Status.OK
    refused = probe("redis.ping", url="redis://127.0.0.1:1/0")
    assert (refused.status, refused.code) == (Status.CRITICAL, "redis_unreachable")
    wrong = probe("redis.ping", url=f"redis://:wrong-redis-pw@127.0.0.1:{stack.PORTS['redis']}/0")
    assert wrong.status is Status.CRITICAL and "wrong-redis-pw" not in wrong.summary


def test_memory(probe, client) -> None:
    assert probe("redis.memory", url=URL).status is Status.OK
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used * 1.02)))
    try:
        result = probe("redis.memory", url=URL)
        assert (result.status, result.code) == (Status.CRITICAL, "redis_memory_high")
    finally:
        client.config_set("maxmemory", "256mb")


def test_queue_depth_of_lists_streams_and_wrong_types(probe, client) -> None:
    assert probe("redis.queue_depth", url=URL, queue="rbtest").metrics["depth"] == 0
    pipe = client.pipeline(transaction=False)
    for i in range(12000):
        pipe.lpush("bull:rbtest:wait", i)
    pipe.execute()
    result = probe("redis.queue_depth", url=URL, queue="rbtest")
    assert (result.status, result.code, result.metrics["depth"]) == (Status.CRITICAL, "queue_backed_up", 12000)
    for i in range(5):
        client.xadd("rbtest:stream", {"n": i})
    result = probe("redis.queue_depth", url=URL, queue="rbtest", key_format="{queue}:stream")
    assert (result.status, result.metrics["depth"], result.details["type"]) == (Status.OK, 5, "stream")
    client.hset("rbtest:hash", "a", 1)
    result = probe("redis.queue_depth", url=URL, queue="rbtest", key_format="{queue}:hash")
    assert (result.status, result.code) == (Status.UNKNOWN, "check_error")


def test_failed_jobs_with_configurable_keys(probe, client) -> None:
    assert probe("redis.failed_jobs", url=URL, queue="rbtest").status is Status.OK
    client.zadd("bull:rbtest:failed", {"job-1": 1, "job-2": 2, "job-3": 3})
    result = probe("redis.failed_jobs", url=URL, queue="rbtest")
    assert (result.status, result.metrics["failed"]) == (Status.WARNING, 3)
    client.rpush("custom:rbtest:dead", "a", "b")
    result = probe("redis.failed_jobs", url=URL, queue="rbtest", key_format="custom:{queue}:dead", crit=2)
    assert (result.status, result.metrics["failed"]) == (Status.CRITICAL, 2)
