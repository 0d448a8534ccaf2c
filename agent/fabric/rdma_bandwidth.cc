// The RDMA test engine: perftest's ib_write_bw and ib_write_lat over the verbs seam.
#include "agent/fabric/rdma_bandwidth.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

// wr_id of latency WRITEs; bandwidth WRITEs carry their queue pair's index.
constexpr uint64_t kLatencyWrId = ~uint64_t{0};
constexpr size_t kSlotBytes = 64;  // a cache line each, so ping and pong never share one

// perftest's defaults (perftest_parameters.h: DEF_TX_BW 128, DEF_CQ_MOD 100,
// MSG_SIZE_CQ_MOD_LIMIT 8192); 4 queue pairs and 64 KiB as the issue asks (ib_write_bw -q 4).
constexpr uint32_t kDefaultQueuePairs = 4;
constexpr uint32_t kDefaultMessageBytes = 65536;
constexpr uint32_t kDefaultTxDepth = 128;
constexpr uint32_t kDefaultCqMod = 100;
constexpr uint32_t kCqModMessageLimit = 8192;

uint64_t LoadSequence(const uint8_t* slot) {
  // The NIC (or the fake) writes the slot behind the compiler's back.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(slot), __ATOMIC_ACQUIRE);
}

std::array<uint8_t, 16> GidOf(const std::string& bytes) {
  std::array<uint8_t, 16> gid{};
  std::memcpy(gid.data(), bytes.data(), std::min(bytes.size(), gid.size()));
  return gid;
}

}  // namespace

absl::StatusOr<v1::RdmaSpec> ResolveRdmaSpec(const v1::RdmaSpec& in) {
  v1::RdmaSpec spec = in;
  if (spec.queue_pairs() == 0) spec.set_queue_pairs(kDefaultQueuePairs);
  if (spec.message_bytes() == 0) spec.set_message_bytes(kDefaultMessageBytes);
  if (spec.tx_depth() == 0) spec.set_tx_depth(kDefaultTxDepth);
  if (spec.cq_mod() == 0) {
    // perftest disables moderation for messages above 8 KiB unless asked: with few large
    // messages in flight an unsignaled tail distorts the figure.
    spec.set_cq_mod(
        spec.message_bytes() > kCqModMessageLimit ? 1 : std::min(kDefaultCqMod, spec.tx_depth()));
  }
  auto out_of_range = [](absl::string_view field, uint64_t value, absl::string_view range) {
    return absl::InvalidArgumentError(absl::StrCat("rdma ", field, " ", value, " is out of range (",
                                                   range,
                                                   "); pick a value in it or 0 for the default"));
  };
  if (spec.queue_pairs() > 16) return out_of_range("queue_pairs", spec.queue_pairs(), "1..16");
  if (spec.message_bytes() < 1024 || spec.message_bytes() > (8u << 20)) {
    return out_of_range("message_bytes", spec.message_bytes(), "1 KiB..8 MiB");
  }
  if (spec.tx_depth() > 1024) return out_of_range("tx_depth", spec.tx_depth(), "1..1024");
  if (spec.cq_mod() > spec.tx_depth()) {
    return out_of_range("cq_mod", spec.cq_mod(), absl::StrCat("1..tx_depth ", spec.tx_depth()));
  }
  if (spec.duration_ms() < 100 || spec.duration_ms() > 60'000) {
    return out_of_range("duration_ms", spec.duration_ms(), "100 ms..60 s");
  }
  if (spec.latency_iterations() > 100'000) {
    return out_of_range("latency_iterations", spec.latency_iterations(), "0..100000");
  }
  if (spec.test_id().empty()) {
    return absl::InvalidArgumentError("rdma test_id is empty; every test needs its own id");
  }
  return spec;
}

double GigabitsPerSecond(uint64_t bytes, absl::Duration elapsed) {
  double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds <= 0) return 0;
  // perftest: bytes * cycles_to_units / (cycles * format_factor), format_factor 125000000 for
  // Gb/s: bytes per second / 125e6 = bits per second / 1e9.
  return static_cast<double>(bytes) / seconds / 125'000'000.0;
}

LatencySummary SummarizeLatency(std::vector<absl::Duration> one_way) {
  if (one_way.empty()) return {};
  std::sort(one_way.begin(), one_way.end());
  size_t n = one_way.size();
  size_t p99 = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(n))) - 1;
  return {.median_us = absl::ToDoubleMicroseconds(one_way[n / 2]),
          .p99_us = absl::ToDoubleMicroseconds(one_way[p99])};
}

