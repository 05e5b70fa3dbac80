// ServiceServer and ServiceClient against each other and against raw
// sockets: answers given at once, later from another thread, and streamed;
// keep-alive and pipelining order; Expect: 100-continue; the body limit,
// malformed requests and the idle timeout; and the request helpers
// (query parameters, bearer tokens, percent-decoding).
#include "service/service_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "service/service_client.h"

namespace spacegate {
namespace {

using namespace std::chrono_literals;

// --- Request helpers (no server) ---

ServiceRequest requestWithQuery(std::string query) {
  ServiceRequest request;
  request.query = std::move(query);
  return request;
}

ServiceRequest requestWithAuthorization(std::string value) {
  ServiceRequest request;
  request.headers.emplace_back("authorization", std::move(value));
  return request;
}

TEST(PercentDecodeTest, DecodesEscapesAndKeepsPlus) {
  std::string decoded;
  ASSERT_TRUE(percentDecode("a%20b%2Fc+d", decoded));
  EXPECT_EQ(decoded, "a b/c+d");
  ASSERT_TRUE(percentDecode("%41%6a%6A", decoded));
  EXPECT_EQ(decoded, "Ajj");
  ASSERT_TRUE(percentDecode("", decoded));
  EXPECT_EQ(decoded, "");
}

TEST(PercentDecodeTest, RefusesBadEscapes) {
  std::string decoded;
  EXPECT_FALSE(percentDecode("%", decoded));
  EXPECT_FALSE(percentDecode("%4", decoded));
  EXPECT_FALSE(percentDecode("%zz", decoded));
  EXPECT_FALSE(percentDecode("abc%", decoded));
  EXPECT_FALSE(percentDecode("%4g", decoded));
  EXPECT_FALSE(percentDecode("%g4", decoded));
}

TEST(ServiceRequestTest, QueryParameterDecodesAndReportsMissingKeys) {
  ServiceRequest request =
      requestWithQuery("a=1&name=hello%20world&flag&empty=&bad=%zz&plus=a+b&a=2");
  std::string value;
  ASSERT_TRUE(request.queryParameter("a", value));
  EXPECT_EQ(value, "1");  // the first one wins
  ASSERT_TRUE(request.queryParameter("name", value));
  EXPECT_EQ(value, "hello world");
  ASSERT_TRUE(request.queryParameter("flag", value));
  EXPECT_EQ(value, "");
  ASSERT_TRUE(request.queryParameter("empty", value));
  EXPECT_EQ(value, "");
  ASSERT_TRUE(request.queryParameter("plus", value));
  EXPECT_EQ(value, "a+b");
  EXPECT_FALSE(request.queryParameter("bad", value));
  EXPECT_FALSE(request.queryParameter("missing", value));
  EXPECT_FALSE(request.queryParameter("nam", value));  // no prefix match
  EXPECT_FALSE(requestWithQuery("").queryParameter("a", value));
}

TEST(ServiceRequestTest, HeaderFindsLowercaseNames) {
  ServiceRequest request;
  request.headers.emplace_back("x-one", "1");
  request.headers.emplace_back("x-one", "2");
  ASSERT_NE(request.header("x-one"), nullptr);
  EXPECT_EQ(*request.header("x-one"), "1");
  EXPECT_EQ(request.header("x-two"), nullptr);
}

TEST(ServiceRequestTest, HasBearerToken) {
  const std::string token = "s3cret-token-0123456789";
  EXPECT_TRUE(requestWithAuthorization("Bearer " + token).hasBearerToken(token));
  EXPECT_EQ(requestWithAuthorization("Bearer " + token).bearerToken(), token);
  // Same length, one byte different.
  EXPECT_FALSE(requestWithAuthorization("Bearer s3cret-token-0123456788").hasBearerToken(token));
  // Wrong length, either way.
  EXPECT_FALSE(requestWithAuthorization("Bearer " + token + "x").hasBearerToken(token));
  EXPECT_FALSE(requestWithAuthorization("Bearer s3cret").hasBearerToken(token));
  EXPECT_FALSE(requestWithAuthorization("Bearer ").hasBearerToken(token));
  // Missing, or another scheme.
  EXPECT_FALSE(ServiceRequest{}.hasBearerToken(token));
  EXPECT_FALSE(requestWithAuthorization("Basic " + token).hasBearerToken(token));
  EXPECT_EQ(requestWithAuthorization("Basic " + token).bearerToken(), "");
  // An empty expected token never matches (not even an empty bearer).
  EXPECT_FALSE(requestWithAuthorization("Bearer ").hasBearerToken(""));
}

TEST(ServiceResponseTest, ErrorBodyNamesTheField) {
  ServiceResponse with_field = ServiceResponse::error(400, "bad", "pool");
  EXPECT_EQ(with_field.status, 400);
  EXPECT_EQ(with_field.body, "{\"error\":\"bad\",\"field\":\"pool\"}\n");
  EXPECT_EQ(ServiceResponse::error(404, "no").body, "{\"error\":\"no\"}\n");
}

// --- A server on a loop of its own ---

// Raw sockets with deadlines, to see the bytes on the wire.
int connectTcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void sendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ASSERT_GT(sent, 0);
    bytes.remove_prefix(static_cast<size_t>(sent));
  }
}

