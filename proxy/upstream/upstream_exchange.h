// UpstreamExchange: one request/response with an upstream, as the client
// side (an HTTP/1.1 connection, or an HTTP/2 stream) drives it. Implemented
// by UpstreamConnection (an HTTP/1.1 connection from the keep-alive pool)
// and Http2UpstreamStream (a stream of a multiplexed h2c session), so both
// codecs on the client side forward to either upstream protocol with the
// same calls.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "http/header_rewrite.h"
#include "http/message.h"
#include "net/buffer.h"

namespace spacegate {

class UpstreamConnection;

enum class UpstreamError {
  kConnectFailed,    // refused, unreachable, DNS failure: 502
  kConnectTimeout,   // 504
  kResponseTimeout,  // no response head in time, or silence inside the body: 504
  kClosedEarly,      // closed or reset before a complete response: 502
  kInvalidResponse,  // unparsable response: 502
};

const char* upstreamErrorName(UpstreamError error);
// The gateway's own answer when an upstream fails before its response
// started: 504 for the timeouts, else 502, and the reason line's detail.
int upstreamErrorStatus(UpstreamError error);
const char* upstreamErrorDetail(UpstreamError error);

using TrailerFields = std::vector<std::pair<std::string, std::string>>;

class UpstreamExchange {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    virtual void onUpstreamReady(UpstreamExchange& exchange) = 0;
    // The exchange failed; it closes itself and must not be used again.
    virtual void onUpstreamFailed(UpstreamExchange& exchange, UpstreamError error,
                                  bool response_byte_seen) = 0;
    virtual void onUpstreamResponseHead(ResponseHead& head) = 0;
    virtual void onUpstreamResponseBody(BufferSlice slice) = 0;
    virtual void onUpstreamResponseComplete(const TrailerFields& trailers) = 0;
    // Queued request bytes fell below the low-water mark.
    virtual void onUpstreamDrained() = 0;
    // Tunnel mode (HTTP/1.1 connections only).
    virtual void onUpstreamTunnelData(BufferSlice slice) = 0;
    virtual void onUpstreamTunnelEnd(bool error) = 0;
    // Everything one read brought has been reported: a good moment to send
    // what was gathered as one write.
    virtual void onUpstreamReadDone() = 0;
  };

  virtual ~UpstreamExchange() = default;

  virtual void setOwner(Owner* owner) = 0;
  virtual Owner* owner() const = 0;
  // Served over a connection that carried an earlier exchange.
  virtual bool reused() const = 0;
  virtual bool closing() const = 0;
  // Ends the exchange (and, for HTTP/1.1, its connection); no more callbacks.
  virtual void close() = 0;

  // The request: `method` sets the response's body rules; then the head,
  // body pieces and the end, framed by the exchange's protocol; submit()
  // sends what was written.
  virtual void startExchange(uint8_t method) = 0;
  virtual void writeRequestHead(const RequestHead& request,
                                const UpstreamRequestContext& context) = 0;
  virtual void writeRequestBody(const BufferSlice& slice) = 0;
  // The body's end (for a request that has one), with its trailers.
  virtual void writeRequestEnd(const TrailerFields& trailers) = 0;
  virtual void submitWrite() = 0;
  // Everything of the request was written: the response timeout starts.
  virtual void requestFullySent() = 0;
  virtual size_t queuedBytes() const = 0;
  // Response backpressure: stop and resume delivering response bytes.
  virtual void pauseReading() = 0;
  virtual void resumeReading() = 0;

  // The HTTP/1.1 connection under this exchange (tunnels need one), or null.
  virtual UpstreamConnection* connection() { return nullptr; }
};

}  // namespace spacegate
