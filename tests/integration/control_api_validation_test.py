#!/usr/bin/python3
"""Control API validation: every refused write answers 400 (or 404, 405,
409, 413) with a JSON error naming the field, and leaves the route table
exactly as it was (GET /routes before == after, traffic still served).
Also: the control socket is 0600 (even under umask 0), start is refused when
the socket's folder is world-writable and not sticky, and the TCP control
listener wants `Authorization: Bearer <token>` (401 without it or with a
wrong one)."""

import json
import os
import socket
import stat
import sys
import tempfile
import shutil
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NO_FIELD = object()   # the error must not name a field (or name "")


def short(body, limit=300):
    text = body if isinstance(body, (bytes, str)) else json.dumps(body)
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return text if len(text) <= limit else text[:limit] + "...[%d more]" % (len(text) - limit)


class RefusalAssertions:
    """Mixin: assertRefused() checks status, the JSON error and its field,
    that the table did not change and that refusals are counted."""

    def table(self):
        return self.api.routes()

    def refused_count(self):
        return self.api.stats()["control"]["writes_refused"]

    def assertRefused(self, method, path, body, status, field, counted=True,
                      error_contains=None):
        before = self.table()
        refused_before = self.refused_count()
        resp = self.api.request(method, path, body)
        what = "%s %s %s" % (method, path, short(body) if body is not None else "")
        self.assertEqual(resp.status, status, "%s: expected %d, got %d: %r"
                         % (what, status, resp.status, resp.body[:400]))
        ctype = (resp.header("Content-Type") or "").lower()
        self.assertTrue(ctype.startswith("application/json"),
                        "%s: error Content-Type %r is not JSON" % (what, ctype))
        try:
            err = resp.json()
        except ValueError:
            self.fail("%s: error body is not JSON: %r" % (what, resp.body[:300]))
        self.assertIsInstance(err, dict, "%s: error body %r" % (what, err))
        self.assertIsInstance(err.get("error"), str, "%s: no \"error\" string in %r" % (what, err))
        self.assertTrue(err["error"].strip(), "%s: empty error message" % what)
        if field is NO_FIELD:
            self.assertIn(err.get("field", ""), ("",), "%s: unexpected field in %r" % (what, err))
        elif field is not None:
            self.assertEqual(err.get("field"), field,
                             "%s: the error names the wrong field: %r" % (what, err))
        if error_contains:
            self.assertIn(error_contains.lower(), err["error"].lower(),
                          "%s: error message %r" % (what, err))
        after = self.table()
        self.assertEqual(after, before, "%s: the route table changed after a refused write "
                         "(%s)" % (what, err))
        if counted:
            self.assertEqual(self.refused_count(), refused_before + 1,
                             "%s: control.writes_refused did not go up by one" % what)
        return err


# --------------------------------------------------------------------------
# The main validation class: one gateway, table at a known base
# --------------------------------------------------------------------------

