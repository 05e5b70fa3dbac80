// TunnelPump: the byte copy of `spacegatectl ssh-proxy` once the gateway
// has opened the tunnel: stdin to the gateway's socket and the socket to
// stdout, with poll(2), until both directions are done. Two framings: raw
// bytes after a CONNECT's 200 (stdin's EOF becomes shutdown(SHUT_WR), the
// socket's EOF ends the tunnel), and the WebSocket tunnel endpoint's binary
// frames after its 101 (client frames masked with a fresh random key each,
// stdin's EOF becomes a close frame, the gateway's close frame ends the
// tunnel, pings are answered). Each direction reads only while the other
// side has taken what it was given (up to a high-water mark), so a slow ssh
// or a slow gateway holds at most that much here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tunnel/websocket_frame.h"

namespace spacegate {

// Bytes waiting to be written, consumed from the front.
class PendingBytes {
 public:
  void append(std::string_view bytes) { bytes_.append(bytes); }
  std::string_view front() const { return std::string_view(bytes_).substr(head_); }
  size_t size() const { return bytes_.size() - head_; }
  bool empty() const { return size() == 0; }
  void consume(size_t count);
  void clear() {
    bytes_.clear();
    head_ = 0;
  }

 private:
  std::string bytes_;
  size_t head_ = 0;
};

class TunnelPump {
 public:
  enum class Framing {
    kRaw,        // CONNECT: the socket carries the bytes as they are
    kWebSocket,  // the WebSocket tunnel endpoint: binary frames, client side
  };

  // `socket`: connected, the handshake done; the pump makes it non-blocking
  // and leaves closing it to the caller. `input`/`output`: normally stdin
  // and stdout (their flags are restored when run() returns).
  TunnelPump(int socket, Framing framing, int input = 0, int output = 1);

  // Copies until the tunnel ends. `early` holds bytes that came with the
  // handshake's response head (already tunnel bytes). Returns the exit code
  // (0: both ends finished; 1: the tunnel broke, the reason printed).
  int run(std::string_view early);

 private:
  // Where the tunnel is.
  enum class State {
    kOpen,      // copying both ways (a direction may already be finished)
    kFinished,  // the tunnel ended; what is left for stdout is written, then run() returns
    kFailed,    // broke: run() returns 1 at once
  };

  void readInput();
  void readSocket();
  void writeSocket();
  void writeOutput();
  void inputEnded();
  void socketEnded();
  void fromSocket(char* data, size_t size);
  void fromGatewayFrame(char* data, size_t size);
  void finishControlFrame();
  void sendFrame(WebSocketOpcode opcode, std::string_view payload);
  void sendClose(uint16_t code, std::string_view reason);
  void fail(std::string reason);
  // kFinished when nothing is left to do on the socket side.
  void checkFinished();

  int socket_;
  Framing framing_;
  int input_;
  int output_;
  State state_ = State::kOpen;
  PendingBytes to_socket_;
  PendingBytes to_output_;
  bool input_open_ = true;
  bool socket_write_shut_ = false;  // raw: SHUT_WR sent after input's EOF
  bool socket_eof_ = false;
  // WebSocket only.
  WebSocketFrameDecoder decoder_;
  WebSocketOpcode frame_opcode_ = WebSocketOpcode::kBinary;
  std::string control_payload_;  // of the control frame being read (<= 125 bytes)
  bool close_sent_ = false;
  bool close_received_ = false;
};

}  // namespace spacegate