void RdmaTestEnd::FreeBuffer::operator()(uint8_t* p) const { std::free(p); }

absl::StatusOr<std::unique_ptr<RdmaTestEnd>> RdmaTestEnd::Prepare(
    VerbsDevices& devices, const v1::RdmaPrepareRequest& request, const Clock* clock,
    RdmaEngineOptions options) {
  ASSIGN_OR_RETURN(v1::RdmaSpec spec, ResolveRdmaSpec(request.spec()));
  if (request.port() == 0 || request.port() > 255) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rdma port ", request.port(), " of ", request.device(), " is not a port number (1..255)"));
  }
  std::unique_ptr<RdmaTestEnd> end(new RdmaTestEnd(
      clock, std::move(spec), options, static_cast<uint8_t>(request.port()), request.gid_index()));
  const std::string& device = request.device();
  ASSIGN_OR_RETURN(end->context_, devices.Open(device));
  ASSIGN_OR_RETURN(VerbsPortInfo port, end->context_->QueryPort(end->port_, end->gid_index_));
  if (port.state != 4) {
    return absl::FailedPreconditionError(absl::StrCat(
        device, " port ", request.port(), " is not ACTIVE (ibv_query_port state ", port.state,
        "); bring its link up (ip link set NETDEV up, check the cable) and run again"));
  }
  // Page-aligned, as perftest allocates its buffers, and zeroed so no stale sequence matches.
  end->buffer_length_ = end->BandwidthBytes() + 2 * kSlotBytes;
  size_t allocated = (end->buffer_length_ + 4095) / 4096 * 4096;
  end->buffer_.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, allocated)));
  if (end->buffer_ == nullptr) return ErrnoStatus(absl::StrCat("allocate ", allocated, " bytes"));
  std::memset(end->buffer_.get(), 0, allocated);
  ASSIGN_OR_RETURN(end->mr_,
                   end->context_->RegisterMemory(end->buffer_.get(), end->buffer_length_));
  // perftest's ctx_init: one CQ of tx_depth * queue pairs entries for all send queues.
  ASSIGN_OR_RETURN(end->cq_, end->context_->CreateCompletionQueue(static_cast<int>(
                                 end->spec_.tx_depth() * end->spec_.queue_pairs())));
  std::random_device seed;
  std::mt19937 random(seed());
  v1::RdmaEndpoint& ep = end->endpoint_;
  ep.set_device(device);
  for (uint32_t q = 0; q < end->spec_.queue_pairs(); ++q) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<VerbsQueuePair> qp,
        end->context_->CreateQueuePair(*end->cq_, static_cast<int>(end->spec_.tx_depth())));
    RETURN_IF_ERROR(qp->ToInit(end->port_));
    v1::RdmaQueuePair* info = ep.add_queue_pairs();
    info->set_qpn(qp->qpn());
    info->set_psn(random() & 0xFFFFFF);  // perftest: lrand48() & 0xffffff
    end->qps_.push_back(std::move(qp));
  }
  if (end->gid_index_ >= 0) ep.set_gid(std::string(port.gid.begin(), port.gid.end()));
  ep.set_lid(port.lid);
  ep.set_mtu(port.mtu_bytes);
  ep.set_address(reinterpret_cast<uintptr_t>(end->buffer_.get()));
  ep.set_length(end->buffer_length_);
  ep.set_rkey(end->mr_->rkey());
  return end;
}

absl::Status RdmaTestEnd::Connect(const v1::RdmaEndpoint& peer) {
  if (connected_) {
    return absl::FailedPreconditionError(absl::StrCat("rdma test ", spec_.test_id(), " on ",
                                                      context_->device(), " is connected already"));
  }
  if (peer.queue_pairs_size() != static_cast<int>(qps_.size()) || peer.length() != buffer_length_ ||
      (gid_index_ >= 0 && peer.gid().size() != 16)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the peer ", peer.device(), " of rdma test ", spec_.test_id(), " offers ",
        peer.queue_pairs_size(), " queue pairs, a ", peer.length(), "-byte buffer and a ",
        peer.gid().size(), "-byte GID; this end needs ", qps_.size(), ", ", buffer_length_, " and ",
        gid_index_ >= 0 ? "16" : "any", ": both ends must be prepared with one spec"));
  }
  VerbsPeer to{.lid = static_cast<uint16_t>(peer.lid()),
               .gid = GidOf(peer.gid()),
               .mtu_bytes = std::min<uint32_t>(endpoint_.mtu(), peer.mtu())};
  for (size_t q = 0; q < qps_.size(); ++q) {
    to.qpn = peer.queue_pairs(static_cast<int>(q)).qpn();
    to.psn = peer.queue_pairs(static_cast<int>(q)).psn();
    RETURN_IF_ERROR(qps_[q]->ToRtr(port_, gid_index_, to));
    RETURN_IF_ERROR(qps_[q]->ToRts(endpoint_.queue_pairs(static_cast<int>(q)).psn()));
  }
  peer_ = peer;
  connected_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> RdmaTestEnd::Reap(std::span<VerbsCompletion> out) {
  ASSIGN_OR_RETURN(int n, cq_->Poll(out));
  for (int i = 0; i < n; ++i) {
    if (out[i].status == 0) continue;
    std::string which = out[i].wr_id == kLatencyWrId
                            ? "a latency WRITE"
                            : absl::StrCat("an RDMA WRITE of queue pair ", out[i].wr_id, " (qpn ",
                                           qps_[out[i].wr_id]->qpn(), ")");
    return absl::UnavailableError(absl::StrCat(
        context_->device(), ": ", which, " to ", peer_.device(), " completed with \"",
        context_->CompletionStatusText(out[i].status), "\" (ibv_wc_status ", out[i].status,
        "): the link or the peer failed during the test; check both ports' state and counters"));
  }
  return n;
}