// Reads until `text` holds `terminator` (or, with an empty terminator, until
// the peer closes). False on timeout. `closed` says whether EOF was seen.
bool readUntil(int fd, std::string& text, std::string_view terminator, bool* closed = nullptr,
               std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  if (closed) *closed = false;
  while (terminator.empty() || text.find(terminator) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[4096];
    ssize_t received = ::recv(fd, buffer, sizeof buffer, 0);
    if (received <= 0) {
      if (closed) *closed = true;
      return terminator.empty();
    }
    text.append(buffer, static_cast<size_t>(received));
  }
  return true;
}

// True when the peer closes within `timeout` (any bytes before are kept).
bool closedWithin(int fd, std::chrono::milliseconds timeout, std::string* text = nullptr) {
  std::string ignored;
  bool closed = false;
  readUntil(fd, text ? *text : ignored, "", &closed, timeout);
  return closed;
}

size_t countOf(const std::string& text, std::string_view needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// Answers by path; what it saw is kept under a mutex for the test to check.
class TestHandler : public ServiceHandler {
 public:
  using Behaviour = std::function<void(const ServiceRequest&, std::shared_ptr<ServiceExchange>)>;

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override {
    Behaviour behaviour;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back("handle " + request.method + " " + request.path);
      requests_.push_back(request);
      behaviour = behaviour_;
    }
    changed_.notify_all();
    if (behaviour) {
      behaviour(request, std::move(exchange));
      return;
    }
    exchange->respond(ServiceResponse::json(200, "{\"path\":\"" + request.path + "\"}"));
  }

  void onBodyTooLarge(const std::string& method) override {
    std::lock_guard<std::mutex> lock(mutex_);
    too_large_methods_.push_back(method);
  }

  void setBehaviour(Behaviour behaviour) {
    std::lock_guard<std::mutex> lock(mutex_);
    behaviour_ = std::move(behaviour);
  }

  void addEvent(std::string event) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(std::move(event));
    }
    changed_.notify_all();
  }

  // Runs `task` on a thread of its own after `delay` (joined at tear-down).
  void later(std::chrono::milliseconds delay, std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mutex_);
    threads_.emplace_back([delay, task = std::move(task)] {
      std::this_thread::sleep_for(delay);
      task();
    });
  }

  void keep(std::shared_ptr<ServiceExchange> exchange) {
    std::lock_guard<std::mutex> lock(mutex_);
    kept_.push_back(std::move(exchange));
  }

  bool waitForEvents(size_t count, std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return events_.size() >= count; });
  }

  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  std::vector<ServiceRequest> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  std::vector<std::string> tooLargeMethods() {
    std::lock_guard<std::mutex> lock(mutex_);
    return too_large_methods_;
  }
  std::shared_ptr<ServiceExchange> keptExchange(size_t index) {
    std::lock_guard<std::mutex> lock(mutex_);
    return index < kept_.size() ? kept_[index] : nullptr;
  }

  void joinThreads() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
  }
  void dropExchanges() {
    std::lock_guard<std::mutex> lock(mutex_);
    kept_.clear();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  Behaviour behaviour_;
  std::vector<std::string> events_;
  std::vector<ServiceRequest> requests_;
  std::vector<std::string> too_large_methods_;
  std::vector<std::thread> threads_;
  std::vector<std::shared_ptr<ServiceExchange>> kept_;
};

