"""Calls the echo server with pynvim's MessagePack-RPC client.

Usage: pynvim_client.py HOST PORT. Prints "ok" and exits 0 when every check
passes; any failure raises.
"""

import sys
import time

import greenlet
from pynvim.msgpack_rpc import tcp_session


class RpcError(Exception):
    def __init__(self, err):
        super().__init__(err)
        self.code, self.message = err[0], err[1]


def expect_error(session, code, method, *args):
    try:
        session.request(method, *args)
    except RpcError as e:
        assert e.code == code, (method, e.code, e.message)
        return e.message
    raise AssertionError(f"{method} should have failed with code {code}")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    s = tcp_session(host, port)
    s.error_wrapper = RpcError

    # Typed calls, under each form of method name.
    for name in ("/echo.Echo/Say", "echo.Echo.Say", "Say"):
        assert s.request(name, {"text": name}) == {"text": name}, name

    # An unknown method: UNIMPLEMENTED.
    msg = expect_error(s, 12, "echo.Echo.Nope", {})
    assert "/echo.Echo/Nope" in msg, msg

    # A handler error: the code and message the handler chose.
    msg = expect_error(s, 9, "echo.Echo.Fail", {"code": 9, "message": "not now"})
    assert msg == "not now", msg

    # A notification runs unanswered; the next request is answered next.
    s.request("echo.Echo.Sleep", {"ms": 0}, async_=True)
    assert s.request("Say", {"text": "after"}) == {"text": "after"}

    # Concurrent calls on one connection: eight 300 ms sleeps, each in a
    # greenlet of its own, finish much sooner than one after another.
    n, ms = 8, 300
    results = []

    def call(i):
        results.append(s.request("echo.Echo.Sleep", {"ms": ms}))
        if len(results) == n:
            s.stop()

    def setup():
        for i in range(n):
            greenlet.greenlet(call).switch(i)

    start = time.monotonic()
    s.run(lambda *a: None, lambda *a: None, setup)
    elapsed = time.monotonic() - start
    assert results == [{}] * n, results
    assert elapsed >= ms / 1000, f"the calls did not sleep: {elapsed:.2f} s"
    assert elapsed < n * ms / 1000 * 0.75, f"calls ran one at a time: {elapsed:.2f} s"

    s.close()
    print("ok")


if __name__ == "__main__":
    main()
