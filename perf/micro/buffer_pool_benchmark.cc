// The per-loop slab pool: one acquire and release of a standard read buffer
// (what every read and every forwarded slice costs), and a burst of 64 held
// at once and then dropped (64 busy connections), after the pool is warm.
#include <benchmark/benchmark.h>

#include <vector>

#include "net/buffer.h"

namespace spacegate::perf {
namespace {

constexpr uint32_t kLargeSize = 64 * 1024 + 4096;

void BM_BufferPoolAcquireRelease(benchmark::State& state) {
  BufferPool pool(kLargeSize);
  for (auto _ : state) {
    SlabRef slab = pool.acquireStandard();
    benchmark::DoNotOptimize(slab.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_BufferPoolAcquireRelease);

void BM_BufferPoolBurst(benchmark::State& state) {
  const auto burst = static_cast<size_t>(state.range(0));
  BufferPool pool(kLargeSize);
  std::vector<SlabRef> held;
  held.reserve(burst);
  for (auto _ : state) {
    for (size_t i = 0; i < burst; ++i) held.push_back(pool.acquireStandard());
    benchmark::DoNotOptimize(held.data());
    held.clear();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * burst));
}
BENCHMARK(BM_BufferPoolBurst)->Arg(64);

}  // namespace
}  // namespace spacegate::perf