class ServiceServerTest : public ::testing::Test {
 protected:
  // The binaries ignore SIGPIPE in main(); libuv writes to a peer that has
  // gone would otherwise kill the test process.
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    char folder[] = "/tmp/service-server-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
  }

  void TearDown() override {
    // Threads that answer later finish first (they post to the loop), then
    // the server stops; exchanges kept by the test go last.
    handler_.joinThreads();
    if (server_) {
      server_->stop();
      server_->join();
    }
    handler_.dropExchanges();
    server_.reset();
    std::filesystem::remove_all(folder_);
  }

  // Starts a server on 127.0.0.1:0 (and, when asked, on a unix socket).
  void startServer(ServiceServerConfig config = {}, bool with_socket = false) {
    config.name = "test";
    config.tcp_enabled = true;
    std::string error;
    // parseSocketAddress refuses port 0: parse a real port, then ask the
    // kernel for any free one.
    ASSERT_TRUE(parseSocketAddress("127.0.0.1:1", config.tcp_address, error)) << error;
    reinterpret_cast<sockaddr_in*>(&config.tcp_address.ip)->sin_port = 0;
    config.tcp_address.port = 0;
    if (with_socket) config.socket_path = folder_ + "/service.sock";
    server_ = std::make_unique<ServiceServer>(handler_, config, limits_);
    ASSERT_TRUE(server_->open(error)) << error;
    port_ = server_->tcpPort();
    ASSERT_GT(port_, 0);
    server_->start();
  }

  ServiceClient client() const {
    return ServiceClient("", "http://127.0.0.1:" + std::to_string(port_), "");
  }

  int connectRaw() {
    int fd = connectTcp(port_);
    EXPECT_GE(fd, 0);
    return fd;
  }

  std::string folder_;
  Limits limits_;
  TestHandler handler_;
  std::unique_ptr<ServiceServer> server_;
  int port_ = 0;
};

TEST_F(ServiceServerTest, AnswersSynchronously) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("GET", "/v1/thing?x=1", "", reply, error)) << error;
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "{\"path\":\"/v1/thing\"}");
  auto requests = handler_.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].path, "/v1/thing");
  EXPECT_EQ(requests[0].query, "x=1");
  EXPECT_TRUE(requests[0].over_tcp);
  ASSERT_NE(requests[0].header("user-agent"), nullptr);
  EXPECT_EQ(*requests[0].header("user-agent"), "spacegate");
  bool has_no_store = false;
  for (const auto& [name, value] : reply.headers) {
    if (name == "cache-control" && value == "no-store") has_no_store = true;
  }
  EXPECT_TRUE(has_no_store);
}

TEST_F(ServiceServerTest, PassesBodyTokenAndExtraHeaders) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest& request, std::shared_ptr<ServiceExchange> e) {
    ServiceResponse response = ServiceResponse::json(
        request.hasBearerToken("token-0123456789abcdef") ? 201 : 401, request.body);
    response.headers.emplace_back("X-Extra", "yes");
    e->respond(std::move(response));
  });
  ServiceClient with_token("", "http://127.0.0.1:" + std::to_string(port_),
                           "token-0123456789abcdef");
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(with_token.call("PUT", "/v1/x", "{\"a\":1}", reply, error)) << error;
  EXPECT_EQ(reply.status, 201);
  EXPECT_EQ(reply.body, "{\"a\":1}");
  bool has_extra = false;
  for (const auto& [name, value] : reply.headers) {
    if (name == "x-extra" && value == "yes") has_extra = true;
  }
  EXPECT_TRUE(has_extra);
  ASSERT_TRUE(client().call("PUT", "/v1/x", "{}", reply, error)) << error;
  EXPECT_EQ(reply.status, 401);
}

TEST_F(ServiceServerTest, AnswersLaterFromAnotherThread) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    handler_.later(
        50ms, [exchange] { exchange->respond(ServiceResponse::json(202, "{\"later\":true}")); });
  });
  auto started = std::chrono::steady_clock::now();
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("POST", "/v1/slow", "{}", reply, error)) << error;
  EXPECT_GE(std::chrono::steady_clock::now() - started, 45ms);
  EXPECT_EQ(reply.status, 202);
  EXPECT_EQ(reply.body, "{\"later\":true}");
}