class ControlApiValidationTest(RefusalAssertions, h.ControlGatewayTestCase):

    @classmethod
    def base_routes(cls):
        a = cls.origin.address
        return [
            h.route("base-a", "a.test", a),
            h.route("base-b", "b.test", a, path_prefix="/p"),
            h.route("base-c", "c.test", a, gitspace="gs-c", access="public"),
            h.route("base-w", "*.w.test", a),
        ]

    @classmethod
    def extra_setup(cls):
        cls.origin2 = h.Origin("origin2")

    @classmethod
    def extra_teardown(cls):
        cls.origin2.stop()

    def setUp(self):
        super().setUp()
        if self.api.version() == 0:
            # An earlier test killed the gateway: start from the base table.
            self.api.must(self.api.put_routes(self.base_routes(), version=1))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        start = cls.api.routes()
        if start != {"version": 0, "routes": []}:
            cls._teardown_resources()
            raise AssertionError("a fresh gateway without config routes should be at "
                                 "version 0 with no routes, got %r" % start)
        resp = cls.api.put_routes(cls.base_routes(), version=1)
        if resp.status != 200:
            cls._teardown_resources()
            raise AssertionError("PUT of the base table refused: %r" % resp)

    def reset(self):
        """Back to the base table (a new version)."""
        self.api.must(self.api.put_routes(self.base_routes()), "reset PUT")

    def next_version(self):
        return self.api.version() + 1

    def good(self, n, prefix="n"):
        return [h.route("%s-%d" % (prefix, i), "%s%d.test" % (prefix, i), self.origin.address)
                for i in range(n)]

    def assertServed(self):
        status, _, body = h.http_get(self.port, "/headers", "a.test")
        self.assertEqual(status, 200, "a.test no longer served after refusals: %r" % body[:200])

    # -- the body ----------------------------------------------------------

    def test_invalid_json(self):
        v = self.next_version()
        for body in [b'{"version": %d, "routes": [' % v,
                     b'{"version": %d, "routes": []} trailing' % v,
                     b'{"version": %d, "routes": [],}' % v,
                     b"",
                     b"{'version': 1}",
                     b'{"version": NaN, "routes": []}']:
            with self.subTest(body=body):
                err = self.assertRefused("PUT", "/routes", body, 400, None, counted=False)
                self.assertIn("json", err["error"].lower(),
                              "the error should say the JSON is invalid: %r" % err)
        with self.subTest(method="PATCH"):
            self.assertRefused("PATCH", "/routes", b'{"version": %d, "upsert": [}' % v, 400,
                               None, counted=False)
        with self.subTest(method="PUT /routes/base-a"):
            self.assertRefused("PUT", "/routes/base-a", b'{"id": "base-a", ', 400, None,
                               counted=False)
        self.assertServed()

    def test_body_not_an_object(self):
        for value in [[1, 2], "a string", 5, None, True]:
            body = json.dumps(value).encode()
            with self.subTest(body=body):
                self.assertRefused("PUT", "/routes", body, 400, NO_FIELD)
                self.assertRefused("PATCH", "/routes", body, 400, NO_FIELD)

    def test_unknown_top_level_field(self):
        v = self.next_version()
        self.assertRefused("PUT", "/routes", {"version": v, "routes": [], "extra": 1},
                           400, "extra", error_contains="unknown")
        self.assertRefused("PATCH", "/routes", {"version": v, "upserts": []}, 400, "upserts")
        self.assertRefused("PATCH", "/routes", {"version": v, "routes": []}, 400, "routes")

    def test_version_missing_or_not_a_positive_whole_number(self):
        routes = self.good(1)
        self.assertRefused("PUT", "/routes", {"routes": routes}, 400, "version")
        self.assertRefused("PATCH", "/routes", {"upsert": routes}, 400, "version")
        for version in [0, -1, "%d" % self.next_version(), 1.5, True, None, [2], {"n": 2}]:
            with self.subTest(version=version):
                self.assertRefused("PUT", "/routes", {"version": version, "routes": routes},
                                   400, "version")
                self.assertRefused("PATCH", "/routes", {"version": version, "upsert": routes},
                                   400, "version")
        for query in ["version=abc", "version=0", "version=-3", "version=1x"]:
            with self.subTest(query=query):
                self.assertRefused("PUT", "/routes/base-a?" + query,
                                   h.route("base-a", "a.test", self.origin.address),
                                   400, "version", counted=False)
                self.assertRefused("DELETE", "/routes/base-a?" + query, None, 400, "version",
                                   counted=False)

    def test_routes_missing_or_not_a_list(self):
        v = self.next_version()
        self.assertRefused("PUT", "/routes", {"version": v}, 400, "routes")
        for routes in [{}, "x", 5, None, {"id": "n"}]:
            with self.subTest(routes=routes):
                self.assertRefused("PUT", "/routes", {"version": v, "routes": routes},
                                   400, "routes")
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": {}}, 400, "upsert")
        self.assertRefused("PATCH", "/routes", {"version": v, "delete": "base-a"}, 400, "delete")
        self.assertRefused("PATCH", "/routes", {"version": v, "delete": ["base-a", 7]},
                           400, "delete[1]")

    # -- one bad route among good ones: routes[3].<field> --------------------

    def bad_route_cases(self):
        a = self.origin.address

        def r(**changes):
            base = {"id": "bad", "host": "bad.test", "upstream": a}
            for k, v in changes.items():
                if v is KeyError:
                    base.pop(k, None)
                else:
                    base[k] = v
            return base
        return [
            ("unknown field", r(colour="red"), "colour"),
            ("unknown field (typo)", r(upstreams=a), "upstreams"),
            ("id upper case", r(id="Bad-Id"), "id"),
            ("id too long", r(id="a" * 129), "id"),
            ("id with slash", r(id="a/b"), "id"),
            ("id with space", r(id="a b"), "id"),
            ("id with colon", r(id="a:b"), "id"),
            ("id non-ascii", r(id="r\u00e9"), "id"),
            ("id empty", r(id=""), "id"),
            ("id missing", r(id=KeyError), "id"),
            ("id a number", r(id=5), "id"),
            ("host upper case", r(host="Bad.test"), "host"),
            ("host empty label", r(host="a..test"), "host"),
            ("host leading dash", r(host="-a.test"), "host"),
            ("host with space", r(host="a b.test"), "host"),
            ("host with port", r(host="a.test:80"), "host"),
            ("host empty", r(host=""), "host"),
            ("host missing", r(host=KeyError), "host"),
            ("host double wildcard", r(host="*.*.test"), "host"),
            ("host inner wildcard", r(host="a.*.test"), "host"),
            ("host bare star", r(host="*"), "host"),
            ("host label too long", r(host="x" * 64 + ".test"), "host"),
            ("upstream no port", r(upstream="127.0.0.1"), "upstream"),
            ("upstream port 0", r(upstream="127.0.0.1:0"), "upstream"),
            ("upstream port too big", r(upstream="127.0.0.1:65536"), "upstream"),
            ("upstream port not a number", r(upstream="127.0.0.1:http"), "upstream"),
            ("upstream no host", r(upstream=":8080"), "upstream"),
            ("upstream ipv6 without brackets", r(upstream="::1:80"), "upstream"),
            ("upstream ipv6 no colon", r(upstream="[::1]80"), "upstream"),
            ("upstream relative unix path", r(upstream="unix:run/ide.sock"), "upstream"),
            ("upstream empty unix path", r(upstream="unix:"), "upstream"),
            ("upstream unix path too long", r(upstream="unix:/" + "x" * 120), "upstream"),
            ("upstream bad hostname", r(upstream="bad_host!:80"), "upstream"),
            ("upstream empty", r(upstream=""), "upstream"),
            ("upstream missing", r(upstream=KeyError), "upstream"),
            ("upstream a number", r(upstream=8080), "upstream"),
            ("path_prefix without slash", r(path_prefix="noslash"), "path_prefix"),
            ("path_prefix with query", r(path_prefix="/a?b"), "path_prefix"),
            ("path_prefix with fragment", r(path_prefix="/a#b"), "path_prefix"),
            ("path_prefix with space", r(path_prefix="/a b"), "path_prefix"),
            ("path_prefix empty", r(path_prefix=""), "path_prefix"),
            ("path_prefix too long", r(path_prefix="/" + "x" * 1100), "path_prefix"),
            ("path_prefix a number", r(path_prefix=5), "path_prefix"),
            ("strip_prefix a string", r(strip_prefix="yes"), "strip_prefix"),
            ("gitspace without access (owner) and no owner", r(gitspace="gs-x"), "access"),
            ("access owner without owner", r(access="owner", gitspace="gs-x"), "access"),
            ("access owner without gitspace", r(access="owner", owner="user-1"), "access"),
            ("access agent without gitspace", r(access="agent"), "access"),
            ("access unknown", r(access="everyone"), "access"),
            ("access a bool", r(access=True), "access"),
            ("gitspace bad characters", r(gitspace="gs x", access="public"), "gitspace"),
            ("owner bad characters", r(owner="u/1", access="public"), "owner"),
            ("protocol h2c with upstream_tls", r(protocol="h2c", upstream_tls=True),
             "upstream_tls"),
            ("protocol unknown", r(protocol="http2"), "protocol"),
            ("upstream_tls_server_name without upstream_tls",
             r(upstream_tls_server_name="x.test"), "upstream_tls"),
            ("upstream_tls_ca_file not absolute",
             r(upstream_tls=True, upstream_tls_ca_file="ca.pem"), "upstream_tls_ca_file"),
            ("upstream_tls a string", r(upstream_tls="no"), "upstream_tls"),
            ("tunnel_ports zero", r(tunnel_ports=[0]), "tunnel_ports[0]"),
            ("tunnel_ports too big", r(tunnel_ports=[22, 70000]), "tunnel_ports[1]"),
            ("tunnel_ports not a list", r(tunnel_ports="22"), "tunnel_ports"),
        ]

    def test_bad_route_in_put_names_routes_index_field(self):
        v = self.next_version()
        for name, bad, suffix in self.bad_route_cases():
            with self.subTest(case=name):
                body = {"version": v, "routes": self.good(3) + [bad]}
                self.assertRefused("PUT", "/routes", body, 400, "routes[3].%s" % suffix)
        with self.subTest(case="route not an object"):
            self.assertRefused("PUT", "/routes", {"version": v, "routes": self.good(3) + ["x"]},
                               400, "routes[3]")
        self.assertServed()

    def test_bad_route_in_patch_names_upsert_index_field(self):
        self.reset()
        v = self.next_version()
        for name, bad, suffix in self.bad_route_cases():
            with self.subTest(case=name):
                body = {"version": v, "upsert": self.good(1) + [bad], "delete": ["base-b"]}
                self.assertRefused("PATCH", "/routes", body, 400, "upsert[1].%s" % suffix)

    def test_bad_route_in_put_one_names_route_field(self):
        for name, bad, suffix in self.bad_route_cases():
            if suffix == "id":
                continue  # the id is also in the path: covered below
            with self.subTest(case=name):
                self.assertRefused("PUT", "/routes/bad", bad, 400, "route.%s" % suffix)

    def test_valid_edge_values_are_accepted(self):
        """The other side of the boundaries above: these are valid."""
        self.reset()
        a = self.origin.address
        routes = self.base_routes() + [
            h.route("x" * 128, "edge1.test", a),
            h.route("a.b_c-9", "edge2.test", a),
            h.route("edge3", "under_score.test", a),
            h.route("edge4", "edge4.test", "[::1]:8080"),
            h.route("edge5", "edge5.test", "unix:/run/x.sock"),
            h.route("edge6", "edge6.test", "localhost:65535", tunnel_ports=[1, 65535]),
            h.route("edge7", "edge7.test", a, gitspace="gs-7", owner="user@x", access="owner"),
            h.route("edge8", "edge8.test", a, gitspace="gs-8", access="agent"),
            h.route("edge9", "edge9.test", a, access="authenticated"),
            h.route("edge10", "a.test", a, path_prefix="/" + "x" * 1000),
        ]
        resp = self.api.put_routes(routes)
        self.assertEqual(resp.status, 200, "valid edge values refused: %r" % resp.body)
        got = {r["id"] for r in self.api.routes()["routes"]}
        self.assertEqual(got, {r["id"] for r in routes})
        self.reset()

    # -- duplicates ----------------------------------------------------------

    def test_duplicate_ids_in_put(self):
        v = self.next_version()
        routes = self.good(3)
        dup = dict(routes[0], host="other.test")
        self.assertRefused("PUT", "/routes", {"version": v, "routes": routes + [dup]},
                           400, "routes[3].id")

    def test_duplicate_host_and_prefix_in_put(self):
        v = self.next_version()
        a = self.origin.address
        routes = self.good(2) + [h.route("p1", "same.test", a, path_prefix="/x"),
                                 h.route("p2", "same.test", a, path_prefix="/y"),
                                 h.route("p3", "same.test", a, path_prefix="/x")]
        self.assertRefused("PUT", "/routes", {"version": v, "routes": routes},
                           400, "routes[4].path_prefix")
        wild = self.good(1) + [h.route("w1", "*.dup.test", a), h.route("w2", "*.dup.test", a)]
        self.assertRefused("PUT", "/routes", {"version": v, "routes": wild},
                           400, "routes[2].path_prefix")
        default_prefix = [{"id": "d1", "host": "d.test", "upstream": a},
                          h.route("d2", "d.test", a, path_prefix="/")]
        self.assertRefused("PUT", "/routes", {"version": v, "routes": default_prefix},
                           400, "routes[1].path_prefix")

    # -- PATCH batch rules ---------------------------------------------------

    def test_patch_delete_unknown_id(self):
        self.reset()
        v = self.next_version()
        self.assertRefused("PATCH", "/routes", {"version": v, "delete": ["nope"]}, 400, "delete[0]")
        # The first delete is fine: it must not happen either.
        self.assertRefused("PATCH", "/routes", {"version": v, "delete": ["base-a", "nope"]},
                           400, "delete[1]")
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": self.good(2),
                                                "delete": ["base-b", "Nope"]},
                           400, "delete[1]")
        self.assertServed()

    def test_patch_delete_same_id_twice(self):
        self.reset()
        v = self.next_version()
        self.assertRefused("PATCH", "/routes", {"version": v, "delete": ["base-a", "base-b", "base-a"]},
                           400, "delete[2]")

    def test_patch_delete_and_upsert_same_id(self):
        self.reset()
        v = self.next_version()
        moved = h.route("base-b", "moved.test", self.origin.address)
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [moved],
                                                "delete": ["base-b"]},
                           400, "delete[0]")

    def test_patch_upsert_same_id_twice(self):
        self.reset()
        v = self.next_version()
        a = self.origin.address
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("twice", "t1.test", a), h.route("twice", "t2.test", a)]},
            400, "upsert[1].id")

    def test_patch_upserts_clash_with_each_other(self):
        self.reset()
        v = self.next_version()
        a = self.origin.address
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("c1", "clash.test", a, path_prefix="/q"),
            h.route("c2", "other.test", a),
            h.route("c3", "clash.test", a, path_prefix="/q")]},
            400, "upsert[2].path_prefix")

    def test_patch_upsert_clashes_with_existing_route(self):
        self.reset()
        v = self.next_version()
        a = self.origin.address
        # A new id on base-a's host and prefix.
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("fresh", "fresh.test", a),
            h.route("thief", "a.test", a)]},
            400, "upsert[1].path_prefix")
        # The holder is in the batch but keeps its host and prefix.
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("thief", "b.test", a, path_prefix="/p"),
            h.route("base-b", "b.test", a, path_prefix="/p", strip_prefix=True)]},
            400, "upsert[1].path_prefix")
        # The holder is in the batch and keeps its place on another route's host.
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("base-b", "b.test", a, path_prefix="/p2"),
            h.route("thief", "b.test", a, path_prefix="/p2")]},
            400, "upsert[1].path_prefix")
        # Wildcard routes clash the same way.
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": [
            h.route("wthief", "*.w.test", a)]}, 400, "upsert[0].path_prefix")
        # And through PUT /routes/{id}.
        self.assertRefused("PUT", "/routes/thief", h.route("thief", "a.test", a),
                           400, "route.path_prefix")

    def served_by(self, host):
        status, headers, body = h.http_get(self.port, "/headers", host)
        name = dict((k.lower(), v) for k, v in headers).get("x-origin-name")
        return status, name, body

    def assertServedBy(self, host, origin_name, context):
        status, name, body = self.served_by(host)
        self.assertEqual((status, name), (200, origin_name),
                         "%s: %s should be served by %s; got %d from %s: %r\nGET /routes: %s"
                         % (context, host, origin_name, status, name, body[:200],
                            json.dumps(self.api.routes())))

    def test_patch_no_clash_when_the_holder_moves_away_listed_after(self):
        """upsert [newcomer takes a.test /, base-a (the holder) moves to a2.test]"""
        self.reset()
        v = self.next_version()
        resp = self.api.patch_routes(version=v, upsert=[
            h.route("newcomer", "a.test", self.origin2.address),
            h.route("base-a", "a2.test", self.origin.address)])
        self.assertEqual(resp.status, 200, "the holder moved away in the same batch, yet: %r"
                         % resp.body)
        table = {r["id"]: r for r in self.api.routes()["routes"]}
        self.assertEqual(table["newcomer"]["host"], "a.test")
        self.assertEqual(table["base-a"]["host"], "a2.test")
        self.assertEqual(self.api.version(), v)
        context = "after PATCH upsert [newcomer -> a.test, base-a -> a2.test]"
        self.assertServedBy("a2.test", "origin", context)
        self.assertServedBy("a.test", "origin2", context)
        self.reset()

    def test_patch_no_clash_when_the_holder_moves_away_listed_first(self):
        """upsert [base-a (the holder) moves to a2.test, newcomer takes a.test /]"""
        self.reset()
        resp = self.api.patch_routes(upsert=[
            h.route("base-a", "a2.test", self.origin.address),
            h.route("newcomer", "a.test", self.origin2.address)])
        self.assertEqual(resp.status, 200, "the holder moved away in the same batch, yet: %r"
                         % resp.body)
        context = "after PATCH upsert [base-a -> a2.test, newcomer -> a.test]"
        self.assertServedBy("a2.test", "origin", context)
        self.assertServedBy("a.test", "origin2", context)
        self.reset()

    def test_patch_no_clash_when_the_holder_is_deleted_in_the_same_batch(self):
        self.reset()
        resp = self.api.patch_routes(upsert=[h.route("heir", "a.test", self.origin2.address)],
                                     delete=["base-a"])
        self.assertEqual(resp.status, 200, "holder deleted in the batch, yet: %r" % resp.body)
        self.assertServedBy("a.test", "origin2", "after PATCH delete base-a, upsert heir -> a.test")
        self.reset()

    def test_patch_two_routes_swap_hosts(self):
        self.reset()
        a, b = self.origin.address, self.origin2.address
        self.api.must(self.api.patch_routes(upsert=[h.route("s1", "s1.test", a),
                                                    h.route("s2", "s2.test", b)]))
        self.assertServedBy("s1.test", "origin", "before the swap")
        self.assertServedBy("s2.test", "origin2", "before the swap")
        resp = self.api.patch_routes(upsert=[h.route("s1", "s2.test", a),
                                             h.route("s2", "s1.test", b)])
        self.assertEqual(resp.status, 200, "a swap of hosts was refused: %r" % resp.body)
        table = {r["id"]: r["host"] for r in self.api.routes()["routes"]}
        self.assertEqual((table["s1"], table["s2"]), ("s2.test", "s1.test"))
        self.assertServedBy("s2.test", "origin", "after PATCH swapping s1 and s2's hosts")
        self.assertServedBy("s1.test", "origin2", "after PATCH swapping s1 and s2's hosts")
        self.reset()

    def test_put_moves_a_host_between_routes(self):
        """The same move as a whole-table PUT."""
        self.reset()
        routes = [r for r in self.base_routes() if r["id"] != "base-a"]
        routes += [h.route("base-a", "a2.test", self.origin.address),
                   h.route("newcomer", "a.test", self.origin2.address)]
        self.api.must(self.api.put_routes(routes))
        self.assertServedBy("a.test", "origin2", "after PUT moving a.test to newcomer")
        self.assertServedBy("a2.test", "origin", "after PUT moving a.test to newcomer")
        self.reset()

    # -- single-route endpoints ---------------------------------------------

    def test_put_one_route_id_must_match_the_path(self):
        self.reset()
        self.assertRefused("PUT", "/routes/base-a", h.route("other", "x.test", self.origin.address),
                           400, "route.id")
        self.assertRefused("PUT", "/routes/base-a", ["not", "an", "object"], 400, "route")

    def test_unknown_ids(self):
        self.reset()
        for method in ("GET", "DELETE"):
            with self.subTest(method=method):
                self.assertRefused(method, "/routes/no-such-route", None, 404, "id",
                                   counted=(method == "DELETE"))
        for bad_id in ["UPPER", "a%20b", "x" * 129]:
            with self.subTest(bad_id=bad_id):
                resp = self.api.get("/routes/" + bad_id)
                self.assertIn(resp.status, (400, 404), "GET /routes/%s: %r" % (bad_id, resp))
                before = self.table()
                resp = self.api.put("/routes/" + bad_id, h.route(bad_id, "x.test",
                                                                 self.origin.address))
                self.assertIn(resp.status, (400, 404), "PUT /routes/%s: %r" % (bad_id, resp))
                self.assertEqual(self.table(), before)

    def test_stale_version_is_409(self):
        self.reset()
        current = self.api.version()
        self.assertGreaterEqual(current, 2)
        a = self.origin.address
        for version in (current, current - 1, 1):
            with self.subTest(version=version):
                err = self.assertRefused("PUT", "/routes", {"version": version,
                                                            "routes": self.good(1)},
                                         409, "version")
                self.assertIn(str(current), err["error"],
                              "the 409 should say the current version: %r" % err)
                self.assertRefused("PATCH", "/routes", {"version": version,
                                                        "upsert": self.good(1)}, 409, "version")
                self.assertRefused("PUT", "/routes/n-0?version=%d" % version,
                                   h.route("n-0", "n0.test", a), 409, "version")
                self.assertRefused("DELETE", "/routes/base-a?version=%d" % version, None,
                                   409, "version")
        # The next one is fine.
        self.api.must(self.api.put("/routes/n-0?version=%d" % (current + 1),
                                   h.route("n-0", "n0.test", a)))
        self.assertEqual(self.api.version(), current + 1)
        self.api.must(self.api.delete("/routes/n-0"))
        self.assertEqual(self.api.version(), current + 2,
                         "DELETE without ?version should take current + 1")

    def test_wrong_method_is_405(self):
        cases = [("POST", "/routes", "GET, PUT, PATCH"),
                 ("DELETE", "/routes", "GET, PUT, PATCH"),
                 ("PATCH", "/routes/base-a", "GET, PUT, DELETE"),
                 ("POST", "/routes/base-a", "GET, PUT, DELETE"),
                 ("POST", "/stats", "GET"),
                 ("PUT", "/metrics", "GET"),
                 ("DELETE", "/activity", "GET"),
                 ("GET", "/drain", "POST"),
                 ("PUT", "/drain", "POST"),
                 ("POST", "/healthz", None)]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                before = self.table()
                body = {"version": self.next_version(), "routes": []} \
                    if method in ("POST", "PUT", "PATCH") else None
                resp = self.api.request(method, path, body)
                self.assertEqual(resp.status, 405, "%s %s: %r" % (method, path, resp))
                if allow:
                    self.assertEqual(resp.header("Allow"), allow, "%s %s Allow header" % (method, path))
                else:
                    self.assertTrue(resp.header("Allow"), "%s %s: 405 without Allow" % (method, path))
                self.assertEqual(self.table(), before)
        status = self.api.get("/healthz").status
        self.assertEqual(status, 200, "GET /drain must not have drained the gateway")

    def test_unknown_endpoint_is_404(self):
        for path in ["/", "/nope", "/routesx", "/route", "/stats/x"]:
            with self.subTest(path=path):
                resp = self.api.get(path)
                self.assertEqual(resp.status, 404, "GET %s: %r" % (path, resp))

    # -- counters ------------------------------------------------------------

    def test_writes_refused_counter_increases(self):
        start = self.api.stats()["control"]
        v = self.next_version()
        refusals = [
            ("PUT", "/routes", {"version": v, "routes": "x"}),
            ("PUT", "/routes", {"version": 0, "routes": []}),
            ("PATCH", "/routes", {"version": v, "delete": ["nope"]}),
            ("PUT", "/routes", {"version": 1, "routes": []}),      # 409
            ("DELETE", "/routes/nope", None),                      # 404
            ("PUT", "/routes/zz", {"id": "zz"}),
        ]
        for method, path, body in refusals:
            resp = self.api.request(method, path, body)
            self.assertIn(resp.status, (400, 404, 409), "%s %s: %r" % (method, path, resp))
        end = self.api.stats()["control"]
        self.assertEqual(end["writes_refused"], start["writes_refused"] + len(refusals),
                         "writes_refused went %d -> %d after %d refused writes"
                         % (start["writes_refused"], end["writes_refused"], len(refusals)))
        self.assertEqual(end["writes_accepted"], start["writes_accepted"],
                         "writes_accepted moved although every write was refused")
        self.api.must(self.api.put_routes(self.base_routes()))
        self.assertEqual(self.api.stats()["control"]["writes_accepted"],
                         start["writes_accepted"] + 1)

    def test_invalid_json_counts_as_a_refused_write(self):
        """A PUT whose body is not JSON is a refused write like any other."""
        start = self.refused_count()
        resp = self.api.put("/routes", b'{"version": 99, "routes": [')
        self.assertEqual(resp.status, 400)
        self.assertEqual(self.refused_count(), start + 1,
                         "PUT /routes with invalid JSON was refused (400) but "
                         "control.writes_refused did not count it")

    # -- the socket ----------------------------------------------------------

    def test_control_socket_mode_is_0600(self):
        info = os.stat(self.control_socket)
        self.assertTrue(stat.S_ISSOCK(info.st_mode), "%s is not a socket" % self.control_socket)
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o600,
                         "control socket mode is %o" % stat.S_IMODE(info.st_mode))
        self.assertEqual(info.st_uid, os.getuid())


