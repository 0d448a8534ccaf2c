// The agents' multi-stream TCP bandwidth test (`fleet fabric --tests tcp`). The receiver opens a
// port for one test; the sender connects `streams` connections and writes for `duration`; the
// receiver counts what arrives and reports it back on each connection, so the figure is what
// crossed the link (iperf3's receiver side), not what was queued.
//
// A data connection carries, in order: the sender's 32-byte one-time token, test data until the
// sender shuts its side down, then the receiver's 24-byte report (bytes received, first and last
// byte times in ns on the receiver's monotonic clock, little-endian u64s). Nothing on it is a
// command. Connections from any other address, or with a wrong token, are closed at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::agent {

// The spec with its limits checked: InvalidArgument naming the field, the range and the fix.
absl::Status ValidateTcpSpec(const v1::FabricTcpSpec& spec);

// Example:
//   ASSIGN_OR_RETURN(auto receiver, TcpReceiver::Open("10.0.0.2", "10.0.0.3", spec));
//   response.set_port(receiver->port());   // the receiver runs on its own thread
//   ... it closes by itself when the test ends, or at duration + 10 s ...
class TcpReceiver {
 public:
  // Binds `bind_ip`:0 and starts serving. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<TcpReceiver>> Open(const std::string& bind_ip,
                                                           const std::string& peer_ip,
                                                           const v1::FabricTcpSpec& spec);
  ~TcpReceiver();  // stops serving and joins the thread
  TcpReceiver(const TcpReceiver&) = delete;
  TcpReceiver& operator=(const TcpReceiver&) = delete;

  uint16_t port() const { return port_; }
  // True once every admitted stream has reported, or the time limit has passed.
  bool done() const { return done_.load(); }
  // Connections closed for a wrong address or token.
  int rejected() const { return rejected_.load(); }

 private:
  TcpReceiver(UniqueFd listener, uint16_t port, std::string peer_ip, v1::FabricTcpSpec spec);
  void Serve();

  UniqueFd listener_;
  const uint16_t port_;
  const std::string peer_ip_;
  const v1::FabricTcpSpec spec_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<int> rejected_{0};
  std::thread thread_;
};

// Runs the sending side against `target` ("HOST:PORT" of a TcpReceiver), binding each
// connection to `source_ip` (empty: any). Bounded by the duration plus 10 s. Unavailable when the
// receiver cannot be reached or closes a stream early (wrong token), naming which.
absl::StatusOr<v1::FabricSendResponse> RunTcpSender(const std::string& source_ip,
                                                    const std::string& target,
                                                    const v1::FabricTcpSpec& spec);

}  // namespace fleet::agent
