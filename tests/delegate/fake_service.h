// FakeService: a real ServiceServer on 127.0.0.1 (any free port) whose
// answers come from a test's function, recording every request it got. It
// plays the control plane, the runner, a gateway's control API, or the
// gateway's traffic port with an agent behind it, in the delegate's unit
// tests: the delegate's own ServiceClient calls go over real sockets.
#pragma once

#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "net/socket_address.h"
#include "service/service_server.h"

namespace spacegate::testing {

struct RecordedRequest {
  std::string method;
  std::string path;
  std::string query;
  std::string body;
  std::string host;
  std::string authorization;

  // "PUT /v1/gitspace"
  std::string line() const { return method + " " + path; }
};

class FakeService : public ServiceHandler {
 public:
  using Answer = std::function<ServiceResponse(const ServiceRequest&)>;

  explicit FakeService(Answer answer = nullptr) : answer_(std::move(answer)) {
    ServiceServerConfig config;
    config.name = "fake";
    config.tcp_enabled = true;
    std::string error;
    // parseSocketAddress refuses port 0: parse a real one, then ask the
    // kernel for any free port.
    EXPECT_TRUE(parseSocketAddress("127.0.0.1:1", config.tcp_address, error)) << error;
    reinterpret_cast<sockaddr_in*>(&config.tcp_address.ip)->sin_port = 0;
    config.tcp_address.port = 0;
    server_ = std::make_unique<ServiceServer>(*this, config, limits_);
    EXPECT_TRUE(server_->open(error)) << error;
    server_->start();
  }
  ~FakeService() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
    server_->stop();
    server_->join();
  }

  // Answers come this much later, from a thread of their own (the server's
  // loop goes on), so calls from several tasks overlap as they would.
  void setDelayMs(int delay_ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    delay_ms_ = delay_ms;
  }
  // The most requests answered at the same time.
  int mostInFlight() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return most_in_flight_;
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->tcpPort()); }

  void setAnswer(Answer answer) {
    std::lock_guard<std::mutex> lock(mutex_);
    answer_ = std::move(answer);
  }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  // The "METHOD /path" of every request, in order.
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    for (const RecordedRequest& request : requests()) out.push_back(request.line());
    return out;
  }
  size_t count(const std::string& line) const {
    size_t n = 0;
    for (const RecordedRequest& request : requests()) n += request.line() == line;
    return n;
  }

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override {
    RecordedRequest recorded{request.method, request.path, request.query, request.body, "", ""};
    if (const std::string* host = request.header("host")) recorded.host = *host;
    if (const std::string* auth = request.header("authorization")) recorded.authorization = *auth;
    Answer answer;
    int delay_ms;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(recorded);
      answer = answer_;
      delay_ms = delay_ms_;
      most_in_flight_ = std::max(most_in_flight_, ++in_flight_);
    }
    auto respond = [this, answer, exchange](const ServiceRequest& request) {
      exchange->respond(answer ? answer(request) : ServiceResponse::error(404, "not found"));
      std::lock_guard<std::mutex> lock(mutex_);
      --in_flight_;
    };
    if (delay_ms == 0) {
      respond(request);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    threads_.emplace_back([respond, delay_ms, request = std::move(request)] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      respond(request);
    });
  }

 private:
  Limits limits_;
  mutable std::mutex mutex_;
  Answer answer_;
  std::vector<RecordedRequest> requests_;
  int delay_ms_ = 0;
  int in_flight_ = 0;
  int most_in_flight_ = 0;
  std::vector<std::thread> threads_;
  std::unique_ptr<ServiceServer> server_;
};

inline ServiceResponse jsonAnswer(int status, const nlohmann::json& body) {
  return ServiceResponse::json(status, body.dump());
}

}  // namespace spacegate::testing
