// The real verbs device: libibverbs calls with perftest's attributes
// (linux-rdma/perftest src/perftest_resources.c: ctx_init, ctx_modify_qp_to_init,
// ctx_modify_qp_to_rtr, ctx_modify_qp_to_rts), each failure a Status naming the device, the call
// and errno's text.
#include "agent/fabric/verbs_device_impl.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

using Library = std::shared_ptr<const VerbsLibrary>;

// libibverbs returns an errno value, or -1 (or NULL) with errno set.
int ErrnoOf(int rc) { return rc > 0 ? rc : errno; }

ibv_mtu MtuEnum(uint32_t bytes) {
  if (bytes >= 4096) return IBV_MTU_4096;
  if (bytes >= 2048) return IBV_MTU_2048;
  if (bytes >= 1024) return IBV_MTU_1024;
  if (bytes >= 512) return IBV_MTU_512;
  return IBV_MTU_256;
}

class RealMemoryRegion final : public VerbsMemoryRegion {
 public:
  RealMemoryRegion(Library lib, ibv_mr* mr) : lib_(std::move(lib)), mr_(mr) {}
  ~RealMemoryRegion() override { lib_->data_path().dereg_mr(mr_); }
  uint32_t lkey() const override { return mr_->lkey; }
  uint32_t rkey() const override { return mr_->rkey; }

 private:
  const Library lib_;
  ibv_mr* const mr_;
};

class RealCompletionQueue final : public VerbsCompletionQueue {
 public:
  RealCompletionQueue(Library lib, std::string device, ibv_cq* cq)
      : lib_(std::move(lib)), device_(std::move(device)), cq_(cq) {}
  ~RealCompletionQueue() override { lib_->data_path().destroy_cq(cq_); }
  ibv_cq* cq() const { return cq_; }

  absl::StatusOr<int> Poll(std::span<VerbsCompletion> out) override {
    ibv_wc wc[16];
    int n = ibv_poll_cq(cq_, static_cast<int>(std::min<size_t>(out.size(), 16)), wc);
    if (n < 0) return VerbsCallError(device_, "ibv_poll_cq", EIO);
    for (int i = 0; i < n; ++i) out[i] = {.wr_id = wc[i].wr_id, .status = wc[i].status};
    return n;
  }

 private:
  const Library lib_;
  const std::string device_;
  ibv_cq* const cq_;
};

class RealQueuePair final : public VerbsQueuePair {
 public:
  RealQueuePair(Library lib, std::string device, ibv_qp* qp)
      : lib_(std::move(lib)), device_(std::move(device)), qp_(qp) {}
  ~RealQueuePair() override { lib_->data_path().destroy_qp(qp_); }
  uint32_t qpn() const override { return qp_->qp_num; }

  absl::Status ToInit(uint8_t port) override {
    ibv_qp_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.qp_state = IBV_QPS_INIT;
    attr.pkey_index = 0;
    attr.port_num = port;
    attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    return Modify(&attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
                  "ibv_modify_qp(INIT)");
  }

