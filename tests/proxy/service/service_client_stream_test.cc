// ServiceClient::stream(): body bytes reach the caller as they arrive
// (chunked and Content-Length bodies), the caller can stop reading, replies
// outside 2xx are collected for their error, the timeout applies between
// bytes and not to the whole body, and a stream cut short is an error. Also
// a Server-Sent Events stream from a real ServiceServer read through
// SseReader.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "service/service_client.h"
#include "service/service_server.h"
#include "service/sse_reader.h"

namespace spacegate {
namespace {

using namespace std::chrono_literals;

// A one-connection server on 127.0.0.1: reads the request head, then runs
// `script` with the connected socket (which writes what the test wants, when
// it wants), then closes.
class ScriptedServer {
 public:
  using Script = std::function<void(int fd)>;

  explicit ScriptedServer(Script script) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      std::string head;
      char buffer[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        ssize_t received = ::recv(fd, buffer, sizeof buffer, 0);
        if (received <= 0) break;
        head.append(buffer, static_cast<size_t>(received));
      }
      script(fd);
      ::close(fd);
    });
  }
  ~ScriptedServer() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }

  ServiceClient client() const {
    return ServiceClient("", "http://127.0.0.1:" + std::to_string(port_), "");
  }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
};

void sendText(int fd, const std::string& text) {
  ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
}

// A flag the server's script waits on and the test raises.
class Gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  bool waitOpen(std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
};

const char kChunkedHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

TEST(ServiceClientStreamTest, ChunksReachTheCallerBeforeTheStreamEnds) {
  Gate first_seen;
  ScriptedServer server([&](int fd) {
    sendText(fd, std::string(kChunkedHead) + "6\r\nfirst \r\n");
    // The second chunk is written only once the client has the first one.
    if (!first_seen.waitOpen()) return;
    sendText(fd, "6\r\nsecond\r\n0\r\n\r\n");
  });
  std::vector<std::string> chunks;
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(server.client().stream(
      "GET", "/events", "",
      [&](std::string_view chunk) {
        chunks.emplace_back(chunk);
        first_seen.open();
        return true;
      },
      reply, error))
      << error;
  EXPECT_EQ(reply.status, 200);
  EXPECT_TRUE(reply.body.empty());
  std::string joined;
  for (const std::string& chunk : chunks) joined += chunk;
  EXPECT_EQ(joined, "first second");
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks.front(), "first ");
  bool content_type_seen = false;
  for (const auto& [name, value] : reply.headers) {
    if (name == "content-type") content_type_seen = value == "text/event-stream";
  }
  EXPECT_TRUE(content_type_seen);
}

