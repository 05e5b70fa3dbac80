#!/usr/bin/python3
"""Atomic route updates: a host moves from upstream A to upstream B (two
origins that say which they are, in X-Origin-Name) and back, ~200 times,
through PATCH (same id, new upstream), PATCH (delete the holder, upsert a
new id on the same host), PATCH (the holder moves to another host, a new id
takes its place) and PUT of the whole table, while client threads hammer
the host through the gateway on keep-alive and on fresh connections.

Every response must be a 200 from A or B (never a 404, a 5xx or a broken
connection: no request sees half a batch), and a request sent after a write
returned must see that write (the table is published before the 200). A
route on another host, also hammered, is never disturbed.

The first class runs with control.route_close_grace longer than the test,
so that the documented closing of a moved route's in-flight exchanges does
not interfere; the second runs with the default grace (0) and checks that
every failed exchange is one the gateway says it closed on purpose
(connections_closed_by_route_update) and that the other route sees none."""

import bisect
import http.client
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MOVES = 200
MOVER_HOST = "move.test"
STABLE_HOST = "stable.test"
FILLER = 40


class Result:
    __slots__ = ("kind", "host", "t_send", "t_done", "status", "origin", "error")

    def __init__(self, kind, host, t_send, t_done, status, origin, error):
        self.kind, self.host, self.t_send, self.t_done = kind, host, t_send, t_done
        self.status, self.origin, self.error = status, origin, error

    def __repr__(self):
        return "<%s %s sent@%.3f done@%.3f status=%s origin=%s error=%s>" % (
            self.kind, self.host, self.t_send, self.t_done, self.status, self.origin, self.error)


class Hammer:
    """Client threads sending GET /headers to a host through the gateway,
    recording every outcome."""

    def __init__(self, port):
        self.port = port
        self.stop_event = threading.Event()
        self.results = []
        self.lock = threading.Lock()
        self.threads = []

    def record(self, result):
        with self.lock:
            self.results.append(result)

    def snapshot(self, start=0):
        with self.lock:
            return self.results[start:]

    def start(self, kind, host):
        target = self._keepalive if kind == "keepalive" else self._fresh
        t = threading.Thread(target=target, args=(host,), name="%s-%s" % (kind, host),
                             daemon=True)
        self.threads.append(t)
        t.start()

    def _one(self, conn, kind, host, n):
        t_send = time.monotonic()
        try:
            conn.request("GET", "/headers?n=%d" % n, headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            self.record(Result(kind, host, t_send, time.monotonic(), resp.status,
                               resp.getheader("X-Origin-Name"), None))
            return True
        except (OSError, http.client.HTTPException) as e:
            self.record(Result(kind, host, t_send, time.monotonic(), None, None,
                               "%s: %s" % (type(e).__name__, e)))
            return False

    def _keepalive(self, host):
        conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=30)
        n = 0
        while not self.stop_event.is_set():
            n += 1
            if not self._one(conn, "keepalive", host, n):
                conn.close()
                conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=30)
        conn.close()

    def _fresh(self, host):
        n = 0
        while not self.stop_event.is_set():
            n += 1
            conn = http.client.HTTPConnection(h.LOOPBACK, self.port, timeout=30)
            try:
                self._one(conn, "fresh", host, n)
            finally:
                conn.close()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(60)


