// DiscoveryResponder: receive loop, PROBE answers, ADOPT checks against answered nonces.
#include "agent/discovery/discovery_responder.h"

#include <algorithm>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fleet::agent {
namespace {

constexpr absl::string_view kComponent = "discovery";
// How long one receive waits, which bounds how long Stop() takes.
constexpr absl::Duration kReceivePoll = absl::Milliseconds(50);

}  // namespace

DiscoveryResponder::DiscoveryResponder(DiscoveryResponderOptions options)
    : options_(std::move(options)) {}

DiscoveryResponder::~DiscoveryResponder() { Stop(); }

absl::Status DiscoveryResponder::Start() {
  if (socket_.has_value()) {
    return absl::FailedPreconditionError("discovery responder already started");
  }
  if (!options_.answer) {
    return absl::InvalidArgumentError("discovery responder needs an answer callback");
  }
  absl::StatusOr<UdpSocket> socket = UdpSocket::Bind(options_.bind_ip, options_.udp_port);
  if (!socket.ok()) {
    return absl::Status(socket.status().code(),
                        absl::StrCat("discovery responder: ", socket.status().message()));
  }
  if (options_.join_multicast && options_.bind_ip == "0.0.0.0") {
    absl::StatusOr<std::vector<BroadcastTarget>> interfaces = ListBroadcastTargets();
    std::vector<std::string> addresses;
    if (interfaces.ok()) {
      for (const BroadcastTarget& interface : *interfaces) addresses.push_back(interface.address);
    }
    if (addresses.empty()) addresses.push_back("0.0.0.0");  // let the kernel pick
    for (const std::string& address : addresses) {
      if (absl::Status status = socket->JoinMulticast(discovery::kMulticastGroup, address);
          !status.ok()) {
        Log(LogLevel::kWarning, kComponent,
            "multicast join failed; broadcast and unicast probes still work",
            {{"error", status.message()}});
      }
    }
  }
  port_ = socket->port();
  socket_.emplace(*std::move(socket));
  stopping_.store(false);
  thread_ = std::thread([this] { Run(); });
  Log(LogLevel::kInfo, kComponent, "responder listening",
      {{"address", absl::StrCat(options_.bind_ip, ":", port_)}});
  return absl::OkStatus();
}

void DiscoveryResponder::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
}

DiscoveryResponder::Counters DiscoveryResponder::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void DiscoveryResponder::Run() {
  while (!stopping_.load()) {
    absl::StatusOr<std::optional<Datagram>> datagram = socket_->Receive(kReceivePoll);
    if (!datagram.ok()) {
      // poll/recvfrom failing on a valid socket is not something a peer can cause; log and
      // keep going rather than spin.
      Log(LogLevel::kError, kComponent, "receive failed", {{"error", datagram.status().message()}});
      absl::SleepFor(kReceivePoll);
      continue;
    }
    if (datagram->has_value()) Handle(**datagram);
  }
}

void DiscoveryResponder::Handle(const Datagram& datagram) {
  absl::StatusOr<discovery::Decoded> decoded = discovery::Decode(datagram.bytes, options_.key);
  if (!decoded.ok()) {
    Dropped(Drop::kMalformed, datagram, decoded.status().message());
    return;
  }
  if (const auto* probe = std::get_if<discovery::Probe>(&decoded->message)) {
    HandleProbe(*probe, datagram);
  } else if (const auto* adopt = std::get_if<discovery::Adopt>(&decoded->message)) {
    if (!decoded->proven) {
      Dropped(Drop::kBadMac, datagram, "proof failed: sender does not hold this node's key");
      return;
    }
    HandleAdopt(*adopt, datagram);
  } else {
    Dropped(Drop::kWrongType, datagram, "an ANSWER; agents only take PROBE and ADOPT");
  }
}