  absl::Status ToRtr(uint8_t port, int gid_index, const VerbsPeer& peer) override {
    ibv_qp_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.qp_state = IBV_QPS_RTR;
    attr.path_mtu = MtuEnum(peer.mtu_bytes);
    attr.dest_qp_num = peer.qpn;
    attr.rq_psn = peer.psn;
    // perftest's values: one outstanding RDMA read/atomic (none are used) and a 12 (0.64 ms)
    // RNR NAK timer (MIN_RNR_TIMER).
    attr.max_dest_rd_atomic = 1;
    attr.min_rnr_timer = 12;
    attr.ah_attr.port_num = port;
    attr.ah_attr.dlid = peer.lid;
    if (gid_index >= 0) {
      // RoCE: routed through the GRH from the chosen local GID to the peer's.
      attr.ah_attr.is_global = 1;
      std::memcpy(attr.ah_attr.grh.dgid.raw, peer.gid.data(), peer.gid.size());
      attr.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_index);
      attr.ah_attr.grh.hop_limit = 0xFF;
    }
    return Modify(&attr,
                  IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
                  "ibv_modify_qp(RTR)");
  }

  absl::Status ToRts(uint32_t psn) override {
    ibv_qp_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.qp_state = IBV_QPS_RTS;
    attr.sq_psn = psn;
    // perftest's DEF_QP_TIME 14 (4.096 us * 2^14 = 67 ms ACK timeout) and 7 retries each.
    attr.timeout = 14;
    attr.retry_cnt = 7;
    attr.rnr_retry = 7;
    attr.max_rd_atomic = 1;
    return Modify(&attr,
                  IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                      IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC,
                  "ibv_modify_qp(RTS)");
  }

  absl::Status PostWrite(const VerbsMemoryRegion& mr, const void* local, uint32_t length,
                         uint64_t remote_address, uint32_t rkey, uint64_t wr_id,
                         bool signaled) override {
    ibv_sge sge{.addr = reinterpret_cast<uintptr_t>(local), .length = length, .lkey = mr.lkey()};
    ibv_send_wr wr;
    std::memset(&wr, 0, sizeof wr);
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
    wr.wr.rdma.remote_addr = remote_address;
    wr.wr.rdma.rkey = rkey;
    ibv_send_wr* bad = nullptr;
    if (int rc = ibv_post_send(qp_, &wr, &bad); rc != 0) {
      return VerbsCallError(device_, absl::StrCat("ibv_post_send(RDMA WRITE, qp ", qpn(), ")"),
                            ErrnoOf(rc));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Modify(ibv_qp_attr* attr, int mask, absl::string_view call) {
    if (int rc = lib_->data_path().modify_qp(qp_, attr, mask); rc != 0) {
      return VerbsCallError(device_, absl::StrCat(call, " qp ", qpn()), ErrnoOf(rc));
    }
    return absl::OkStatus();
  }

  const Library lib_;
  const std::string device_;
  ibv_qp* const qp_;
};

class RealContext final : public VerbsContext {
 public:
  RealContext(Library lib, std::string device, ibv_context* context, ibv_pd* pd)
      : lib_(std::move(lib)), device_(std::move(device)), context_(context), pd_(pd) {}
  ~RealContext() override {
    lib_->data_path().dealloc_pd(pd_);
    lib_->CloseDevice(context_);
  }
  const std::string& device() const override { return device_; }

  absl::StatusOr<VerbsPortInfo> QueryPort(uint8_t port, int gid_index) override {
    ibv_port_attr attr;
    if (int rc = lib_->QueryPortAttr(context_, port, &attr); rc != 0) {
      return VerbsCallError(device_, absl::StrCat("ibv_query_port port ", port), ErrnoOf(rc));
    }
    VerbsPortInfo info{.state = attr.state, .mtu_bytes = 128u << attr.active_mtu, .lid = attr.lid};
    if (gid_index >= 0) {
      ibv_gid gid;
      if (int rc = lib_->QueryGid(context_, port, gid_index, &gid); rc != 0) {
        return VerbsCallError(
            device_, absl::StrCat("ibv_query_gid port ", port, " index ", gid_index), ErrnoOf(rc));
      }
      std::memcpy(info.gid.data(), gid.raw, info.gid.size());
    }
    return info;
  }

  absl::StatusOr<std::unique_ptr<VerbsMemoryRegion>> RegisterMemory(void* address,
                                                                    size_t length) override {
    ibv_mr* mr = lib_->data_path().reg_mr(pd_, address, length,
                                          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) {
      return VerbsCallError(device_, absl::StrCat("ibv_reg_mr(", length, " bytes)"), errno);
    }
    return std::make_unique<RealMemoryRegion>(lib_, mr);
  }

  absl::StatusOr<std::unique_ptr<VerbsCompletionQueue>> CreateCompletionQueue(
      int entries) override {
    ibv_cq* cq = lib_->data_path().create_cq(context_, entries, nullptr, nullptr, 0);
    if (cq == nullptr) {
      return VerbsCallError(device_, absl::StrCat("ibv_create_cq(", entries, " entries)"), errno);
    }
    return std::make_unique<RealCompletionQueue>(lib_, device_, cq);
  }

  absl::StatusOr<std::unique_ptr<VerbsQueuePair>> CreateQueuePair(VerbsCompletionQueue& cq,
                                                                  int send_depth) override {
    ibv_cq* real_cq = static_cast<RealCompletionQueue&>(cq).cq();
    ibv_qp_init_attr init;
    std::memset(&init, 0, sizeof init);
    init.send_cq = real_cq;
    init.recv_cq = real_cq;
    init.cap.max_send_wr = static_cast<uint32_t>(send_depth);
    init.cap.max_recv_wr = 1;  // RDMA WRITE consumes no receive
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    init.qp_type = IBV_QPT_RC;
    init.sq_sig_all = 0;  // completion moderation: only the WRITEs posted signaled complete
    ibv_qp* qp = lib_->data_path().create_qp(pd_, &init);
    if (qp == nullptr) {
      return VerbsCallError(device_, absl::StrCat("ibv_create_qp(RC, ", send_depth, " deep)"),
                            errno);
    }
    return std::make_unique<RealQueuePair>(lib_, device_, qp);
  }

  std::string CompletionStatusText(int status) const override {
    return lib_->data_path().wc_status_str(static_cast<ibv_wc_status>(status));
  }

 private:
  const Library lib_;
  const std::string device_;
  ibv_context* const context_;
  ibv_pd* const pd_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<VerbsContext>> VerbsDevicesImpl::Open(const std::string& device) {
  Library lib;
  {
    absl::MutexLock lock(&mu_);
    if (library_ == nullptr) {
      absl::StatusOr<VerbsLibrary> loaded = VerbsLibrary::Load(soname_);
      if (!loaded.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the RDMA test needs libibverbs: ", loaded.status().message(),
            "; install rdma-core (Debian: ibverbs-providers, libibverbs1) on this node"));
      }
      library_ = std::make_shared<const VerbsLibrary>(*std::move(loaded));
    }
    lib = library_;
  }
  absl::StatusOr<ibv_context*> context = lib->OpenDevice(device);
  if (!context.ok()) {
    if (absl::IsNotFound(context.status())) return context.status();
    return absl::FailedPreconditionError(context.status().message());
  }
  ibv_pd* pd = lib->data_path().alloc_pd(*context);
  if (pd == nullptr) {
    int err = errno;
    lib->CloseDevice(*context);
    return VerbsCallError(device, "ibv_alloc_pd", err);
  }
  return std::make_unique<RealContext>(lib, device, *context, pd);
}

}  // namespace fleet::agent
