"""Single-flight with the Redis cache under real uvicorn workers: identical concurrent requests
make one upstream call, on one worker and on two (whichever worker each request reaches; that two
separate processes share one call is proven with two servers in tests/test_cache_workers.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.workers.fixtures import chat, host_config, key_env, pids, private_redis  # noqa: F401
from tests.workers.servers import Host

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


@pytest.mark.parametrize("workers", [1, 2])
def test_identical_concurrent_requests_make_one_upstream_call(workers, upstream, private_redis, tmp_path):
    config = host_config(upstream, storage={"cache": f"{private_redis.url}?prefix=flight{workers}:"})
    with Host("uvicorn-fastapi", workers=workers, config=config, tmp=tmp_path, env=key_env()) as host:
        upstream.delay_all = 0.5  # the leader's call is still out when the others arrive
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: chat(host, "spread", "the same question", temperature=0), range(20)))
        assert {a.status_code for a in answers} == {200}
        assert 1 <= len(pids(answers)) <= workers
        assert len(upstream.requests) == 1