TEST_F(ServiceServerTest, SecondAnswerToOneExchangeIsIgnored) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    exchange->respond(ServiceResponse::json(200, "first"));
    exchange->respond(ServiceResponse::json(500, "second"));
    exchange->startStream(200, "text/plain");
    exchange->sendChunk("third");
    exchange->finishStream();
  });
  int fd = connectRaw();
  sendAll(fd, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text));
  ::close(fd);
  EXPECT_EQ(countOf(text, "HTTP/1.1 "), 1u) << text;
  EXPECT_NE(text.find("HTTP/1.1 200 "), std::string::npos) << text;
  EXPECT_TRUE(text.ends_with("\r\n\r\nfirst")) << text;
}

// The stream is produced from another thread, one chunk at a time.
void streamFromThread(TestHandler& handler, std::shared_ptr<ServiceExchange> exchange) {
  handler.later(10ms, [exchange] {
    exchange->startStream(200, "text/plain", {{"X-Stream", "1"}});
    exchange->sendChunk("first ");
    std::this_thread::sleep_for(10ms);
    exchange->sendChunk("");  // nothing: not the end of the stream
    exchange->sendChunk("second ");
    std::this_thread::sleep_for(10ms);
    exchange->sendChunk(std::string(26, 'z'));
    exchange->finishStream();
  });
}

TEST_F(ServiceServerTest, StreamReadByClientIsTheConcatenation) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    streamFromThread(handler_, std::move(exchange));
  });
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("GET", "/v1/log", "", reply, error)) << error;
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "first second " + std::string(26, 'z'));
}

TEST_F(ServiceServerTest, StreamFramingOnTheWire) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    streamFromThread(handler_, std::move(exchange));
  });
  int fd = connectRaw();
  sendAll(fd, "GET /v1/log HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string text;
  ASSERT_TRUE(readUntil(fd, text, "0\r\n\r\n")) << text;
  size_t head_end = text.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  std::string head = text.substr(0, head_end + 2);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Type: text/plain\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Stream: 1\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  EXPECT_EQ(head.find("Connection: close"), std::string::npos) << head;
  EXPECT_EQ(text.substr(head_end + 4),
            "6\r\nfirst \r\n7\r\nsecond \r\n1a\r\n" + std::string(26, 'z') + "\r\n0\r\n\r\n");
  // The connection stays open for the next request.
  handler_.setBehaviour(nullptr);
  sendAll(fd, "GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string next;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &next));
  ::close(fd);
  EXPECT_NE(next.find("{\"path\":\"/after\"}"), std::string::npos) << next;
}

TEST_F(ServiceServerTest, OnClientGoneFiresWhenTheClientLeavesALongPoll) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  std::atomic<bool> gone_called{false};
  handler_.setBehaviour(
      [this, &gone_called](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
        EXPECT_FALSE(exchange->clientGone());
        exchange->setOnClientGone([this, &gone_called] {
          gone_called = true;
          handler_.addEvent("gone");
        });
        handler_.keep(std::move(exchange));  // a long poll: no answer yet
      });
  int fd = connectRaw();
  sendAll(fd, "GET /v1/events?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(handler_.waitForEvents(1));
  ::close(fd);
  ASSERT_TRUE(handler_.waitForEvents(2));
  EXPECT_TRUE(gone_called);
  auto exchange = handler_.keptExchange(0);
  ASSERT_NE(exchange, nullptr);
  EXPECT_TRUE(exchange->clientGone());
  // Answering now is ignored; a callback set now runs at once.
  exchange->respond(ServiceResponse::json(200, "{}"));
  bool late_called = false;
  exchange->setOnClientGone([&late_called] { late_called = true; });
  EXPECT_TRUE(late_called);
}

TEST_F(ServiceServerTest, ServerStopMarksPendingExchangesGone) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    exchange->setOnClientGone([this] { handler_.addEvent("gone"); });
    handler_.keep(std::move(exchange));
  });
  int fd = connectRaw();
  sendAll(fd, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(handler_.waitForEvents(1));
  server_->stop();
  server_->join();
  EXPECT_EQ(handler_.events().size(), 2u);
  EXPECT_TRUE(handler_.keptExchange(0)->clientGone());
  EXPECT_TRUE(closedWithin(fd, 2000ms));
  ::close(fd);
}