TEST(ServiceClientStreamTest, ContentLengthBodyIsHandedOverToo) {
  ScriptedServer server([](int fd) {
    sendText(fd, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234");
    std::this_thread::sleep_for(20ms);
    sendText(fd, "56789");
  });
  std::string body;
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(server.client().stream(
      "GET", "/x", "", [&](std::string_view chunk) { return body.append(chunk), true; }, reply,
      error))
      << error;
  EXPECT_EQ(body, "0123456789");
}

TEST(ServiceClientStreamTest, CallerStopsReadingAnEndlessStream) {
  Gate done;
  ScriptedServer server([&](int fd) {
    sendText(fd, std::string(kChunkedHead) + "5\r\nhello\r\n");
    done.waitOpen(10'000ms);  // never finishes the stream on its own
  });
  ServiceClient client = server.client();
  client.setTimeoutMs(10'000);
  auto started = std::chrono::steady_clock::now();
  ServiceReply reply;
  std::string error;
  int calls = 0;
  EXPECT_TRUE(client.stream(
      "GET", "/events", "", [&](std::string_view) { return ++calls, false; }, reply, error))
      << error;
  EXPECT_EQ(calls, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  done.open();
}

TEST(ServiceClientStreamTest, ErrorRepliesAreCollectedNotStreamed) {
  ScriptedServer server([](int fd) {
    std::string body = "{\"error\":\"no such Gitspace\"}\n";
    sendText(fd, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  ServiceReply reply;
  std::string error;
  bool called = false;
  ASSERT_TRUE(server.client().stream(
      "GET", "/events", "", [&](std::string_view) { return called = true; }, reply, error))
      << error;
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(reply.body, "{\"error\":\"no such Gitspace\"}\n");
  EXPECT_FALSE(called);
}

TEST(ServiceClientStreamTest, TimeoutAppliesBetweenBytesNotToTheWholeBody) {
  // 8 keep-alive chunks 100 ms apart: 800 ms in all, over a 400 ms timeout.
  ScriptedServer server([](int fd) {
    sendText(fd, kChunkedHead);
    for (int i = 0; i < 8; ++i) {
      std::this_thread::sleep_for(100ms);
      sendText(fd, "4\r\n:\n\n\n\r\n");
    }
    sendText(fd, "0\r\n\r\n");
  });
  ServiceClient client = server.client();
  client.setTimeoutMs(400);
  std::string body;
  ServiceReply reply;
  std::string error;
  EXPECT_TRUE(client.stream(
      "GET", "/events", "", [&](std::string_view chunk) { return body.append(chunk), true; }, reply,
      error))
      << error;
  EXPECT_EQ(body.size(), 32u);
}

TEST(ServiceClientStreamTest, SilenceLongerThanTheTimeoutIsAnError) {
  Gate done;
  ScriptedServer server([&](int fd) {
    sendText(fd, std::string(kChunkedHead) + "3\r\nabc\r\n");
    done.waitOpen(10'000ms);
  });
  ServiceClient client = server.client();
  client.setTimeoutMs(200);
  std::string body;
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(client.stream(
      "GET", "/events", "", [&](std::string_view chunk) { return body.append(chunk), true; }, reply,
      error));
  EXPECT_EQ(body, "abc");
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
  done.open();
}

TEST(ServiceClientStreamTest, StreamCutShortIsAnError) {
  ScriptedServer server([](int fd) { sendText(fd, std::string(kChunkedHead) + "3\r\nabc\r\n"); });
  std::string body;
  ServiceReply reply;
  std::string error;
  EXPECT_FALSE(server.client().stream(
      "GET", "/events", "", [&](std::string_view chunk) { return body.append(chunk), true; }, reply,
      error));
  EXPECT_EQ(body, "abc");
  EXPECT_NE(error.find("closed the connection"), std::string::npos) << error;
}

TEST(ServiceClientStreamTest, CallStillCollectsAndBoundsTheBody) {
  ScriptedServer server([](int fd) {
    sendText(fd, std::string(kChunkedHead) + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  });
  ServiceReply reply;
  std::string error;
  ASSERT_TRUE(server.client().call("GET", "/x", "", reply, error)) << error;
  EXPECT_EQ(reply.body, "hello world");
  ScriptedServer big([](int fd) {
    sendText(fd, std::string(kChunkedHead) + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  });
  ServiceClient limited = big.client();
  limited.setMaxReplySize(8);
  EXPECT_FALSE(limited.call("GET", "/x", "", reply, error));
  EXPECT_NE(error.find("larger than 8 bytes"), std::string::npos) << error;
}

// A ServiceServer that answers with an SSE stream from another thread.
class EventStreamHandler : public ServiceHandler {
 public:
  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override {
    exchange->startStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    threads_.emplace_back([exchange] {
      exchange->sendChunk("id: 1\nevent: gitspace_created\ndata: {\"n\":1}\n\n");
      std::this_thread::sleep_for(20ms);
      exchange->sendChunk(": keep-alive\n\n");
      exchange->sendChunk("id: 2\nevent: agent_setup_log\ndata: line one\ndata: ");
      std::this_thread::sleep_for(20ms);
      exchange->sendChunk(
          "line two\n\nid: 3\nevent: state_changed\ndata: {\"to\":\"running\"}\n\n");
      exchange->finishStream();
    });
  }
  void joinThreads() {
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
  }
  ~EventStreamHandler() override { joinThreads(); }

 private:
  std::vector<std::thread> threads_;
};

TEST(ServiceClientStreamTest, ServerSentEventsFromAServiceServer) {
  ::signal(SIGPIPE, SIG_IGN);
  EventStreamHandler handler;
  Limits limits;
  ServiceServerConfig config;
  config.name = "test";
  config.tcp_enabled = true;
  std::string error;
  ASSERT_TRUE(parseSocketAddress("127.0.0.1:1", config.tcp_address, error)) << error;
  reinterpret_cast<sockaddr_in*>(&config.tcp_address.ip)->sin_port = 0;
  config.tcp_address.port = 0;
  {
    ServiceServer server(handler, config, limits);
    ASSERT_TRUE(server.open(error)) << error;
    server.start();
    ServiceClient client("", "http://127.0.0.1:" + std::to_string(server.tcpPort()), "");
    SseReader reader;
    std::vector<SseEvent> events;
    ServiceReply reply;
    ASSERT_TRUE(client.stream(
        "GET", "/api/v1/gitspaces/gs-1/events", "",
        [&](std::string_view chunk) {
          return reader.feed(chunk, [&](const SseEvent& event) {
            events.push_back(event);
            return true;
          }) == SseReader::Status::kMore;
        },
        reply, error))
        << error;
    handler.joinThreads();
    server.stop();
    server.join();
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].type, "gitspace_created");
    EXPECT_EQ(events[1].data, "line one\nline two");
    EXPECT_EQ(events[2].id, "3");
    EXPECT_EQ(events[2].data, "{\"to\":\"running\"}");
    EXPECT_EQ(reader.lastEventId(), "3");
  }
}

}  // namespace
}  // namespace spacegate
