#include "tunnel/websocket_tunnel.h"

namespace spacegate {

void WebSocketTunnel::appendFrame(OutboundWrite& out, WebSocketOpcode opcode,
                                  std::string_view payload) {
  char header[kMaxWebSocketFrameHeader];
  size_t size = encodeWebSocketFrameHeader(header, true, opcode, payload.size(), nullptr);
  out.appendGenerated(std::string_view(header, size));
  out.appendGenerated(payload);
}

WebSocketTunnel::Result WebSocketTunnel::closeWith(OutboundWrite& to_client, uint16_t code,
                                                   const char* reason) {
  failure_ = reason;
  if (!close_sent_) {
    close_sent_ = true;
    appendFrame(to_client, WebSocketOpcode::kClose, webSocketClosePayload(code, reason));
  }
  return Result::kFailed;
}

WebSocketTunnel::Result WebSocketTunnel::fromClient(const BufferSlice& read,
                                                    OutboundWrite& to_upstream,
                                                    OutboundWrite& to_client) {
  // The read buffer belongs to the gateway: unmasking in place is what lets
  // the payload go upstream without a copy.
  char* data = const_cast<char*>(read.data);
  size_t size = read.size;
  Result result = Result::kContinue;
  while (true) {
    size_t consumed = 0;
    std::string_view payload;
    auto event = decoder_.next(data, size, consumed, payload);
    data += consumed;
    size -= consumed;
    const WebSocketFrameHeader& header = decoder_.header();
    switch (event) {
      case WebSocketFrameDecoder::Event::kNeedMore: return result;
      case WebSocketFrameDecoder::Event::kError:
        return closeWith(to_client, decoder_.errorCode(), decoder_.errorReason());
      case WebSocketFrameDecoder::Event::kHeader:
        if (header.opcode == WebSocketOpcode::kText ||
            (header.opcode == WebSocketOpcode::kContinuation && !binary_message_)) {
          return closeWith(to_client, kWebSocketCloseUnsupportedData,
                           "the tunnel carries binary frames only");
        }
        if (header.opcode == WebSocketOpcode::kBinary) binary_message_ = true;
        if (client_closed_ && !isWebSocketControlOpcode(header.opcode)) {
          return closeWith(to_client, kWebSocketCloseProtocolError, "data after a close frame");
        }
        control_payload_.clear();
        break;
      case WebSocketFrameDecoder::Event::kPayload:
        if (isWebSocketControlOpcode(header.opcode)) {
          control_payload_.append(payload);
        } else {
          to_upstream.appendSlice(BufferSlice{read.slab, payload.data(), payload.size()});
        }
        break;
      case WebSocketFrameDecoder::Event::kFrameEnd:
        switch (header.opcode) {
          case WebSocketOpcode::kPing:
            if (!close_sent_) appendFrame(to_client, WebSocketOpcode::kPong, control_payload_);
            break;
          case WebSocketOpcode::kClose: {
            uint16_t code = 0;
            std::string_view reason;
            if (!parseWebSocketClosePayload(control_payload_, code, reason)) {
              return closeWith(to_client, kWebSocketCloseProtocolError, "bad close frame");
            }
            client_closed_ = true;
            result = Result::kClientClosed;
            break;
          }
          case WebSocketOpcode::kBinary:
          case WebSocketOpcode::kContinuation:
            if (header.fin) binary_message_ = false;
            break;
          default: break;  // pong: nothing to do
        }
        break;
    }
  }
}

void WebSocketTunnel::fromUpstream(const BufferSlice& read, OutboundWrite& to_client) {
  if (close_sent_ || read.size == 0) return;
  char header[kMaxWebSocketFrameHeader];
  size_t size =
      encodeWebSocketFrameHeader(header, true, WebSocketOpcode::kBinary, read.size, nullptr);
  to_client.appendGenerated(std::string_view(header, size));
  to_client.appendSlice(read);
}

void WebSocketTunnel::upstreamFinished(OutboundWrite& to_client) {
  if (close_sent_) return;
  close_sent_ = true;
  appendFrame(to_client, WebSocketOpcode::kClose,
              webSocketClosePayload(kWebSocketCloseNormal, "the port closed the connection"));
}

}  // namespace spacegate