# --------------------------------------------------------------------------
# Bodies that are not UTF-8 must be refused, not crash the gateway
# --------------------------------------------------------------------------

class ControlApiRobustnessTest(RefusalAssertions, h.ControlGatewayTestCase):

    def test_invalid_utf8_body_is_400_and_the_gateway_lives(self):
        self.api.must(self.api.put_routes([h.route("one", "one.test", self.origin.address)],
                                         version=1))
        for body in [b"\xff", b"\xff\xfe\x00garbage", b'{"version": 2, "routes": ["\xff"]}',
                     b'{"version": 2, "\xc3\x28": 1}']:
            with self.subTest(body=body):
                if not self.gateway.alive():
                    self.gateway.start()
                    self.api.must(self.api.put_routes(
                        [h.route("one", "one.test", self.origin.address)], version=1))
                before = self.api.routes()
                try:
                    resp = self.api.put("/routes", body)
                except (h.IncompleteResponse, OSError) as e:
                    resp = e
                alive = h.wait_until(lambda: not self.gateway.alive(), 1.0) is False
                self.assertTrue(alive, "PUT /routes with body %r killed the gateway (exit %s); "
                                "stderr:\n%s" % (body, self.gateway.proc.poll(),
                                                 h.tail(self.gateway.stderr(), 1500)))
                self.assertIsInstance(resp, h.Response, "PUT /routes with body %r: no response "
                                      "(%s)" % (body, resp))
                self.assertEqual(resp.status, 400, "body %r: %r" % (body, resp))
                resp.json()
                self.assertEqual(self.api.routes(), before)

    def tearDown(self):
        # This test restarts a gateway that died; don't fail twice for it.
        if not self.gateway.alive():
            self.gateway.start()


