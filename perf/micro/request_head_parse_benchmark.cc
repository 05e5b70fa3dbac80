// Parsing one browser IDE request head the way ClientConnection does it:
// HeaderBlockPrescan over the raw bytes, llhttp over the head, then the
// internal RequestHead (views, trimmed values, framing, target and Host).
// Reported per byte (bytes_per_second) and per request (items_per_second).
// The pre-scan alone is measured too, to split the cost.
#include <benchmark/benchmark.h>

#include <string>

#include "http1/header_block_prescan.h"
#include "http1/message_parser.h"
#include "micro/ide_request.h"

namespace spacegate::perf {
namespace {

// state.range(0) == 0: a fresh RequestHead per request, as ClientConnection
// does today (resetExchange assigns RequestHead{}, so the header vector is
// allocated again). 1: one RequestHead reused, its vector keeping capacity.
void BM_ParseIdeRequestHead(benchmark::State& state) {
  const bool reuse_head = state.range(0) == 1;
  const std::string bytes(kIdeRequestHead);
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead reused;
  for (auto _ : state) {
    RequestHead fresh;
    RequestHead& head = reuse_head ? reused : fresh;
    parser.reset();
    auto status = parser.parseHead(bytes.data(), bytes.size(), head);
    if (status != Http1MessageParser::HeadStatus::kComplete) {
      state.SkipWithError("the IDE request head did not parse");
      break;
    }
    benchmark::DoNotOptimize(head.host.data());
    benchmark::DoNotOptimize(head.headers.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(reuse_head ? "reused head" : "fresh head per request");
}
BENCHMARK(BM_ParseIdeRequestHead)->Arg(0)->Arg(1);

void BM_PrescanIdeRequestHead(benchmark::State& state) {
  const std::string bytes(kIdeRequestHead);
  Limits limits;
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kRequest, limits.header_block_size,
                             limits.header_field_count);
  for (auto _ : state) {
    prescan.reset();
    auto result = prescan.scan(bytes.data(), bytes.size());
    benchmark::DoNotOptimize(result);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_PrescanIdeRequestHead);

}  // namespace
}  // namespace spacegate::perf
