// Writing the heads that cross the gateway for one exchange: the upstream
// request head (hop-by-hop fields dropped, X-Forwarded-* and X-Request-Id
// added) and the client response head, each into an OutboundWrite recycled
// through a WriteRecordPool as on the data path. Parsing is outside the loop.
#include <benchmark/benchmark.h>

#include <string>

#include "http/header_rewrite.h"
#include "http1/message_parser.h"
#include "micro/ide_request.h"
#include "net/write_queue.h"

namespace spacegate::perf {
namespace {

void BM_WriteUpstreamRequestHead(benchmark::State& state) {
  const std::string bytes(kIdeRequestHead);
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  RequestHead head;
  if (parser.parseHead(bytes.data(), bytes.size(), head) !=
      Http1MessageParser::HeadStatus::kComplete) {
    state.SkipWithError("the IDE request head did not parse");
    return;
  }
  UpstreamRequestContext context;
  context.client_ip = "203.0.113.54";
  context.request_id = "9c1e5f0a2b7d4e61000000000001e240";
  WriteRecordPool pool;
  size_t written = 0;
  for (auto _ : state) {
    OutboundWrite* write = pool.acquire();
    writeUpstreamRequestHead(head, context, *write);
    written += write->size();
    benchmark::DoNotOptimize(write->segmentCount());
    pool.release(write);
  }
  state.SetBytesProcessed(static_cast<int64_t>(written));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_WriteUpstreamRequestHead);

void BM_WriteClientResponseHead(benchmark::State& state) {
  const std::string bytes(kIdeResponseHead);
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
  ResponseHead head;
  if (parser.parseHead(bytes.data(), bytes.size(), head) !=
      Http1MessageParser::HeadStatus::kComplete) {
    state.SkipWithError("the IDE response head did not parse");
    return;
  }
  ClientResponseContext context;
  WriteRecordPool pool;
  size_t written = 0;
  for (auto _ : state) {
    OutboundWrite* write = pool.acquire();
    writeClientResponseHead(head, context, *write);
    written += write->size();
    benchmark::DoNotOptimize(write->segmentCount());
    pool.release(write);
  }
  state.SetBytesProcessed(static_cast<int64_t>(written));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_WriteClientResponseHead);

}  // namespace
}  // namespace spacegate::perf