void DiscoveryResponder::HandleProbe(const discovery::Probe& probe, const Datagram& datagram) {
  absl::Time now = absl::Now();
  if (now - window_start_ >= absl::Seconds(1)) {
    window_start_ = now;
    answers_in_window_ = 0;
  }
  if (++answers_in_window_ > kMaxAnswersPerSecond) {
    {
      absl::MutexLock lock(&mu_);
      ++counters_.rate_limited;
    }
    if (!logged_rate_limit_) {
      logged_rate_limit_ = true;
      Log(LogLevel::kWarning, kComponent,
          "too many probes; answering at most 20 a second (further drops only counted)",
          {{"source", absl::StrCat(datagram.source_ip, ":", datagram.source_port)}});
    }
    return;
  }
  discovery::Answer answer = options_.answer();
  answer.nonce = probe.nonce;
  // Limits first, then drop interfaces (then RDMA devices) from the end until it fits.
  bool trimmed = answer.interfaces.size() > discovery::kMaxInterfaces ||
                 answer.rdma_devices.size() > discovery::kMaxRdmaDevices;
  if (answer.interfaces.size() > discovery::kMaxInterfaces) {
    answer.interfaces.resize(discovery::kMaxInterfaces);
  }
  if (answer.rdma_devices.size() > discovery::kMaxRdmaDevices) {
    answer.rdma_devices.resize(discovery::kMaxRdmaDevices);
  }
  for (discovery::InterfaceInfo& interface : answer.interfaces) {
    if (interface.addresses.size() > discovery::kMaxAddressesPerInterface) {
      interface.addresses.resize(discovery::kMaxAddressesPerInterface);
      trimmed = true;
    }
  }
  absl::StatusOr<std::string> encoded = discovery::Encode(answer, options_.key);
  while (encoded.status().code() == absl::StatusCode::kResourceExhausted &&
         !(answer.interfaces.empty() && answer.rdma_devices.empty())) {
    if (!answer.interfaces.empty()) {
      answer.interfaces.pop_back();
    } else {
      answer.rdma_devices.pop_back();
    }
    trimmed = true;
    encoded = discovery::Encode(answer, options_.key);
  }
  if (trimmed && !logged_trim_) {
    logged_trim_ = true;
    Log(LogLevel::kWarning, kComponent, "answer trimmed to fit one datagram",
        {{"interfaces", absl::StrCat(answer.interfaces.size())},
         {"rdma_devices", absl::StrCat(answer.rdma_devices.size())}});
  }
  absl::Status status = encoded.status();
  if (encoded.ok()) status = socket_->SendTo(datagram.source_ip, datagram.source_port, *encoded);
  if (!status.ok()) {
    {
      absl::MutexLock lock(&mu_);
      ++counters_.answer_failures;
    }
    if (!logged_answer_failure_) {
      logged_answer_failure_ = true;
      Log(LogLevel::kError, kComponent, "cannot answer probe (further failures only counted)",
          {{"controller", probe.controller_id},
           {"source", absl::StrCat(datagram.source_ip, ":", datagram.source_port)},
           {"error", status.message()}});
    }
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++counters_.answered;
  }
  // A probe arrives once per path (broadcast, multicast, unicast); remember its nonce once.
  bool known = std::any_of(answered_.begin(), answered_.end(),
                           [&](const AnsweredProbe& seen) { return seen.nonce == probe.nonce; });
  if (!known) {
    answered_.push_back(AnsweredProbe{.nonce = probe.nonce, .node_id = answer.node_id});
    if (answered_.size() > kRememberedProbes) answered_.pop_front();
  }
}

void DiscoveryResponder::HandleAdopt(const discovery::Adopt& adopt, const Datagram& datagram) {
  auto it = std::find_if(answered_.begin(), answered_.end(), [&](const AnsweredProbe& seen) {
    return seen.nonce == adopt.nonce && seen.node_id == adopt.node_id;
  });
  if (it == answered_.end()) {
    Dropped(Drop::kUnknownNonce, datagram,
            "ADOPT for a probe this node did not recently answer, or for another node id");
    return;
  }
  if (it->adopted) {
    Dropped(Drop::kReplayedAdopt, datagram, "ADOPT for a probe nonce already adopted");
    return;
  }
  it->adopted = true;
  Log(LogLevel::kInfo, kComponent, "adopted",
      {{"controller", adopt.controller_address},
       {"source", absl::StrCat(datagram.source_ip, ":", datagram.source_port)}});
  if (options_.on_adopt) options_.on_adopt(adopt.controller_address);
  // Counted once handed over, so a reader that sees the count also sees the adoption's effect.
  absl::MutexLock lock(&mu_);
  ++counters_.adopted;
}

void DiscoveryResponder::Dropped(Drop reason, const Datagram& datagram, absl::string_view detail) {
  static constexpr absl::string_view kNames[] = {"malformed", "bad_mac", "wrong_type",
                                                 "unknown_nonce", "replayed_adopt"};
  static_assert(std::size(kNames) == static_cast<size_t>(Drop::kCount));
  {
    absl::MutexLock lock(&mu_);
    uint64_t Counters::*const kFields[] = {&Counters::malformed, &Counters::bad_mac,
                                           &Counters::wrong_type, &Counters::unknown_nonce,
                                           &Counters::replayed_adopt};
    ++(counters_.*kFields[static_cast<size_t>(reason)]);
  }
  bool& logged = logged_[static_cast<size_t>(reason)];
  if (logged) return;
  logged = true;
  // Anyone on the fabric can send these, so each reason is logged once and then only counted.
  Log(LogLevel::kWarning, kComponent, "datagram dropped (further drops for this reason counted)",
      {{"reason", kNames[static_cast<size_t>(reason)]},
       {"source", absl::StrCat(datagram.source_ip, ":", datagram.source_port)},
       {"detail", detail}});
}

}  // namespace fleet::agent
