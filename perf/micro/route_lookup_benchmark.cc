// RouteTable::match with 10, 10,000 and 100,000 routes, one table per kind of
// route so each cost shows on its own: exact hosts (a Gitspace's IDE at
// gs-N.gitspaces.example), one-label wildcards (*.gs-N.gitspaces.example,
// its forwarded ports) and path prefixes on the one gateway host
// (gw.gitspaces.example/gs/gs-N/, the form for places without wildcard DNS).
// Each lookup asks for a different, random Gitspace, so caches are not
// flattered by a single hot key.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "route/route_table.h"

namespace spacegate::perf {
namespace {

enum class RouteKind { kExact, kWildcard, kPrefix };

struct LookupSet {
  std::unique_ptr<RouteTable> table;
  std::vector<std::pair<std::string, std::string>> requests;  // host, path
};

Route makeRoute(size_t index, RouteKind kind) {
  Route route;
  std::string name = "gs-" + std::to_string(index);
  route.id = name;
  switch (kind) {
    case RouteKind::kExact: route.host = name + ".gitspaces.example"; break;
    case RouteKind::kWildcard: route.host = "*." + name + ".gitspaces.example"; break;
    case RouteKind::kPrefix: route.host = "gw.gitspaces.example"; break;
  }
  route.path_prefix = kind == RouteKind::kPrefix ? "/gs/" + name + "/" : std::string(1, '/');
  route.strip_prefix = kind == RouteKind::kPrefix;
  route.upstream_text = "10.0.0.1:8089";
  route.access = RouteAccess::kPublic;
  return route;
}

// Tables are built once per (kind, size): Google Benchmark calls a benchmark
// function several times while it settles on an iteration count.
const LookupSet& lookupSet(RouteKind kind, size_t routes) {
  static std::map<std::pair<RouteKind, size_t>, LookupSet> sets;
  auto [entry, inserted] = sets.try_emplace({kind, routes});
  LookupSet& set = entry->second;
  if (!inserted) return set;
  std::vector<Route> table;
  table.reserve(routes);
  for (size_t i = 0; i < routes; ++i) table.push_back(makeRoute(i, kind));
  set.table = std::make_unique<RouteTable>(std::move(table));
  std::mt19937_64 random(42);
  std::uniform_int_distribution<size_t> pick(0, routes - 1);
  for (int i = 0; i < 1024; ++i) {
    std::string name = "gs-" + std::to_string(pick(random));
    switch (kind) {
      case RouteKind::kExact:
        set.requests.emplace_back(name + ".gitspaces.example", "/static/app.js?v=3");
        break;
      case RouteKind::kWildcard:
        set.requests.emplace_back("3000." + name + ".gitspaces.example", "/api/items?page=2");
        break;
      case RouteKind::kPrefix:
        set.requests.emplace_back("gw.gitspaces.example", "/gs/" + name + "/static/app.js");
        break;
    }
  }
  return set;
}

void runLookups(benchmark::State& state, RouteKind kind) {
  const LookupSet& set = lookupSet(kind, static_cast<size_t>(state.range(0)));
  size_t next = 0;
  for (auto _ : state) {
    const auto& [host, path] = set.requests[next];
    next = (next + 1) & 1023;
    const Route* route = set.table->match(host, path);
    if (!route) {
      state.SkipWithError("a lookup found no route");
      break;
    }
    benchmark::DoNotOptimize(route);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_RouteLookupExact(benchmark::State& state) {
  runLookups(state, RouteKind::kExact);
}
void BM_RouteLookupWildcard(benchmark::State& state) {
  runLookups(state, RouteKind::kWildcard);
}
void BM_RouteLookupPrefix(benchmark::State& state) {
  runLookups(state, RouteKind::kPrefix);
}

BENCHMARK(BM_RouteLookupExact)->ArgName("routes")->Arg(10)->Arg(10'000)->Arg(100'000);
BENCHMARK(BM_RouteLookupWildcard)->ArgName("routes")->Arg(10)->Arg(10'000)->Arg(100'000);
BENCHMARK(BM_RouteLookupPrefix)->ArgName("routes")->Arg(10)->Arg(10'000)->Arg(100'000);

}  // namespace
}  // namespace spacegate::perf
