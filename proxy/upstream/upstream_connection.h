// UpstreamConnection: one HTTP/1.1 connection from a worker to an upstream
// (TCP or unix socket). It connects (with a timeout), writes request heads
// and bodies handed to it, parses the response with the project's HTTP/1
// codec and reports head, body slices and completion to its owner. Between
// exchanges it sits idle in the UpstreamPool, reading into a tiny shared
// scratch space only to notice the upstream closing it. After a 101 it
// becomes one end of a tunnel and reports raw bytes.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/limits.h"
#include "http/message.h"
#include "http1/message_parser.h"
#include "net/deadline_timer.h"
#include "net/inbound_buffer.h"
#include "net/socket_address.h"
#include "net/write_queue.h"
#include "tls/tls_config.h"
#include "tls/tls_connection.h"
#include "upstream/upstream_exchange.h"

namespace spacegate {

class UpstreamPool;

class UpstreamConnection : public UpstreamExchange,
                           private WriteQueue::Listener,
                           private Http1MessageParser::BodyHandler {
 public:
  using Owner = UpstreamExchange::Owner;

  UpstreamConnection(UpstreamPool& pool, std::string key, const Limits& limits);

  // Resolves (host names, through the worker's DnsResolver) and connects.
  // The connect timeout covers both. Reports onUpstreamReady or onUpstreamFailed.
  // With `tls`, a TLS handshake follows the connect (both under the
  // connect timeout) before the owner hears onUpstreamReady.
  void start(const SocketAddress& address, const UpstreamTlsOptions* tls = nullptr);
  void setOwner(Owner* owner) override { owner_ = owner; }
  Owner* owner() const override { return owner_; }
  const std::string& key() const { return key_; }
  bool reused() const override { return exchanges_ > 0; }
  uint64_t exchanges() const { return exchanges_; }

  // The write side: fill prepare(), then submit().
  OutboundWrite& prepareWrite() { return writes_.prepare(); }
  void submitWrite() override;
  size_t queuedBytes() const override { return writes_.queuedBytes(); }
  // The request (head and body) has been handed over in full; the response
  // timeout starts now. `method` tells the parser the body rules.
  void startExchange(uint8_t method) override;
  void writeRequestHead(const RequestHead& request, const UpstreamRequestContext& context) override;
  void writeRequestBody(const BufferSlice& slice) override;
  void writeRequestEnd(const TrailerFields& trailers) override;
  UpstreamConnection* connection() override { return this; }
  void requestFullySent() override;

  void pauseReading() override;
  void resumeReading() override;

  // Tunnel mode after a 101: remaining parsed bytes are delivered as tunnel data.
  void becomeTunnel();
  void shutdownWrite();
  // Tunnel mode: the socket's descriptor, for a SpliceTunnel to take over
  // while this connection's own reading is paused and its writes done.
  int socketDescriptor();
  bool quietForSplice() const {
    return state_ == State::kTunnel && !reading_ && writes_.pendingWrites() == 0 &&
           inbound_.empty();
  }
  // Tunnel mode: the response head and read buffer are no longer needed.
  void releaseTunnelBuffers();

  // Called by the pool.
  void enterIdle(uint64_t idle_timeout_ms);
  void leaveIdle();
  // Closes the connection; no further owner callbacks.
  void close() override;
  bool closing() const override { return state_ == State::kClosed; }
  // No unread bytes after the last response: safe to reuse (bytes nobody
  // asked for would be taken for the next response).
  bool cleanForReuse() const { return inbound_.empty() && response_complete_; }

 private:
  enum class State {
    kResolving,   // waiting for DNS; only the timer handle is open
    kConnecting,  // TCP/unix connect in progress, connect timer armed
    kIdle,        // in the pool, between exchanges
    kActive,      // owned by an exchange: request and response in flight
    kTunnel,      // after 101: raw bytes both ways
    kClosed,      // uv_close issued; deleted when the handles are closed
  };

  static void onConnect(uv_connect_t* request, int status);
  static void onAllocate(uv_handle_t* handle, size_t suggested, uv_buf_t* buffer);
  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer);
  // Plaintext bytes were added to inbound_.
  void handlePlaintext();
  // The upstream's end of the stream (EOF or an error).
  void handleEnd(ssize_t nread);
  // TLS: ciphertext read from the socket (the handshake, or records).
  void handleCipherText(const char* data, size_t size);
  void startTls();
  static void onTimer(void* owner);
  static void onShutdown(uv_shutdown_t* request, int status);
  static void onClosed(uv_handle_t* handle);

  void onWriteDone(WriteQueue& queue, int status) override;
  void onBodyData(const char* data, size_t size) override;
  void onMessageComplete(const std::vector<std::pair<std::string, std::string>>& trailers) override;

  void connectTo(const sockaddr_storage& address, uint16_t port);
  void processInput();
  // processInput(), then tells the owner the read is done.
  void deliverInput();
  void fail(UpstreamError error);
  void armTimer(uint64_t milliseconds);
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&socket_); }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&socket_); }

  UpstreamPool& pool_;
  std::string key_;
  bool wants_tls_ = false;
  UpstreamTlsOptions tls_options_;      // with wants_tls_; server_name filled in
  std::unique_ptr<TlsConnection> tls_;  // from the connect on
  const Limits& limits_;
  Owner* owner_ = nullptr;
  bool chunked_request_ = false;  // the request body goes up with chunked framing
  State state_ = State::kResolving;
  uint64_t dns_ticket_ = 0;
  bool socket_open_ = false;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } socket_;
  DeadlineTimer timer_;
  uv_connect_t connect_request_;
  uv_shutdown_t shutdown_request_;
  int open_handles_ = 0;
  bool reading_ = false;
  bool read_paused_ = false;
  bool response_head_seen_ = false;
  bool response_byte_seen_ = false;
  bool response_complete_ = false;
  bool request_sent_ = false;
  uint64_t exchanges_ = 0;
  InboundBuffer inbound_;
  WriteQueue writes_;
  Http1MessageParser parser_;
  ResponseHead head_;
  const std::vector<std::pair<std::string, std::string>>* completed_trailers_ = nullptr;
};

}  // namespace spacegate