class AtomicityBase(h.ControlGatewayTestCase):
    WORKERS = 2

    @classmethod
    def extra_setup(cls):
        cls.origin_a = h.Origin("A")
        cls.origin_b = h.Origin("B")

    @classmethod
    def extra_teardown(cls):
        cls.origin_a.stop()
        cls.origin_b.stop()

    def addr(self, name):
        return (self.origin_a if name == "A" else self.origin_b).address

    def filler(self, generation):
        return [h.route("fill-%d" % i, "fill%d.test" % i,
                        self.addr("A" if (i + generation) % 2 else "B"))
                for i in range(FILLER)]

    def run_moves(self, forms):
        try:
            return self._run_moves(forms)
        except OSError as e:
            self.fail("the control API became unreachable during the moves (%s: %s); gateway "
                      "exit code %s%s" % (type(e).__name__, e, self.gateway.proc.poll(),
                                          self.gateway_context()))

    def _run_moves(self, forms):
        api = self.api
        holder = "mv-0"
        stable = h.route("stable", STABLE_HOST, self.addr("A"))
        api.must(api.put_routes([stable, h.route(holder, MOVER_HOST, self.addr("A"))]
                                + self.filler(0)))
        for host in (MOVER_HOST, STABLE_HOST):
            status, headers, body = h.http_get(self.port, "/headers", host)
            self.assertEqual(status, 200, "%s before the test: %r" % (host, body[:200]))

        hammer = Hammer(self.port)
        for kind in ("keepalive", "keepalive", "fresh", "fresh"):
            hammer.start(kind, MOVER_HOST)
        hammer.start("keepalive", STABLE_HOST)
        writes = []   # (t_start, t_done, target, form)
        stalls = []
        try:
            # Let the clients get going on A.
            if not h.wait_until(lambda: len(hammer.snapshot()) >= 20, 30):
                self.fail("the client threads made no progress: %r" % hammer.snapshot()[:5])
            seen = 0
            for i in range(MOVES):
                target = "B" if i % 2 == 0 else "A"
                form = forms[i % len(forms)]
                v = api.version() + 1
                mover = h.route(holder, MOVER_HOST, self.addr(target))
                t_start = time.monotonic()
                if form == "patch-same-id":
                    resp = api.patch_routes(version=v, upsert=[mover] + self.filler(i)[:5])
                elif form == "patch-replace-id":
                    new = "mv-%d" % (i + 1)
                    resp = api.patch_routes(version=v, delete=[holder],
                                            upsert=[h.route(new, MOVER_HOST, self.addr(target))])
                    holder = new
                elif form == "patch-holder-moves-away":
                    new = "mv-%d" % (i + 1)
                    # The holder is listed first: it leaves for a parking host,
                    # the new id takes the host in the same batch.
                    resp = api.patch_routes(version=v, upsert=[
                        h.route(holder, "parked-%d.test" % i, self.addr("A")),
                        h.route(new, MOVER_HOST, self.addr(target))],
                        delete=[r for r in self.parked(api)])
                    holder = new
                elif form == "put":
                    resp = api.put_routes([stable, mover] + self.filler(i), version=v)
                else:
                    raise AssertionError(form)
                t_done = time.monotonic()
                self.assertEqual(resp.status, 200, "move %d (%s to %s) refused: %r"
                                 % (i, form, target, resp.body[:300]))
                writes.append((t_start, t_done, target, form))
                # Wait for a request sent after the write to come back.
                deadline = time.monotonic() + 30

                def observed():
                    nonlocal seen
                    new_results = hammer.snapshot(seen)
                    seen += len(new_results)
                    return any(r.host == MOVER_HOST and r.t_send > t_done for r in new_results)
                got = False
                while time.monotonic() < deadline:
                    if observed():
                        got = True
                        break
                    time.sleep(0.002)
                if not got:
                    stalls.append(i)
                    if len(stalls) > 3:
                        break
        finally:
            hammer.stop()
        return hammer.snapshot(), writes, stalls

    @staticmethod
    def parked(api):
        return [r["id"] for r in api.routes()["routes"] if r["host"].startswith("parked-")]

    def analyse(self, results, writes):
        mover = [r for r in results if r.host == MOVER_HOST]
        stable = [r for r in results if r.host == STABLE_HOST]
        ok = [r for r in mover if r.status == 200 and r.origin in ("A", "B")]
        wrong = [r for r in mover if r.status is not None and
                 not (r.status == 200 and r.origin in ("A", "B"))]
        broken = [r for r in mover if r.status is None]
        stable_bad = [r for r in stable if not (r.status == 200 and r.origin == "A")]
        # Requests wholly between write i's 200 and write i+1's start must
        # see write i's target (before the first move: A).
        done_times = [w[1] for w in writes]
        stale = []
        for r in ok:
            i = bisect.bisect_left(done_times, r.t_send) - 1
            next_start = writes[i + 1][0] if i + 1 < len(writes) else float("inf")
            if r.t_done >= next_start:
                continue  # overlaps the next write: either answer is fine
            expected = writes[i][2] if i >= 0 else "A"
            if r.origin != expected:
                stale.append((r, i, expected))
        return mover, ok, wrong, broken, stable, stable_bad, stale

    def describe(self, items, limit=8):
        return "\n  ".join(repr(x) for x in items[:limit]) + \
            ("\n  ... %d more" % (len(items) - limit) if len(items) > limit else "")