absl::Status RdmaTestEnd::RunBandwidth(v1::RdmaRunResponse* out) {
  // perftest's run_iter_bw: keep every queue pair's send queue full, in batches of cq_mod
  // WRITEs of which only the last is signaled, and count a completion as cq_mod messages.
  // Posting stops only at batch ends, so every posted WRITE is covered by a completion.
  const uint32_t qps = spec_.queue_pairs();
  const uint32_t size = spec_.message_bytes();
  const uint32_t cq_mod = spec_.cq_mod();
  const uint32_t depth = spec_.tx_depth() / cq_mod * cq_mod;
  const absl::Duration duration = absl::Milliseconds(spec_.duration_ms());
  // A bound in count besides the time: what 1.6 Tb/s would carry in the duration.
  const uint64_t max_messages =
      static_cast<uint64_t>(200e9 * absl::ToDoubleSeconds(duration) / size) + qps * depth;
  std::vector<uint64_t> posted(qps, 0), completed(qps, 0);
  uint64_t total_posted = 0, total_completed = 0;
  VerbsCompletion wc[16];

  const absl::Time start = clock_->Now();
  absl::Time last = start;
  absl::Time window_start = start;
  uint64_t window_base = 0;
  double peak = 0;
  while (true) {
    const absl::Time now = clock_->Now();
    const bool stopping = now - start >= duration || total_posted >= max_messages;
    if (stopping && total_completed == total_posted) break;
    if (now - start > duration + options_.grace) {
      return absl::DeadlineExceededError(absl::StrCat(
          context_->device(), ": ", total_posted - total_completed, " of ", total_posted,
          " RDMA WRITEs to ", peer_.device(), " did not complete within ",
          absl::FormatDuration(options_.grace), " of the test's end"));
    }
    for (uint32_t q = 0; q < qps && !stopping; ++q) {
      while (posted[q] - completed[q] + cq_mod <= depth && total_posted < max_messages) {
        const uint8_t* local = buffer_.get() + size_t{q} * size;
        const uint64_t remote = peer_.address() + uint64_t{q} * size;
        for (uint32_t i = 0; i < cq_mod; ++i) {
          RETURN_IF_ERROR(
              qps_[q]->PostWrite(*mr_, local, size, remote, peer_.rkey(), q, i + 1 == cq_mod));
        }
        posted[q] += cq_mod;
        total_posted += cq_mod;
      }
    }
    ASSIGN_OR_RETURN(int n, Reap(wc));
    if (n == 0) continue;
    for (int i = 0; i < n; ++i) {
      completed[wc[i].wr_id] += cq_mod;
      total_completed += cq_mod;
    }
    last = clock_->Now();
    if (last - window_start >= options_.peak_window) {
      peak = std::max(
          peak, GigabitsPerSecond((total_completed - window_base) * size, last - window_start));
      window_start = last;
      window_base = total_completed;
    }
  }
  const uint64_t bytes = total_completed * size;
  out->set_messages(total_completed);
  out->set_bytes(bytes);
  out->set_seconds(absl::ToDoubleSeconds(last - start));
  out->set_bandwidth_gbps(GigabitsPerSecond(bytes, last - start));
  // A run shorter than one window has no window of its own: its average is its peak.
  out->set_peak_gbps(std::max(peak, out->bandwidth_gbps()));
  return absl::OkStatus();
}

