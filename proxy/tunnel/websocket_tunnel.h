// WebSocketTunnel: the gateway's end of its WebSocket tunnel endpoint
// (`/.spacegate/tunnel/<port>`, docs/tunnels.md). The client speaks
// WebSocket; the Gitspace port speaks raw bytes. Client frames are decoded
// in the read buffer they arrived in (unmasked in place) and their binary
// payload goes upstream as slices of that buffer; upstream reads go to the
// client as the same slices behind a generated frame header. Nothing is
// copied but control frames (at most 125 bytes). No I/O here: the owner
// hands in reads and sends the writes it gets back.
#pragma once

#include <cstdint>
#include <string>

#include "net/buffer.h"
#include "net/write_queue.h"
#include "tunnel/websocket_frame.h"

namespace spacegate {

class WebSocketTunnel {
 public:
  enum class Result {
    kContinue,      // keep going
    kClientClosed,  // the client sent a close frame: half-close the upstream
    kFailed,        // a protocol error: a close frame is queued for the client; end
  };

  // Client bytes (one read, in a buffer the gateway owns and may rewrite).
  // Binary payload is appended to `to_upstream`; pongs and close frames to
  // `to_client`.
  Result fromClient(const BufferSlice& read, OutboundWrite& to_upstream, OutboundWrite& to_client);
  // Upstream bytes: one binary frame to the client.
  void fromUpstream(const BufferSlice& read, OutboundWrite& to_client);
  // The upstream finished (EOF): a normal close frame to the client.
  void upstreamFinished(OutboundWrite& to_client);

  const char* failure() const { return failure_; }
  bool clientClosed() const { return client_closed_; }

 private:
  void appendFrame(OutboundWrite& out, WebSocketOpcode opcode, std::string_view payload);
  Result closeWith(OutboundWrite& to_client, uint16_t code, const char* reason);

  WebSocketFrameDecoder decoder_;
  std::string control_payload_;  // the control frame being read (<= 125 bytes)
  bool close_sent_ = false;
  bool client_closed_ = false;
  bool binary_message_ = false;  // inside a binary message (continuations allowed)
  const char* failure_ = "";
};

}  // namespace spacegate