TEST_F(ServiceServerTest, PipelinedRequestsAreAnsweredInOrder) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour(
      [this](const ServiceRequest& request, std::shared_ptr<ServiceExchange> exchange) {
        if (request.path == "/first") {
          handler_.later(50ms, [this, exchange] {
            handler_.addEvent("answer /first");
            exchange->respond(ServiceResponse::json(200, "one"));
          });
          return;
        }
        exchange->respond(ServiceResponse::json(200, "two"));
      });
  int fd = connectRaw();
  // Both requests in one write.
  sendAll(fd,
          "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
          "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  std::string text;
  ASSERT_TRUE(readUntil(fd, text, "two")) << text;
  ::close(fd);
  size_t one = text.find("\r\n\r\none");
  size_t two = text.find("\r\n\r\ntwo");
  ASSERT_NE(one, std::string::npos) << text;
  ASSERT_NE(two, std::string::npos) << text;
  EXPECT_LT(one, two);
  EXPECT_EQ(countOf(text, "HTTP/1.1 200 OK"), 2u);
  auto events = handler_.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], "handle GET /first");
  EXPECT_EQ(events[1], "answer /first");
  EXPECT_EQ(events[2], "handle POST /second");
  EXPECT_EQ(handler_.requests()[1].body, "abc");
}

TEST_F(ServiceServerTest, KeepAliveServesSequentialRequestsOnOneConnection) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  int fd = connectRaw();
  for (int i = 0; i < 3; ++i) {
    std::string path = "/n" + std::to_string(i);
    sendAll(fd, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string text;
    ASSERT_TRUE(readUntil(fd, text, "{\"path\":\"" + path + "\"}")) << text;
    EXPECT_EQ(text.find("Connection: close"), std::string::npos);
  }
  ::close(fd);
  EXPECT_EQ(handler_.requests().size(), 3u);
}

TEST_F(ServiceServerTest, ExpectContinueGetsAnInterimAnswer) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest& request, std::shared_ptr<ServiceExchange> e) {
    e->respond(ServiceResponse::json(200, "got " + request.body));
  });
  int fd = connectRaw();
  sendAll(fd,
          "PUT /v1/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
          "Content-Length: 5\r\nConnection: close\r\n\r\n");
  std::string text;
  ASSERT_TRUE(readUntil(fd, text, "\r\n\r\n")) << text;
  EXPECT_EQ(text, "HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_TRUE(handler_.requests().empty());
  sendAll(fd, "hello");
  text.clear();
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text));
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 200 OK\r\n")) << text;
  EXPECT_TRUE(text.ends_with("got hello")) << text;
}

TEST_F(ServiceServerTest, DeclaredBodyOverTheLimitIs413) {
  ServiceServerConfig config;
  config.max_body_size = 16;
  ASSERT_NO_FATAL_FAILURE(startServer(config));
  int fd = connectRaw();
  sendAll(fd, "POST /v1/big HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 413 ")) << text;
  EXPECT_NE(text.find("Connection: close"), std::string::npos) << text;
  EXPECT_NE(text.find("request body too large"), std::string::npos) << text;
  EXPECT_TRUE(handler_.requests().empty());
  EXPECT_EQ(handler_.tooLargeMethods(), std::vector<std::string>{"POST"});

  // At the limit is fine.
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("POST", "/v1/ok", std::string(16, 'a'), reply, error)) << error;
  EXPECT_EQ(reply.status, 200);
  // Over it through the client: 413 too.
  ASSERT_TRUE(client().call("PUT", "/v1/big", std::string(17, 'a'), reply, error)) << error;
  EXPECT_EQ(reply.status, 413);
  EXPECT_EQ(handler_.tooLargeMethods().size(), 2u);
}

TEST_F(ServiceServerTest, ChunkedBodyOverTheLimitIs413) {
  ServiceServerConfig config;
  config.max_body_size = 16;
  ASSERT_NO_FATAL_FAILURE(startServer(config));
  int fd = connectRaw();
  sendAll(fd,
          "POST /v1/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 413 ")) << text;
  EXPECT_TRUE(handler_.requests().empty());
  EXPECT_EQ(handler_.tooLargeMethods(), std::vector<std::string>{"POST"});
}

TEST_F(ServiceServerTest, MalformedRequestIs400AndCloses) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  int fd = connectRaw();
  sendAll(fd, "THIS IS NOT HTTP\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 400 ")) << text;
  EXPECT_NE(text.find("Connection: close"), std::string::npos) << text;
  EXPECT_TRUE(handler_.requests().empty());
}

TEST_F(ServiceServerTest, MalformedChunkedBodyIs400AndCloses) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  int fd = connectRaw();
  sendAll(fd,
          "POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          "zz\r\nnot a chunk\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 400 ")) << text;
  EXPECT_TRUE(handler_.requests().empty());
}