# --------------------------------------------------------------------------
# Limits: route_limit and max_body_size
# --------------------------------------------------------------------------

class RouteLimitTest(RefusalAssertions, h.ControlGatewayTestCase):
    CONTROL = {"route_limit": 5}

    def routes(self, n, prefix="r"):
        return [h.route("%s-%d" % (prefix, i), "%s%d.test" % (prefix, i), self.origin.address)
                for i in range(n)]

    def test_over_route_limit_is_413(self):
        self.api.must(self.api.put_routes(self.routes(3)))
        v = self.api.version() + 1
        self.assertRefused("PUT", "/routes", {"version": v, "routes": self.routes(6)}, 413, "routes")
        self.assertRefused("PUT", "/routes", {"version": v, "routes": self.routes(50)}, 413, "routes")
        # Exactly at the limit is fine.
        self.api.must(self.api.put_routes(self.routes(5)), "PUT of exactly route_limit routes")
        v = self.api.version() + 1
        self.assertRefused("PATCH", "/routes", {"version": v, "upsert": self.routes(1, "extra")},
                           413, "upsert")
        self.assertRefused("PUT", "/routes/extra-0", self.routes(1, "extra")[0], 413, "route")
        # Replacing one keeps the count: fine; updating an existing id too.
        self.api.must(self.api.patch_routes(upsert=self.routes(1, "extra"), delete=["r-4"]),
                      "PATCH that keeps the table at the limit")
        self.api.must(self.api.put("/routes/r-0", h.route("r-0", "r0.test", self.origin.address,
                                                          strip_prefix=True)),
                      "PUT of an existing route at the limit")
        self.assertEqual(len(self.api.routes()["routes"]), 5)
        status, _, _ = h.http_get(self.port, "/headers", "extra0.test")
        self.assertEqual(status, 200)


