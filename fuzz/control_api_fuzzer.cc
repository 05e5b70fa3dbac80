// Fuzz target: control API requests (method, path with query, JSON body)
// into ControlApi::handle over a real RouteStore, as the control socket
// feeds them. The first byte picks the method, bytes up to a newline are the
// target, the rest the body; several requests run in sequence against one
// store. Checks: every answer is JSON (or the metrics text); a refused write
// leaves the table exactly as it was; an accepted one raises the version.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "control_api/control_api.h"

namespace {

#define API_CHECK(condition, message)                            \
  do {                                                           \
    if (!(condition)) {                                          \
      std::fprintf(stderr, "control_api_fuzzer: %s\n", message); \
      std::abort();                                              \
    }                                                            \
  } while (0)

class QuietGateway : public spacegate::GatewayControl {
 public:
  std::vector<spacegate::WorkerCountersSnapshot> workerCounters() const override { return {{}}; }
  void drain() override { draining_ = true; }
  bool draining() const override { return draining_; }
  std::string tlsListing() const override { return "{\"certificates\": []}"; }
  bool reloadTls(spacegate::ValidationError& error) override {
    return spacegate::rejectField(error, "tls.certificates", "no TLS listener");
  }
  bool draining_ = false;
};

const char* const kMethods[] = {"GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spacegate;
  RouteTablePublisher publisher;
  RouteStore store(publisher, 50);
  KeyRingPublisher key_publisher;
  KeyRingStore keys(key_publisher);
  QuietGateway gateway;
  ControlApi api(store, keys, gateway);
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // Requests are separated by a NUL byte.
  while (!input.empty()) {
    size_t end = input.find('\0');
    std::string_view one = input.substr(0, end);
    input = end == std::string_view::npos ? std::string_view() : input.substr(end + 1);
    if (one.empty()) continue;
    ControlRequest request;
    request.method = kMethods[static_cast<unsigned char>(one[0]) % 6];
    one.remove_prefix(1);
    size_t newline = one.find('\n');
    std::string target(one.substr(0, newline));
    request.body =
        newline == std::string_view::npos ? std::string() : std::string(one.substr(newline + 1));
    size_t question = target.find('?');
    request.path = target.substr(0, question);
    if (question != std::string::npos) request.query = target.substr(question + 1);
    RouteTableSnapshot before = store.current();
    ControlResponse response = api.handle(request);
    API_CHECK(response.status >= 200 && response.status < 600, "status out of range");
    if (response.content_type == "application/json") {
      API_CHECK(nlohmann::json::accept(response.body), "a JSON answer that is not JSON");
    }
    RouteTableSnapshot after = store.current();
    if (response.status >= 400) {
      API_CHECK(after == before, "a refused write changed the table");
    } else if (after != before) {
      API_CHECK(after->version() > before->version(), "an applied write did not raise the version");
    }
  }
  return 0;
}