class AtomicityTest(AtomicityBase):
    """route_close_grace is longer than the test: a move closes nothing
    while the clients run, so not a single request may fail."""
    CONTROL = {"route_close_grace": "1h"}

    def check(self, forms):
        results, writes, stalls = self.run_moves(forms)
        self.assertFalse(stalls, "after moves %s no request sent after the write completed "
                         "within 30 s (gateway stuck?)%s" % (stalls, self.gateway_context()))
        self.assertEqual(len(writes), MOVES)
        mover, ok, wrong, broken, stable, stable_bad, stale = self.analyse(results, writes)
        print("\n  %s: %d moves, %d requests to %s (%d from A, %d from B), %d to %s"
              % (self.id().rsplit(".", 1)[-1], len(writes), len(mover), MOVER_HOST,
                 sum(1 for r in ok if r.origin == "A"), sum(1 for r in ok if r.origin == "B"),
                 len(stable), STABLE_HOST), file=sys.stderr)
        self.assertFalse(wrong, "%d of %d responses during the moves were not a 200 from A or "
                         "B (half a batch seen?):\n  %s" % (len(wrong), len(mover),
                                                          self.describe(wrong)))
        self.assertFalse(broken, "%d of %d requests during the moves failed without a response:"
                         "\n  %s%s" % (len(broken), len(mover), self.describe(broken),
                                       self.gateway_context()))
        self.assertFalse(stale, "%d requests sent after a write had returned 200 were served "
                         "by the previous upstream:\n  %s" % (len(stale), self.describe(stale)))
        self.assertFalse(stable_bad, "%d of %d requests to the untouched route %s failed or "
                         "went elsewhere:\n  %s" % (len(stable_bad), len(stable), STABLE_HOST,
                                                    self.describe(stable_bad)))
        self.assertGreaterEqual(len(ok), MOVES, "too few requests to say anything")
        self.assertTrue(any(r.origin == "A" for r in ok) and any(r.origin == "B" for r in ok))
        self.assertGreater(len(stable), 10)
        stats = self.api.stats()
        self.assertEqual(stats["route_table"]["version"], self.api.version())

    def test_moves_by_patch_and_put(self):
        self.check(["patch-same-id", "put", "patch-replace-id", "patch-holder-moves-away"])