TEST_F(ServiceServerTest, IdleTimeoutClosesIdleConnections) {
  ServiceServerConfig config;
  config.idle_timeout_ms = 200;
  ASSERT_NO_FATAL_FAILURE(startServer(config));
  // Nothing sent at all.
  int silent = connectRaw();
  auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(closedWithin(silent, 3000ms));
  EXPECT_GE(std::chrono::steady_clock::now() - started, 150ms);
  ::close(silent);
  // Idle after an answered request on a keep-alive connection.
  int used = connectRaw();
  sendAll(used, "GET /once HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string text;
  ASSERT_TRUE(readUntil(used, text, "{\"path\":\"/once\"}"));
  EXPECT_TRUE(closedWithin(used, 3000ms));
  ::close(used);
  // A head that never completes.
  int partial = connectRaw();
  sendAll(partial, "GET /slow HTTP/1.1\r\nHost:");
  EXPECT_TRUE(closedWithin(partial, 3000ms));
  ::close(partial);
  EXPECT_EQ(handler_.requests().size(), 1u);
}

TEST_F(ServiceServerTest, IdleTimeoutDoesNotCutAPendingAnswer) {
  ServiceServerConfig config;
  config.idle_timeout_ms = 200;
  ASSERT_NO_FATAL_FAILURE(startServer(config));
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    handler_.later(400ms, [exchange] { exchange->respond(ServiceResponse::json(200, "late")); });
  });
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("GET", "/v1/poll", "", reply, error)) << error;
  EXPECT_EQ(reply.body, "late");
}

TEST_F(ServiceServerTest, HeadGetsNoBody) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    exchange->respond(ServiceResponse::json(200, "0123456789"));
  });
  int fd = connectRaw();
  sendAll(fd, "HEAD /v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_TRUE(text.starts_with("HTTP/1.1 200 OK\r\n")) << text;
  EXPECT_NE(text.find("Content-Length: 10\r\n"), std::string::npos) << text;
  EXPECT_TRUE(text.ends_with("\r\n\r\n")) << text;

  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(client().call("HEAD", "/v1/x", "", reply, error)) << error;
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "");
}