absl::Status RdmaTestEnd::PostSequence(uint64_t sequence) {
  uint8_t* send_slot = buffer_.get() + BandwidthBytes() + kSlotBytes;
  std::memcpy(send_slot, &sequence, sizeof sequence);
  ++latency_outstanding_;
  return qps_[0]->PostWrite(*mr_, send_slot, sizeof sequence, peer_.address() + BandwidthBytes(),
                            peer_.rkey(), kLatencyWrId, true);
}

absl::StatusOr<bool> RdmaTestEnd::WaitForSequence(uint64_t sequence, absl::Time deadline,
                                                  const std::atomic<bool>* stop) {
  const uint8_t* receive_slot = buffer_.get() + BandwidthBytes();
  VerbsCompletion wc[16];
  for (uint64_t polls = 0; polls < options_.max_polls_per_wait; ++polls) {
    if (LoadSequence(receive_slot) == sequence) return true;
    if (stop != nullptr && stop->load(std::memory_order_relaxed)) return false;
    ASSIGN_OR_RETURN(int n, Reap(wc));
    latency_outstanding_ -= static_cast<uint64_t>(n);
    // The clock is read only now and then: a read costs more than a poll.
    if (polls % 1024 == 1023 && clock_->Now() > deadline) break;
  }
  return absl::DeadlineExceededError(
      absl::StrCat(context_->device(), ": latency round trip ", sequence, " with ", peer_.device(),
                   " got no answer in time; the peer stopped answering"));
}

absl::Status RdmaTestEnd::DrainLatencyWrites(absl::Time deadline) {
  VerbsCompletion wc[16];
  for (uint64_t polls = 0; latency_outstanding_ > 0; ++polls) {
    ASSIGN_OR_RETURN(int n, Reap(wc));
    latency_outstanding_ -= static_cast<uint64_t>(n);
    if (polls >= options_.max_polls_per_wait ||
        (polls % 1024 == 1023 && clock_->Now() > deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(context_->device(), ": ",
                                                      latency_outstanding_, " latency WRITEs to ",
                                                      peer_.device(), " did not complete in time"));
    }
  }
  return absl::OkStatus();
}

absl::Status RdmaTestEnd::RunLatency(v1::RdmaRunResponse* out) {
  // perftest's run_iter_lat_write: write sequence i to the peer, wait until the peer's write of
  // i lands here; half of each round trip is one sample.
  std::vector<absl::Duration> one_way;
  one_way.reserve(spec_.latency_iterations());
  for (uint64_t i = 1; i <= spec_.latency_iterations(); ++i) {
    const absl::Time sent = clock_->Now();
    RETURN_IF_ERROR(PostSequence(i));
    ASSIGN_OR_RETURN(bool answered, WaitForSequence(i, sent + options_.grace, nullptr));
    if (!answered) break;
    one_way.push_back((clock_->Now() - sent) / 2);
  }
  RETURN_IF_ERROR(DrainLatencyWrites(clock_->Now() + options_.grace));
  LatencySummary summary = SummarizeLatency(one_way);
  out->set_latency_samples(static_cast<uint32_t>(one_way.size()));
  out->set_latency_median_us(summary.median_us);
  out->set_latency_p99_us(summary.p99_us);
  return absl::OkStatus();
}

absl::StatusOr<v1::RdmaRunResponse> RdmaTestEnd::Run() {
  if (!connected_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rdma test ", spec_.test_id(), " on ", context_->device(), " runs only after Connect"));
  }
  v1::RdmaRunResponse out;
  RETURN_IF_ERROR(RunBandwidth(&out));
  if (spec_.latency_iterations() > 0) RETURN_IF_ERROR(RunLatency(&out));
  return out;
}

absl::StatusOr<uint32_t> RdmaTestEnd::ServePongs(const std::atomic<bool>& stop) {
  if (!connected_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rdma test ", spec_.test_id(), " on ", context_->device(), " answers only after Connect"));
  }
  // The requester's bandwidth phase comes first; its pings follow.
  const absl::Time deadline =
      clock_->Now() + absl::Milliseconds(spec_.duration_ms()) + 2 * options_.grace;
  uint32_t answered = 0;
  for (uint64_t i = 1; i <= spec_.latency_iterations(); ++i) {
    ASSIGN_OR_RETURN(bool pinged, WaitForSequence(i, deadline, &stop));
    if (!pinged) break;
    RETURN_IF_ERROR(PostSequence(i));
    ++answered;
  }
  RETURN_IF_ERROR(DrainLatencyWrites(clock_->Now() + options_.grace));
  return answered;
}

}  // namespace fleet::agent