class AtomicityDefaultGraceTest(AtomicityBase):
    """Default route_close_grace (0): a moved route's in-flight exchanges
    are closed on purpose. Responses that do come must still be 200 from A
    or B, every broken exchange must be one the gateway counts as closed by
    a route update, and the other route sees no failure at all."""

    def test_moves_with_default_grace(self):
        before = self.api.stats()["totals"]["connections_closed_by_route_update"]
        results, writes, stalls = self.run_moves(["patch-same-id", "put", "patch-replace-id"])
        self.assertFalse(stalls, "after moves %s no request sent after the write completed "
                         "within 30 s%s" % (stalls, self.gateway_context()))
        mover, ok, wrong, broken, stable, stable_bad, stale = self.analyse(results, writes)
        closed = self.api.stats()["totals"]["connections_closed_by_route_update"] - before
        print("\n  default grace: %d moves, %d requests, %d broken, %d connections closed by "
              "route updates" % (len(writes), len(mover), len(broken), closed), file=sys.stderr)
        self.assertFalse(wrong, "%d responses were not a 200 from A or B:\n  %s"
                         % (len(wrong), self.describe(wrong)))
        self.assertLessEqual(len(broken), closed,
                             "%d requests broke but the gateway closed only %d connections for "
                             "route updates:\n  %s" % (len(broken), closed, self.describe(broken)))
        self.assertFalse(stale, "%d requests sent after a write had returned 200 were served "
                         "by the previous upstream:\n  %s" % (len(stale), self.describe(stale)))
        self.assertFalse(stable_bad, "%d requests to the untouched route %s failed:\n  %s"
                         % (len(stable_bad), STABLE_HOST, self.describe(stable_bad)))
        self.assertGreaterEqual(len(ok), MOVES // 2)


class RetireInFlightTest(h.ControlGatewayTestCase):
    """Deleting or moving a route ends the exchanges in flight on it (grace
    0) whatever state they are in, and the gateway carries on: here the
    upstream connect is still pending, or the response is on its way."""

    @classmethod
    def extra_setup(cls):
        cls.stuck = h.StuckConnectUpstream()
        cls.origin2 = h.Origin("origin2")

    @classmethod
    def extra_teardown(cls):
        cls.stuck.stop()
        cls.origin2.stop()

    @classmethod
    def make_config(cls):
        config = super().make_config()
        config["limits"] = {"upstream_connect_timeout": "3s"}
        return config

    def gitspace(self, name):
        for entry in self.api.get("/activity").json()["gitspaces"]:
            if entry["gitspace"] == name:
                return entry
        return None

    def check_pending_connect(self, change):
        a = self.origin.address
        self.api.must(self.api.put_routes([
            h.route("stuck-r", "stuck.test", self.stuck.address, gitspace="gs-stuck",
                    access="public"),
            h.route("ok-r", "ok.test", a)]))
        with h.RawConn(self.port) as c:
            c.request("GET", "/pending", host="stuck.test")
            pending = h.wait_until(
                lambda: (self.gitspace("gs-stuck") or {}).get("open_connections") == 1, 10)
            self.assertTrue(pending, "the request to the stuck upstream never showed up as open: "
                            "%r" % self.gitspace("gs-stuck"))
            self.api.must(change(), "route change while the upstream connect is pending")
            data, closed, _ = h.read_until_close(c.sock, timeout=15)
            self.assertTrue(closed, "the exchange on the retired route was not ended; got %r"
                            % data[:200])
        # Well past the upstream connect timeout (3 s) of the abandoned
        # connect, whether it times out or completes late.
        died = h.wait_until(lambda: not self.gateway.alive(), 8, interval=0.2)
        self.assertFalse(died, "the gateway died after a route with a pending upstream "
                         "connect was retired (exit %s)%s"
                         % (self.gateway.proc.poll(), self.gateway_context()))
        status, _, body = h.http_get(self.port, "/headers", "ok.test")
        self.assertEqual(status, 200, "another route after the retirement: %r" % body[:200])

    def test_delete_route_while_its_upstream_connect_is_pending(self):
        self.check_pending_connect(lambda: self.api.delete("/routes/stuck-r"))

    def test_move_route_while_its_upstream_connect_is_pending(self):
        self.check_pending_connect(lambda: self.api.put(
            "/routes/stuck-r", h.route("stuck-r", "stuck.test", self.origin2.address,
                                       gitspace="gs-stuck", access="public")))

    def test_move_route_while_the_response_is_in_flight(self):
        a = self.origin.address
        self.api.must(self.api.put_routes([h.route("slow-r", "slow.test", a),
                                           h.route("ok-r", "ok.test", a)]))
        with h.RawConn(self.port) as c, h.RawConn(self.port) as other:
            c.request("GET", "/slow/20000", host="slow.test")
            other.request("GET", "/slow/3000", host="ok.test")
            reached = h.wait_until(lambda: "/slow/20000" in self.origin.paths, 15)
            self.assertTrue(reached, "the slow request never reached the origin")
            h.wait_until(lambda: "/slow/3000" in self.origin.paths, 15)
            self.api.must(self.api.put("/routes/slow-r", h.route("slow-r", "slow.test",
                                                                 self.origin2.address)))
            data, closed, _ = h.read_until_close(c.sock, timeout=15)
            self.assertTrue(closed, "the in-flight exchange on the moved route was not ended")
            self.assertNotIn(b"slept 20000", data, "the moved route's old exchange completed")
            resp = other.response(timeout=30)
            self.assertEqual((resp.status, resp.body), (200, b"slept 3000"),
                             "the exchange on the other route was disturbed: %r" % resp)
        self.assertTrue(self.gateway.alive())
        status, headers, _ = h.http_get(self.port, "/headers", "slow.test")
        self.assertEqual((status, dict(headers).get("X-Origin-Name")), (200, "origin2"))


if __name__ == "__main__":
    h.main()