TEST_F(ServiceServerTest, HeadOfAStreamGetsNoBody) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    exchange->startStream(200, "text/plain");
    exchange->sendChunk("ignored");
    exchange->finishStream();
  });
  int fd = connectRaw();
  sendAll(fd, "HEAD /v1/log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string text;
  ASSERT_TRUE(closedWithin(fd, 5000ms, &text)) << text;
  ::close(fd);
  EXPECT_NE(text.find("Content-Length: 0\r\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("chunked"), std::string::npos) << text;
  EXPECT_TRUE(text.ends_with("\r\n\r\n")) << text;
}

TEST_F(ServiceServerTest, ServesAUnixSocketWithMode0600) {
  ASSERT_NO_FATAL_FAILURE(startServer({}, /*with_socket=*/true));
  std::string path = folder_ + "/service.sock";
  struct stat info {};
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  ServiceClient over_socket(path, "", "");
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(over_socket.call("GET", "/v1/unix", "", reply, error)) << error;
  EXPECT_EQ(reply.status, 200);
  ASSERT_EQ(handler_.requests().size(), 1u);
  EXPECT_FALSE(handler_.requests()[0].over_tcp);
  ASSERT_NE(handler_.requests()[0].header("host"), nullptr);
  EXPECT_EQ(*handler_.requests()[0].header("host"), "localhost");
  server_->stop();
  server_->join();
  EXPECT_FALSE(std::filesystem::exists(path));  // removed at stop
}

TEST_F(ServiceServerTest, RefusesASocketPathThatIsNotASocket) {
  std::string path = folder_ + "/not-a-socket";
  { std::ofstream(path) << "x"; }
  ServiceServerConfig config;
  config.socket_path = path;
  ServiceServer server(handler_, config, limits_);
  std::string error;
  EXPECT_FALSE(server.open(error));
  EXPECT_NE(error.find("not a socket"), std::string::npos) << error;
}

TEST_F(ServiceServerTest, ReplacesAStaleSocketButNotALiveOne) {
  ASSERT_NO_FATAL_FAILURE(startServer({}, /*with_socket=*/true));
  std::string path = folder_ + "/service.sock";
  ServiceServerConfig config;
  config.socket_path = path;
  {
    ServiceServer second(handler_, config, limits_);
    std::string error;
    EXPECT_FALSE(second.open(error));
    EXPECT_NE(error.find("another process"), std::string::npos) << error;
  }
  server_->stop();
  server_->join();
  server_.reset();
  // A socket file nobody serves (a process that died).
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::close(fd);
  ServiceServer third(handler_, config, limits_);
  std::string error;
  EXPECT_TRUE(third.open(error)) << error;
}

TEST(CheckSocketFolderTest, RefusesWorldWritableFoldersWithoutStickyBit) {
  char folder[] = "/tmp/socket-folder-test-XXXXXX";
  ASSERT_NE(::mkdtemp(folder), nullptr);
  std::string path = std::string(folder) + "/s.sock";
  std::string error;
  EXPECT_TRUE(checkSocketFolder(path, error)) << error;
  ::chmod(folder, 0777);
  EXPECT_FALSE(checkSocketFolder(path, error));
  EXPECT_NE(error.find("world-writable"), std::string::npos) << error;
  ::chmod(folder, 01777);
  EXPECT_TRUE(checkSocketFolder(path, error)) << error;
  EXPECT_FALSE(checkSocketFolder(std::string(folder) + "/missing/s.sock", error));
  ::rmdir(folder);
}

// --- ServiceClient failures ---

TEST_F(ServiceServerTest, ClientAgainstAClosedPortFailsWithAReason) {
  // A port that was just free: bind, read the number, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  int port = ntohs(address.sin_port);
  ::close(fd);
  ServiceClient closed("", "http://127.0.0.1:" + std::to_string(port), "");
  closed.setTimeoutMs(1000);
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(closed.call("GET", "/", "", reply, error));
  EXPECT_NE(error.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << error;
  EXPECT_NE(error.find("refused"), std::string::npos) << error;

  ServiceClient no_socket(folder_ + "/nobody.sock", "", "");
  EXPECT_FALSE(no_socket.call("GET", "/", "", reply, error));
  EXPECT_NE(error.find("nobody.sock"), std::string::npos) << error;
}

TEST_F(ServiceServerTest, ClientTimesOutWhenTheServerNeverAnswers) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    exchange->setOnClientGone([this] { handler_.addEvent("gone"); });
    handler_.keep(std::move(exchange));
  });
  ServiceClient slow = client();
  slow.setTimeoutMs(200);
  auto started = std::chrono::steady_clock::now();
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(slow.call("GET", "/v1/never", "", reply, error));
  auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
  EXPECT_GE(elapsed, 180ms);
  EXPECT_LT(elapsed, 3000ms);
  // The client closed its socket: the server notices.
  EXPECT_TRUE(handler_.waitForEvents(2));
}

TEST_F(ServiceServerTest, ClientRefusesRepliesOverItsLimit) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([](const ServiceRequest& request, std::shared_ptr<ServiceExchange> e) {
    if (request.path == "/stream") {
      e->startStream(200, "text/plain");
      for (int i = 0; i < 10; ++i) e->sendChunk(std::string(20, 'x'));
      e->finishStream();
      return;
    }
    e->respond(ServiceResponse::json(200, std::string(1000, 'x')));
  });
  ServiceClient limited = client();
  limited.setMaxReplySize(100);
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(limited.call("GET", "/big", "", reply, error));
  EXPECT_NE(error.find("larger than 100 bytes"), std::string::npos) << error;
  EXPECT_FALSE(limited.call("GET", "/stream", "", reply, error));
  EXPECT_NE(error.find("larger than 100 bytes"), std::string::npos) << error;
  limited.setMaxReplySize(1000);
  ASSERT_TRUE(limited.call("GET", "/big", "", reply, error)) << error;
  EXPECT_EQ(reply.body.size(), 1000u);
}

TEST_F(ServiceServerTest, ClientReportsAConnectionClosedBeforeTheReply) {
  ASSERT_NO_FATAL_FAILURE(startServer());
  handler_.setBehaviour([this](const ServiceRequest&, std::shared_ptr<ServiceExchange> exchange) {
    handler_.keep(std::move(exchange));
    server_->stop();  // the connection closes with no answer
  });
  ServiceClient abandoned = client();
  abandoned.setTimeoutMs(3000);
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(abandoned.call("GET", "/v1/x", "", reply, error));
  EXPECT_NE(error.find("closed the connection"), std::string::npos) << error;
}

}  // namespace
}  // namespace spacegate
