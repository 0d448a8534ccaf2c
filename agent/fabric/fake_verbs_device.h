// FakeVerbsFabric: RDMA devices in memory, all wired to one another, for unit tests of the RDMA
// test engine and its queue-pair exchange. An RDMA WRITE copies its bytes into the peer's
// registered memory at once and, when signaled, puts a completion on the sender's CQ. Queue
// pairs keep the verbs state machine (RESET → INIT → RTR → RTS; posting before RTS fails with
// EINVAL, as a real device does), and failures can be injected.
#pragma once

#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "agent/fabric/verbs_device.h"

namespace fleet::agent {

class FakeVerbsFabric final : public VerbsDevices {
 public:
  // ibv_wc_status values the fake produces.
  static constexpr int kSuccess = 0;             // IBV_WC_SUCCESS
  static constexpr int kRemoteAccessError = 10;  // IBV_WC_REM_ACCESS_ERR
  static constexpr int kRetryExceeded = 12;      // IBV_WC_RETRY_EXC_ERR
  static constexpr int kFlushed = 5;             // IBV_WC_WR_FLUSH_ERR

  // Devices that exist, by name; each gets port 1, ACTIVE, MTU 4096, GID ::ffff:10.0.0.N.
  explicit FakeVerbsFabric(std::set<std::string> devices) : devices_(std::move(devices)) {}

  // Called with each WRITE's length as it is posted (tests advance a fake clock here).
  std::function<void(uint32_t bytes)> on_write;
  // Injected failures: ibv_reg_mr fails with this errno (0: never).
  int reg_mr_errno = 0;
  // After this many WRITEs in all, every queue pair of `fail_device` goes to ERROR: the next
  // WRITE completes with "transport retry counter exceeded", later ones flushed (-1: never).
  int64_t fail_after_writes = -1;
  std::string fail_device;

  absl::StatusOr<std::unique_ptr<VerbsContext>> Open(const std::string& device) override {
    if (!devices_.contains(device)) {
      return absl::NotFoundError(absl::StrCat("ibv_get_device_list has no ", device, " (it lists ",
                                              absl::StrJoin(devices_, ", "), ")"));
    }
    absl::MutexLock lock(&mu_);
    ++open_contexts_;
    return std::unique_ptr<VerbsContext>(new Context(this, device, ++last_device_number_));
  }

