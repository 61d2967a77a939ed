"""The loop thread that synchronous hosts drive the async core through."""

from __future__ import annotations

import asyncio
import threading

import pytest

from asgi_ai_relay.sync import LoopThread, loop_thread


class Chunks:
    def __init__(self, n):
        self.left = n
        self.closed = threading.Event()
        self.loops = set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        self.loops.add(id(asyncio.get_running_loop()))
        if self.left == 0:
            raise StopAsyncIteration
        self.left -= 1
        return b"chunk"

    async def aclose(self):
        self.closed.set()


@pytest.fixture
def runner():
    runner = LoopThread("test-loop")
    yield runner
    runner.close()


def test_one_loop_for_every_caller_thread(runner):
    async def which():
        return id(asyncio.get_running_loop()), threading.current_thread().name

    seen = []
    threads = [threading.Thread(target=lambda: seen.append(runner.run(which()))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(set(seen)) == 1 and seen[0][1] == "test-loop"
    assert loop_thread() is loop_thread()


def test_iterate_runs_to_the_end_and_closes(runner):
    chunks = Chunks(3)
    assert list(runner.iterate(chunks)) == [b"chunk"] * 3
    assert chunks.closed.is_set() and chunks.loops == {id(runner.loop)}


def test_closing_the_generator_early_closes_the_stream(runner):
    chunks = Chunks(10)
    generator = runner.iterate(chunks)
    assert next(generator) == b"chunk"
    generator.close()  # what a WSGI server does when the client goes away
    assert chunks.closed.is_set() and chunks.left == 9


def test_errors_and_timeouts_reach_the_calling_thread(runner):
    async def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        runner.run(fail())
    cancelled = threading.Event()

    async def slow():
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with pytest.raises(TimeoutError):
        runner.run(slow(), timeout=0.05)
    assert cancelled.wait(5)  # the work does not outlive the caller's wait


def test_run_from_the_loop_itself_is_refused(runner):
    async def nested():
        coro = asyncio.sleep(0)
        try:
            runner.run(coro)
        finally:
            coro.close()

    with pytest.raises(RuntimeError, match="its own loop"):
        runner.run(nested())


def test_exit_closers_run_on_the_loop(runner):
    ran = []

    async def closer():
        ran.append(id(asyncio.get_running_loop()))

    loop_id = id(runner.loop)
    runner.on_exit(closer)
    runner.close()
    assert ran == [loop_id]


# -- the client's socket, watched from the loop ------------------------------------------------

import socket  # noqa: E402

from asgi_ai_relay.wsgi import ClientSocket, client_socket  # noqa: E402


async def watch_for_a_while(watch, fd, before=None):
    """Await ``watch()`` for a few loop iterations (the socket's readiness is seen in the first);
    returns (whether it returned, whether ``fd`` is still in the loop's selector)."""
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(watch())
    for _ in range(10):
        await asyncio.sleep(0)
        if before is not None:
            before()
            before = None
    returned, selected = waiter.done(), loop.remove_reader(fd)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    return returned, selected


def test_the_watch_returns_when_the_client_closes(runner):
    server, client = socket.socketpair()
    with server, client:
        watch = ClientSocket(server)
        assert runner.run(watch_for_a_while(watch, server.fileno())) == (False, True)  # open: still watching
        assert not watch.gone()
        assert runner.run(watch_for_a_while(watch, server.fileno(), before=client.close)) == (True, False)
        assert watch.gone()


def test_bytes_the_server_has_not_read_make_the_watch_give_up_without_taking_them(runner):
    server, client = socket.socketpair()
    with server, client:
        client.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: the end of stream, if any, is behind it
        watch = ClientSocket(server)
        assert runner.run(watch_for_a_while(watch, server.fileno())) == (False, False)  # waits, no longer selected
        assert server.recv(100) == b"GET /next HTTP/1.1\r\n"


def test_a_cancelled_wait_leaves_the_selector_and_a_detached_watch_never_watches(runner):
    server, client = socket.socketpair()
    with server, client:
        watch = ClientSocket(server)

        async def wait_briefly():
            waiter = asyncio.ensure_future(watch())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            return asyncio.get_running_loop().remove_reader(server.fileno())

        assert runner.run(wait_briefly()) is False
        runner.run(_on_loop(watch.detach))
        client.close()
        assert runner.run(watch_for_a_while(watch, server.fileno())) == (False, False)


async def _on_loop(function):
    function()


def test_client_socket_finds_the_servers_socket_or_nothing():
    server, client = socket.socketpair()
    with server, client:
        assert isinstance(client_socket({"gunicorn.socket": server}), ClientSocket)
        assert isinstance(client_socket({"werkzeug.socket": server}), ClientSocket)
        assert client_socket({}) is None
        assert client_socket({"gunicorn.socket": "not a socket"}) is None


# -- handing work to the loop -------------------------------------------------------------------

from asgi_ai_relay.wakeup import Wakeup  # noqa: E402


def test_many_threads_handing_work_at_once_each_get_their_own_answer(runner):
    async def echo(value):
        await asyncio.sleep(0)
        return value

    wrong = []

    def caller(n):
        for i in range(200):
            answer = runner.run(echo((n, i)), timeout=30)  # a lost wake-up would time out here
            if answer != (n, i):
                wrong.append(answer)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and wrong == []


def test_wake_ups_made_before_the_loop_looks_merge_into_one_call():
    loop = asyncio.new_event_loop()
    calls = []
    wakeup = Wakeup(loop, lambda: calls.append(loop.time()))
    try:
        for _ in range(3):
            wakeup.wake()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(calls) == 1
        wakeup.wake()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(calls) == 2
    finally:
        wakeup.close(loop)
        loop.close()


def test_a_caller_that_gives_up_before_its_work_starts_leaves_nothing_running(runner):
    started = threading.Event()
    release = threading.Event()
    ran = []

    async def block():  # keeps the loop thread busy without awaiting
        started.set()
        release.wait(5)

    async def never():
        ran.append(1)

    blocker = threading.Thread(target=lambda: runner.run(block()))
    blocker.start()
    assert started.wait(5)
    with pytest.raises(TimeoutError):
        runner.run(never(), timeout=0.05)  # queued behind the busy loop, given up before it starts
    release.set()
    blocker.join(5)
    assert runner.run(asyncio.sleep(0, "after")) == "after" and ran == []


def test_the_work_runs_in_the_callers_context(runner):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")

    async def read():
        return var.get()

    def caller(value, seen):
        var.set(value)  # what a host's tracing instrumentation does in the request thread
        seen.append(runner.run(read()))

    seen = []
    threads = [threading.Thread(target=caller, args=(f"thread {n}", seen)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(seen) == ["thread 0", "thread 1", "thread 2"]