class BodySizeLimitTest(RefusalAssertions, h.ControlGatewayTestCase):
    CONTROL = {"max_body_size": 2048}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api.must(cls.api.put_routes([h.route("one", "one.test", cls.origin.address)],
                                         version=1))

    def padded_body(self, size):
        body = json.dumps({"version": self.api.version() + 1,
                           "routes": [h.route("two", "two.test", self.origin.address)]})
        assert len(body) < size
        return (body + " " * (size - len(body))).encode()

    def raw_put(self, head_extra, payload):
        head = ("PUT /routes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                "%s\r\n" % head_extra).encode()
        return self.api.send_raw(head + payload, "PUT")

    def test_declared_body_over_max_body_size_is_413(self):
        before = self.api.routes()
        # Only the head: the gateway must answer without waiting for the body.
        resp = self.raw_put("Content-Length: 4096\r\n", b"")
        self.assertEqual(resp.status, 413, "Content-Length 4096 over max_body_size 2048: %r" % resp)
        self.assertEqual(self.api.routes(), before)
        resp = self.raw_put("Content-Length: 1000000000\r\n", b"")
        self.assertEqual(resp.status, 413, "Content-Length 1e9: %r" % resp)
        self.assertEqual(self.api.routes(), before)

    def test_chunked_body_over_max_body_size_is_413(self):
        before = self.api.routes()
        body = self.padded_body(3000)
        resp = self.raw_put("Transfer-Encoding: chunked\r\n",
                            h.chunk_encode([body[:1000], body[1000:2000], body[2000:]]))
        self.assertEqual(resp.status, 413, "chunked body of 3000 bytes: %r" % resp)
        self.assertEqual(self.api.routes(), before)

    def test_body_under_max_body_size_is_accepted(self):
        body = self.padded_body(2000)
        resp = self.api.put("/routes", body)
        self.assertEqual(resp.status, 200, "a 2000-byte body under the 2048 limit: %r" % resp)
        self.assertIn("two", [r["id"] for r in self.api.routes()["routes"]])
        resp = self.raw_put("Transfer-Encoding: chunked\r\n",
                            h.chunk_encode([self.padded_body(1900)]))
        self.assertEqual(resp.status, 200, "a chunked 1900-byte body: %r" % resp)


# --------------------------------------------------------------------------
# The socket: 0600 under umask 0, folder permission checks
# --------------------------------------------------------------------------

class ControlSocketPermissionTest(unittest.TestCase):

    def setUp(self):
        if not os.path.exists(h.BINARY):
            raise unittest.SkipTest("gateway binary not found: %s" % h.BINARY)
        self.tmpdir = tempfile.mkdtemp(prefix="spacegate-it-")
        self.gateways = []

    def tearDown(self):
        for gw in self.gateways:
            gw.stop()
        os.chmod(self.tmpdir, 0o700)
        for name in os.listdir(self.tmpdir):
            path = os.path.join(self.tmpdir, name)
            if os.path.isdir(path):
                os.chmod(path, 0o700)
        if not h.KEEP_TMP:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def folder(self, name, mode):
        path = os.path.join(self.tmpdir, name)
        os.mkdir(path)
        os.chmod(path, mode)
        return path

    def start(self, socket_path, name="gw"):
        run_dir = os.path.join(self.tmpdir, name)
        os.makedirs(run_dir, exist_ok=True)
        port = h.free_port()
        gw = h.Gateway(h.base_config(port, []), tmpdir=run_dir,
                       extra_args=["--control-socket", socket_path])
        self.gateways.append(gw)
        return gw

    def run_once(self, socket_path, name="once"):
        run_dir = os.path.join(self.tmpdir, name)
        os.makedirs(run_dir, exist_ok=True)
        port = h.free_port()
        config = os.path.join(run_dir, "config.yaml")
        with open(config, "w") as f:
            json.dump(h.base_config(port, []), f)
        proc = h.run_gateway_once(config, ["--control-socket", socket_path], timeout=15)
        return proc, port

    def test_socket_is_0600_even_with_umask_0(self):
        folder = self.folder("run", 0o700)
        path = os.path.join(folder, "control.sock")
        old = os.umask(0)
        try:
            gw = self.start(path)
            gw.start()
        finally:
            os.umask(old)
        self.assertTrue(h.wait_for_socket(path), "no control socket at %s" % path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600, "control socket mode %o under umask 0" % mode)
        self.assertEqual(h.ControlClient(path).get("/healthz").status, 200)

    def test_world_writable_folder_without_sticky_bit_is_refused(self):
        for mode in (0o777, 0o757, 0o703):
            with self.subTest(mode=oct(mode)):
                folder = self.folder("open-%o" % mode, mode)
                path = os.path.join(folder, "control.sock")
                proc, port = self.run_once(path, "once-%o" % mode)
                self.assertEqual(proc.returncode, 1,
                                 "start with the control socket in a %o folder: exit %r, stderr %s"
                                 % (mode, proc.returncode, h.tail(proc.stderr, 2000)))
                self.assertTrue(proc.stderr.strip(), "refused start without a log line")
                self.assertIn(folder, proc.stderr, "the log line should name the folder: %s"
                              % proc.stderr)
                self.assertFalse(os.path.exists(path), "the socket was created anyway")
                self.assertTrue(h.port_refuses(port), "the gateway listens although refused")

    def test_sticky_world_writable_folder_is_fine(self):
        folder = self.folder("sticky", 0o1777)
        path = os.path.join(folder, "control.sock")
        gw = self.start(path)
        gw.start()
        self.assertTrue(h.wait_for_socket(path))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(h.ControlClient(path).get("/routes").status, 200)

    def test_a_live_control_socket_is_not_stolen(self):
        folder = self.folder("run", 0o700)
        path = os.path.join(folder, "control.sock")
        first = self.start(path, "first")
        first.start()
        self.assertTrue(h.wait_for_socket(path))
        proc, _ = self.run_once(path, "second")
        self.assertNotEqual(proc.returncode, 0, "a second gateway took over a live control socket")
        self.assertNotIn("still running", str(proc.returncode))
        self.assertEqual(h.ControlClient(path).get("/healthz").status, 200,
                         "the first gateway's socket stopped answering")

    def test_a_regular_file_at_the_socket_path_is_refused(self):
        folder = self.folder("run", 0o700)
        path = os.path.join(folder, "control.sock")
        with open(path, "w") as f:
            f.write("not a socket\n")
        proc, _ = self.run_once(path)
        self.assertEqual(proc.returncode, 1, "exit %r, stderr %s" % (proc.returncode, proc.stderr))
        with open(path) as f:
            self.assertEqual(f.read(), "not a socket\n", "the file was replaced")


# --------------------------------------------------------------------------
# TCP control with a bearer token
# --------------------------------------------------------------------------

TOKEN = "s3cr3t-token-0123456789abcdef"


class TcpControlTokenTest(h.ControlGatewayTestCase):

    @classmethod
    def make_config(cls):
        cls.tcp_port = h.free_port()
        token_file = os.path.join(cls.tmpdir, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(token_file, 0o600)
        cls.CONTROL = {"address": "%s:%d" % (h.LOOPBACK, cls.tcp_port), "token_file": token_file}
        return super().make_config()

    def tcp(self, token=None):
        return h.ControlClient(address=(h.LOOPBACK, self.tcp_port), token=token)

    def test_no_token_is_401(self):
        before = self.api.routes()
        for method, path, body in [("GET", "/routes", None), ("GET", "/stats", None),
                                   ("GET", "/metrics", None), ("GET", "/healthz", None),
                                   ("GET", "/activity", None),
                                   ("PUT", "/routes", {"version": 99, "routes": []}),
                                   ("DELETE", "/routes/x", None), ("POST", "/drain", None)]:
            with self.subTest(method=method, path=path):
                resp = self.tcp().request(method, path, body)
                self.assertEqual(resp.status, 401, "%s %s without a token: %r" % (method, path, resp))
                self.assertIn("error", resp.json())
        self.assertEqual(self.api.routes(), before)
        self.assertEqual(self.api.get("/healthz").status, 200, "a 401 POST /drain drained")

    def test_bad_token_is_401(self):
        before = self.api.routes()
        wrong_same_length = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
        for name, header in [("wrong token", "Bearer " + wrong_same_length),
                             ("token prefix", "Bearer " + TOKEN[:-1]),
                             ("token plus a byte", "Bearer " + TOKEN + "0"),
                             ("empty bearer", "Bearer "),
                             ("basic scheme", "Basic " + TOKEN),
                             ("no scheme", TOKEN)]:
            with self.subTest(case=name):
                resp = self.tcp().request("PUT", "/routes", {"version": 99, "routes": []},
                                          headers=[("Authorization", header)], token=None)
                self.assertEqual(resp.status, 401, "%s: %r" % (name, resp))
                resp = self.tcp().request("GET", "/routes", headers=[("Authorization", header)],
                                          token=None)
                self.assertEqual(resp.status, 401, "%s: %r" % (name, resp))
        self.assertEqual(self.api.routes(), before)

    def test_good_token_is_200(self):
        client = self.tcp(TOKEN)
        resp = client.get("/routes")
        self.assertEqual(resp.status, 200, "GET /routes with the right token: %r" % resp)
        v = resp.json()["version"] + 1
        resp = client.put("/routes", {"version": v, "routes": [
            h.route("tcp-r", "tcp.test", self.origin.address)]})
        self.assertEqual(resp.status, 200, "PUT /routes with the right token: %r" % resp)
        self.assertEqual(self.api.version(), v, "the unix socket should see the TCP write")
        self.assertEqual(client.get("/stats").status, 200)
        self.assertEqual(client.get("/metrics").status, 200)
        status, _, _ = h.http_get(self.port, "/headers", "tcp.test")
        self.assertEqual(status, 200)
        # A refused write over TCP is refused for its own reason, not 401.
        resp = client.put("/routes", {"version": v, "routes": []})
        self.assertEqual(resp.status, 409, "stale write over TCP with the token: %r" % resp)

    def test_unix_socket_needs_no_token(self):
        self.assertEqual(self.api.get("/routes", token=None).status, 200)

    def test_short_token_refuses_start(self):
        token_file = os.path.join(self.tmpdir, "short-token")
        with open(token_file, "w") as f:
            f.write("short\n")
        config = h.control_config(h.free_port(), [], control={
            "address": "%s:%d" % (h.LOOPBACK, h.free_port()), "token_file": token_file})
        path = os.path.join(self.tmpdir, "short.yaml")
        with open(path, "w") as f:
            json.dump(config, f)
        proc = h.run_gateway_once(path)
        self.assertNotEqual(proc.returncode, 0, "a 5-character control token was accepted")
        self.assertNotIn("still running", str(proc.returncode),
                         "a 5-character control token was accepted")


if __name__ == "__main__":
    h.main()