  // What is still allocated: a test that frees everything leaves all of them 0.
  int open_contexts() const {
    absl::MutexLock lock(&mu_);
    return open_contexts_;
  }
  int open_queue_pairs() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(qps_.size());
  }
  int open_memory_regions() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(mrs_.size());
  }
  int64_t writes() const {
    absl::MutexLock lock(&mu_);
    return writes_;
  }
  // Completions put on CQs (signaled WRITEs and errors).
  int64_t completions() const {
    absl::MutexLock lock(&mu_);
    return completions_;
  }

 private:
  enum class QpState { kReset, kInit, kRtr, kRts, kError };
  struct Region {
    uint8_t* address;
    size_t length;
  };
  class Cq;
  struct QpRecord {
    std::string device;
    Cq* cq;
    QpState state = QpState::kReset;
    uint32_t peer_qpn = 0;
  };

  class Mr final : public VerbsMemoryRegion {
   public:
    Mr(FakeVerbsFabric* fabric, uint32_t key) : fabric_(fabric), key_(key) {}
    ~Mr() override {
      absl::MutexLock lock(&fabric_->mu_);
      fabric_->mrs_.erase(key_);
    }
    uint32_t lkey() const override { return key_; }
    uint32_t rkey() const override { return key_; }

   private:
    FakeVerbsFabric* const fabric_;
    const uint32_t key_;
  };

  class Cq final : public VerbsCompletionQueue {
   public:
    explicit Cq(FakeVerbsFabric* fabric) : fabric_(fabric) {}
    absl::StatusOr<int> Poll(std::span<VerbsCompletion> out) override {
      int n = 0;
      {
        absl::MutexLock lock(&fabric_->mu_);
        while (n < static_cast<int>(out.size()) && !entries_.empty()) {
          out[n++] = entries_.front();
          entries_.pop_front();
        }
      }
      // The engine busy-polls as perftest does; in tests its peer is another thread on a shared
      // CPU, so an empty poll gives the CPU up.
      if (n == 0) std::this_thread::yield();
      return n;
    }
    std::deque<VerbsCompletion> entries_;  // guarded by fabric_->mu_

   private:
    FakeVerbsFabric* const fabric_;
  };

  class Qp final : public VerbsQueuePair {
   public:
    Qp(FakeVerbsFabric* fabric, uint32_t qpn) : fabric_(fabric), qpn_(qpn) {}
    ~Qp() override {
      absl::MutexLock lock(&fabric_->mu_);
      fabric_->qps_.erase(qpn_);
    }
    uint32_t qpn() const override { return qpn_; }
    absl::Status ToInit(uint8_t port) override {
      if (port != 1) return VerbsCallError(Device(), "ibv_modify_qp(INIT)", EINVAL);
      return Move(QpState::kReset, QpState::kInit, "ibv_modify_qp(INIT)");
    }
    absl::Status ToRtr(uint8_t, int, const VerbsPeer& peer) override {
      if (absl::Status moved = Move(QpState::kInit, QpState::kRtr, "ibv_modify_qp(RTR)");
          !moved.ok()) {
        return moved;
      }
      absl::MutexLock lock(&fabric_->mu_);
      fabric_->qps_.at(qpn_).peer_qpn = peer.qpn;
      return absl::OkStatus();
    }
    absl::Status ToRts(uint32_t) override {
      return Move(QpState::kRtr, QpState::kRts, "ibv_modify_qp(RTS)");
    }
    absl::Status PostWrite(const VerbsMemoryRegion& mr, const void* local, uint32_t length,
                           uint64_t remote_address, uint32_t rkey, uint64_t wr_id,
                           bool signaled) override {
      if (fabric_->on_write) fabric_->on_write(length);
      absl::MutexLock lock(&fabric_->mu_);
      QpRecord& self = fabric_->qps_.at(qpn_);
      if (self.state != QpState::kRts && self.state != QpState::kError) {
        return VerbsCallError(self.device, "ibv_post_send(RDMA WRITE) before RTS", EINVAL);
      }
      auto local_region = fabric_->mrs_.find(mr.lkey());
      const auto* src = static_cast<const uint8_t*>(local);
      if (local_region == fabric_->mrs_.end() || src < local_region->second.address ||
          src + length > local_region->second.address + local_region->second.length) {
        return VerbsCallError(self.device, "ibv_post_send(RDMA WRITE) outside its MR", EINVAL);
      }
      int status = kSuccess;
      if (self.state == QpState::kError) {
        status = kFlushed;
      } else if (fabric_->fail_after_writes >= 0 &&
                 fabric_->writes_ >= fabric_->fail_after_writes &&
                 self.device == fabric_->fail_device) {
        for (auto& [qpn, record] : fabric_->qps_) {
          if (record.device == self.device) record.state = QpState::kError;
        }
        status = kRetryExceeded;
      } else {
        status = fabric_->Deliver(self, remote_address, rkey, src, length);
      }
      ++fabric_->writes_;
      // An error completes whether signaled or not, as on a real queue pair.
      if (signaled || status != kSuccess) {
        self.cq->entries_.push_back({wr_id, status});
        ++fabric_->completions_;
      }
      return absl::OkStatus();
    }

   private:
    std::string Device() {
      absl::MutexLock lock(&fabric_->mu_);
      return fabric_->qps_.at(qpn_).device;
    }
    absl::Status Move(QpState from, QpState to, absl::string_view call) {
      absl::MutexLock lock(&fabric_->mu_);
      QpRecord& self = fabric_->qps_.at(qpn_);
      if (self.state != from) return VerbsCallError(self.device, call, EINVAL);
      self.state = to;
      return absl::OkStatus();
    }
    FakeVerbsFabric* const fabric_;
    const uint32_t qpn_;
  };

  class Context final : public VerbsContext {
   public:
    Context(FakeVerbsFabric* fabric, std::string device, int number)
        : fabric_(fabric), device_(std::move(device)), number_(number) {}
    ~Context() override {
      absl::MutexLock lock(&fabric_->mu_);
      --fabric_->open_contexts_;
    }
    const std::string& device() const override { return device_; }
    absl::StatusOr<VerbsPortInfo> QueryPort(uint8_t port, int gid_index) override {
      if (port != 1)
        return VerbsCallError(device_, absl::StrCat("ibv_query_port port ", port), EINVAL);
      VerbsPortInfo info{.state = 4, .mtu_bytes = 4096, .lid = 0};
      if (gid_index >= 0) {
        // ::ffff:10.0.0.N, an IPv4-mapped RoCE v2 GID.
        info.gid[10] = 0xff;
        info.gid[11] = 0xff;
        info.gid[12] = 10;
        info.gid[15] = static_cast<uint8_t>(number_);
      }
      return info;
    }
    absl::StatusOr<std::unique_ptr<VerbsMemoryRegion>> RegisterMemory(void* address,
                                                                      size_t length) override {
      absl::MutexLock lock(&fabric_->mu_);
      if (fabric_->reg_mr_errno != 0) {
        return VerbsCallError(device_, absl::StrCat("ibv_reg_mr(", length, " bytes)"),
                              fabric_->reg_mr_errno);
      }
      uint32_t key = ++fabric_->last_key_;
      fabric_->mrs_[key] = {static_cast<uint8_t*>(address), length};
      return std::unique_ptr<VerbsMemoryRegion>(new Mr(fabric_, key));
    }
    absl::StatusOr<std::unique_ptr<VerbsCompletionQueue>> CreateCompletionQueue(int) override {
      return std::unique_ptr<VerbsCompletionQueue>(new Cq(fabric_));
    }
    absl::StatusOr<std::unique_ptr<VerbsQueuePair>> CreateQueuePair(VerbsCompletionQueue& cq,
                                                                    int) override {
      absl::MutexLock lock(&fabric_->mu_);
      uint32_t qpn = ++fabric_->last_qpn_;
      fabric_->qps_[qpn] = {.device = device_, .cq = static_cast<Cq*>(&cq)};
      return std::unique_ptr<VerbsQueuePair>(new Qp(fabric_, qpn));
    }
    std::string CompletionStatusText(int status) const override {
      switch (status) {
        case kRemoteAccessError:
          return "remote access error";
        case kRetryExceeded:
          return "transport retry counter exceeded";
        case kFlushed:
          return "Work Request Flushed Error";
        default:
          return absl::StrCat("status ", status);
      }
    }

   private:
    FakeVerbsFabric* const fabric_;
    const std::string device_;
    const int number_;
  };

  // Copies a WRITE into the peer's memory; the completion status it gets.
  int Deliver(const QpRecord& self, uint64_t remote_address, uint32_t rkey, const uint8_t* src,
              uint32_t length) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto peer = qps_.find(self.peer_qpn);
    // A peer that is gone or not yet ready to receive never ACKs: the sender retries, then fails.
    if (peer == qps_.end() ||
        (peer->second.state != QpState::kRtr && peer->second.state != QpState::kRts)) {
      return kRetryExceeded;
    }
    auto region = mrs_.find(rkey);
    auto* dst = reinterpret_cast<uint8_t*>(remote_address);
    if (region == mrs_.end() || dst < region->second.address ||
        dst + length > region->second.address + region->second.length) {
      return kRemoteAccessError;
    }
    std::memcpy(dst, src, length);
    return kSuccess;
  }

  const std::set<std::string> devices_;
  mutable absl::Mutex mu_;
  int open_contexts_ ABSL_GUARDED_BY(mu_) = 0;
  int last_device_number_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t last_key_ ABSL_GUARDED_BY(mu_) = 0x100;
  uint32_t last_qpn_ ABSL_GUARDED_BY(mu_) = 0x40;
  int64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t completions_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint32_t, Region> mrs_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, QpRecord> qps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
