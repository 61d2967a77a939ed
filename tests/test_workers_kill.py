"""A worker killed with SIGKILL: the other workers of the host keep serving."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.workers.fixtures import burst, host_config, key_env, pids, spread_burst
from tests.workers.servers import KINDS, Host

pytestmark = [pytest.mark.timeout(180)]


@pytest.mark.parametrize("kind", KINDS)
def test_survivors_serve_after_a_worker_is_killed(kind, upstream, tmp_path):
    with Host(kind, workers=2, config=host_config(upstream), tmp=tmp_path, env=key_env()) as host:
        before = spread_burst(host, "kill", 16)
        victim = sorted(pids(before))[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim in host.worker_pids():  # until the kernel has taken it away
            assert time.monotonic() < deadline, f"worker {victim} still runs after SIGKILL"
            time.sleep(0.02)
        host.reconnect()
        answers = burst(host, "kill", 30)
        assert [a.status_code for a in answers] == [200] * 30
        assert victim not in pids(answers)
        assert host.process.poll() is None  # the host itself lives on
