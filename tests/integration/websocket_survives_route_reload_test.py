#!/usr/bin/python3
"""A WebSocket on route X survives any number of route updates that do not
touch X: 1,000 writes (PATCH upserts and deletes of other routes, other
routes' upstreams changed, single-route PUT/DELETE, whole-table PUTs that
carry X unchanged) while the socket stays open and echoes after every 100.
Then DELETE /routes/X closes X's WebSocket and only it (a WebSocket on route
Y keeps echoing). Changing X's upstream closes X's WebSocket too, and
during control.route_close_grace the old socket keeps working; a socket
opened on X after the change must not be closed by the old change."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

UPDATES = 1000
OTHERS = 30
CLOSE_WAIT = 15.0   # seconds a closed WebSocket may take to notice


class ReloadBase(h.ControlGatewayTestCase):
    WORKERS = 2

    @classmethod
    def extra_setup(cls):
        cls.peer1 = h.WebSocketPeer()
        cls.peer2 = h.WebSocketPeer()
        cls.origin_b = h.Origin("B")

    @classmethod
    def extra_teardown(cls):
        cls.peer1.stop()
        cls.peer2.stop()
        cls.origin_b.stop()

    def ws(self, host, path):
        return h.WebSocketClient(self.port, host, path, timeout=30)

    def assertEchoes(self, sock, message, context):
        try:
            back = sock.echo(message, timeout=30)
        except h.WebSocketClosed as e:
            self.fail("%s: the WebSocket on %s was closed (%s)%s"
                      % (context, sock.host, e, self.gateway_context()))
        except OSError as e:
            self.fail("%s: the WebSocket on %s failed: %s" % (context, sock.host, e))
        self.assertEqual(back, message, "%s: wrong echo on %s" % (context, sock.host))

    def assertClosedSoon(self, sock, context):
        self.assertTrue(sock.wait_closed(CLOSE_WAIT),
                        "%s: the WebSocket on %s is still open after %.0f s%s"
                        % (context, sock.host, CLOSE_WAIT, self.gateway_context()))


class WebSocketSurvivesReloadTest(ReloadBase):

    def base_routes(self):
        a = self.origin.address
        routes = [h.route("x", "x.test", self.peer1.address, gitspace="gs-x", access="public"),
                  h.route("y", "y.test", self.peer1.address),
                  h.route("ows", "ows.test", self.peer1.address)]
        routes += [h.route("o-%d" % i, "o%d.test" % i, a) for i in range(OTHERS)]
        return routes

    def test_thousand_updates_then_delete(self):
        api = self.api
        a, b = self.origin.address, self.origin_b.address
        api.must(api.put_routes(self.base_routes()))
        v = api.version()
        x = self.ws("x.test", "/x-survivor")
        y = self.ws("y.test", "/y-bystander")
        other = self.ws("ows.test", "/other-route")
        try:
            self.assertEchoes(x, "hello x", "before the updates")
            self.assertEchoes(y, "hello y", "before the updates")
            self.assertEchoes(other, "hello other", "before the updates")
            transient = []     # ids of routes added along the way, oldest first
            upstreams = {"o-%d" % i: a for i in range(OTHERS)}
            accepted_before = api.stats()["control"]["writes_accepted"]
            other_moved_at = UPDATES // 2
            for i in range(UPDATES):
                v += 1
                k = "o-%d" % (i % OTHERS)
                flip = b if upstreams[k] == a else a
                kind = i % 5
                if i == other_moved_at:
                    # Another route with a WebSocket changes upstream: that
                    # socket goes, X and Y stay.
                    resp = api.put("/routes/ows?version=%d" % v,
                                   h.route("ows", "ows.test", self.peer2.address))
                elif kind == 0:
                    upstreams[k] = flip
                    new = "n-%d" % i
                    transient.append(new)
                    resp = api.patch_routes(version=v, upsert=[
                        h.route(k, "o%d.test" % (i % OTHERS), flip),
                        h.route(new, "%s.test" % new, a)])
                elif kind == 1 and transient:
                    gone = transient.pop(0)
                    new = "n-%d" % i
                    transient.append(new)
                    resp = api.patch_routes(version=v, delete=[gone], upsert=[
                        h.route(new, "%s.test" % new, b, path_prefix="/p%d" % i,
                                strip_prefix=True)])
                elif kind == 2:
                    upstreams[k] = flip
                    resp = api.put("/routes/%s?version=%d" % (k, v),
                                   h.route(k, "o%d.test" % (i % OTHERS), flip))
                elif kind == 3 and transient:
                    gone = transient.pop(0)
                    resp = api.delete("/routes/%s?version=%d" % (gone, v))
                elif i % 50 == 4:
                    # The whole table again, X and Y unchanged in it.
                    routes = [r for r in self.base_routes() if r["id"] != "ows"]
                    routes.append(h.route("ows", "ows.test",
                                          self.peer2.address if i > other_moved_at
                                          else self.peer1.address))
                    routes = [dict(r, upstream=upstreams.get(r["id"], r["upstream"]))
                              for r in routes]
                    routes += [h.route(t, "%s.test" % t, a) for t in transient]
                    resp = api.put_routes(routes, version=v)
                else:
                    # X itself upserted unchanged, with another route's change.
                    upstreams[k] = flip
                    resp = api.patch_routes(version=v, upsert=[
                        h.route("x", "x.test", self.peer1.address, gitspace="gs-x",
                                access="public"),
                        h.route(k, "o%d.test" % (i % OTHERS), flip)])
                self.assertEqual(resp.status, 200, "update %d refused: %r" % (i, resp.body[:300]))
                if (i + 1) % 100 == 0:
                    self.assertEchoes(x, "x after %d updates" % (i + 1),
                                      "after %d route updates" % (i + 1))
                    self.assertEchoes(y, "y after %d updates" % (i + 1),
                                      "after %d route updates" % (i + 1))
                if i == other_moved_at + 1:
                    self.assertClosedSoon(other, "after the route ows moved to another upstream")
            self.assertEqual(api.version(), v)
            self.assertEqual(api.stats()["control"]["writes_accepted"], accepted_before + UPDATES)
            # Traffic still flows on the others.
            status, _, _ = h.http_get(self.port, "/headers", "o1.test")
            self.assertEqual(status, 200)

            # Deleting X closes X's socket, and only it.
            api.must(api.delete("/routes/x"), "DELETE /routes/x")
            self.assertClosedSoon(x, "after DELETE /routes/x")
            self.assertEchoes(y, "y after x was deleted", "after DELETE /routes/x")
            with self.assertRaises(AssertionError, msg="a WebSocket to the deleted route x "
                                   "was upgraded"):
                self.ws("x.test", "/x-again").close()
            time.sleep(1)
            self.assertEchoes(y, "y a second later", "a second after DELETE /routes/x")
        finally:
            for sock in (x, y, other):
                sock.close()

    def test_changing_x_upstream_closes_x_websocket(self):
        api = self.api
        api.must(api.put_routes(self.base_routes()))
        x = self.ws("x.test", "/x-before-move")
        y = self.ws("y.test", "/y-bystander-2")
        try:
            self.assertEchoes(x, "x", "before the move")
            self.assertEchoes(y, "y", "before the move")
            peer2_before = self.peer2.connections
            api.must(api.put("/routes/x", h.route("x", "x.test", self.peer2.address,
                                                 gitspace="gs-x", access="public")))
            self.assertClosedSoon(x, "after x's upstream changed")
            self.assertEchoes(y, "y after x moved", "after x's upstream changed")
            with self.ws("x.test", "/x-after-move") as fresh:
                self.assertEchoes(fresh, "fresh", "a new WebSocket on x after the move")
            self.assertEqual(self.peer2.connections, peer2_before + 1,
                             "the new WebSocket on x did not reach the new upstream")
            # A non-upstream change to x does not close its sockets.
            with self.ws("x.test", "/x-kept") as kept:
                api.must(api.put("/routes/x", h.route("x", "x.test", self.peer2.address,
                                                     gitspace="gs-x", access="public",
                                                     tunnel_ports=[22])))
                self.assertFalse(kept.wait_closed(1.0),
                                 "a change to x that kept its upstream closed its WebSocket")
                self.assertEchoes(kept, "kept", "after a change that kept x's upstream")
        finally:
            x.close()
            y.close()


class RouteCloseGraceTest(ReloadBase):
    """control.route_close_grace: the moved route's old WebSocket lives on
    for the grace, then closes; a WebSocket opened on the route after the
    change (to the new upstream) is not part of the old change."""
    CONTROL = {"route_close_grace": "8s"}

    def test_socket_opened_after_the_change_outlives_the_grace(self):
        api = self.api
        api.must(api.put_routes([h.route("x", "x.test", self.peer1.address),
                                 h.route("y", "y.test", self.peer1.address)]))
        old = self.ws("x.test", "/x-old")
        new = None
        try:
            self.assertEchoes(old, "old", "before the move")
            api.must(api.put("/routes/x", h.route("x", "x.test", self.peer2.address)))
            # Within the 8 s grace the old socket still works.
            self.assertEchoes(old, "old during grace", "right after x moved (grace 8 s)")
            new = self.ws("x.test", "/x-new")
            self.assertEchoes(new, "new", "a new WebSocket on x after the move")
            self.assertIn("/x-new", self.peer2.paths, "the new socket did not reach peer2")
            # The grace ends: the old one goes.
            self.assertTrue(old.wait_closed(8 + CLOSE_WAIT),
                            "the WebSocket on x's old upstream outlived the 8 s grace by %.0f s"
                            % CLOSE_WAIT)
            self.assertFalse(new.wait_closed(1.0),
                             "the WebSocket opened on x AFTER its upstream changed (to the new "
                             "upstream) was closed when the old change's grace ended%s"
                             % self.gateway_context())
            self.assertEchoes(new, "new after grace", "after the old change's grace ended")
        finally:
            old.close()
            if new is not None:
                new.close()


if __name__ == "__main__":
    h.main()
