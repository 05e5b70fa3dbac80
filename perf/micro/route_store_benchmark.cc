// Live route updates through RouteStore, the code behind PUT and PATCH
// /routes: applying a whole 100,000-route table (and the heap memory each route
// costs), and a single upsert into that table, timed from the call until a
// worker-side RouteTableReader on another thread sees the new table.
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "control_api/route_store.h"

namespace spacegate::perf {
namespace {

nlohmann::json makeRoute(size_t index, const std::string& upstream = "10.0.0.1:8089") {
  std::string name = "gs-" + std::to_string(index);
  return {{"id", name + "-ide"},
          {"host", name + ".gitspaces.example"},
          {"upstream", upstream},
          {"gitspace", name},
          {"owner", "user-" + std::to_string(index % 977)},
          {"access", "owner"}};
}

nlohmann::json makeTable(size_t count, uint64_t version) {
  nlohmann::json routes = nlohmann::json::array();
  for (size_t i = 0; i < count; ++i) routes.push_back(makeRoute(i));
  return {{"version", version}, {"routes", std::move(routes)}};
}

// Bytes in use on the heap: exact where RSS would show whatever the
// allocator kept from the previous iteration.
uint64_t heapBytesInUse() {
  return mallinfo2().uordblks;
}

// PUT /routes with 100,000 routes: validation of every route, building the
// sharded table, publishing it.
void BM_ApplyWholeTable(benchmark::State& state) {
  size_t count = static_cast<size_t>(state.range(0));
  nlohmann::json body = makeTable(count, 1);
  uint64_t version = 1;
  double rss_per_route = 0;
  for (auto _ : state) {
    state.PauseTiming();
    RouteTablePublisher publisher;
    RouteStore store(publisher, 1'000'000);
    body["version"] = version++;
    uint64_t before = heapBytesInUse();
    state.ResumeTiming();
    RouteWriteError error;
    if (!store.replaceAll(body, error)) state.SkipWithError(error.error.message.c_str());
    state.PauseTiming();
    rss_per_route = static_cast<double>(heapBytesInUse() - before) / static_cast<double>(count);
    state.ResumeTiming();
  }
  state.counters["heap_bytes_per_route"] = rss_per_route;
  state.counters["routes"] = static_cast<double>(count);
}
BENCHMARK(BM_ApplyWholeTable)->Arg(100'000)->Unit(benchmark::kMillisecond)->Iterations(3);

// PATCH /routes with one upsert at 100,000 routes, from the call until a
// reader on another thread (standing in for a worker) holds the new table.
void BM_SingleUpsertVisibleToWorkers(benchmark::State& state) {
  size_t count = static_cast<size_t>(state.range(0));
  RouteTablePublisher publisher;
  RouteStore store(publisher, 1'000'000);
  RouteWriteError error;
  store.replaceAll(makeTable(count, 1), error);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> seen_version{0};
  std::atomic<int64_t> seen_at_ns{0};
  std::thread worker([&] {
    RouteTableReader reader(publisher);
    uint64_t last = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const RouteTableSnapshot& table = reader.current();
      if (table->version() != last) {
        last = table->version();
        seen_at_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                         std::memory_order_relaxed);
        seen_version.store(last, std::memory_order_release);
      }
    }
  });
  std::vector<double> latencies_us;
  uint64_t version = 1;
  size_t index = 0;
  for (auto _ : state) {
    ++version;
    nlohmann::json body = {
        {"version", version},
        {"upsert",
         {makeRoute(index++ % count, "10.0.0." + std::to_string(version % 250 + 2) + ":8089")}}};
    auto start = std::chrono::steady_clock::now();
    if (!store.patch(body, error)) state.SkipWithError(error.error.message.c_str());
    while (seen_version.load(std::memory_order_acquire) < version) {
    }
    int64_t seen = seen_at_ns.load(std::memory_order_relaxed);
    latencies_us.push_back(static_cast<double>(seen - start.time_since_epoch().count()) / 1000.0);
  }
  stop = true;
  worker.join();
  std::sort(latencies_us.begin(), latencies_us.end());
  if (!latencies_us.empty()) {
    state.counters["p50_us"] = latencies_us[latencies_us.size() / 2];
    state.counters["p99_us"] = latencies_us[latencies_us.size() * 99 / 100];
  }
}
BENCHMARK(BM_SingleUpsertVisibleToWorkers)
    ->Arg(100'000)
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(2000);

}  // namespace
}  // namespace spacegate::perf
