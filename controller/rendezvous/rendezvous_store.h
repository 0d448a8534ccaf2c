// RendezvousStore: the controller's key-value store through which the ranks of one generation
// of a `native` group find each other (rank 0 publishes an ncclUniqueId or Gloo's addresses,
// the others wait for it). Plain class: the Rendezvous gRPC service (rendezvous_service.h)
// translates calls into these, and GroupManager opens and closes the scopes.
//
// Keys live in a scope per group, holding the group's running generation and that
// generation's token. A request names its group, generation and rank and presents the token:
//   NotFound           the store has no scope for the group
//   Aborted            the request's generation is not the group's running one, or it ended
//   PermissionDenied   the token is not the generation's
//   ResourceExhausted  a limit of RendezvousLimits
//
// Get never blocks: it answers through a callback, at once when the key is there, when it is
// set, with DeadlineExceeded from Tick() once its deadline passed, or with Aborted when the
// scope is closed. Callbacks run on the thread that causes the answer, never under the store's
// lock, and must not block.
//
// Example:
//   RendezvousStore store(&clock);
//   store.Open("demo", 4, token);                       // GroupManager, at apply
//   store.Get({"demo", 4, 1, token}, "nccl-id", deadline,
//             [](absl::StatusOr<std::string> id) { ... });
//   RETURN_IF_ERROR(store.Set({"demo", 4, 0, token}, "nccl-id", bytes));  // answers the Get
//   store.Tick();                                       // a few times a second
//   store.Close("demo", 4);                             // the generation ended
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fleet::controller {

// The variable that carries a generation's token to its ranks. GroupManager shows it in the
// group's view as kRendezvousTokenShown; only the start order to the agent holds the value.
inline constexpr char kRendezvousTokenEnv[] = "FLEET_RENDEZVOUS_TOKEN";
inline constexpr char kRendezvousTokenShown[] = "<secret>";

struct RendezvousLimits {
  size_t max_keys = 1024;      // per scope
  size_t max_key_bytes = 256;  // keys are names such as "nccl-id"
  size_t max_value_bytes = size_t{64} << 10;
  size_t max_waiting = 4096;  // Gets waiting at once, per scope
};

// Who a request comes from. `token` is a secret: never log it.
struct RendezvousCaller {
  std::string group;
  uint64_t generation = 0;
  uint32_t rank = 0;
  std::string token;
};

class RendezvousStore {
 public:
  using GetCallback = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;

  explicit RendezvousStore(const Clock* clock, RendezvousLimits limits = {})
      : clock_(clock), limits_(limits) {}
  // Answers the Gets still waiting with Unavailable, as Shutdown does.
  ~RendezvousStore();
  RendezvousStore(const RendezvousStore&) = delete;
  RendezvousStore& operator=(const RendezvousStore&) = delete;

  // Makes `generation` the group's running one, with `token`. Idempotent for the same
  // generation and token (its keys stay); any other scope of the group is replaced: its keys
  // are dropped and its waiting Gets answered Aborted.
  void Open(absl::string_view group, uint64_t generation, absl::string_view token);

  // Ends `generation` of the group: its keys are dropped, its waiting Gets and every later
  // request of it answered Aborted "generation N of group G ended". Nothing when the group's
  // scope is of another generation.
  void Close(absl::string_view group, uint64_t generation);

  // Stores `value` under `key`, replacing what was there, and answers the Gets waiting for it.
  // InvalidArgument for an empty or too long key.
  absl::Status Set(const RendezvousCaller& caller, absl::string_view key, std::string value);

  // Calls `done` once with the value of `key`: at once when it is there (or the request is
  // refused), else when it is set, or with DeadlineExceeded naming the key from the first
  // Tick() at or after `deadline`.
  void Get(const RendezvousCaller& caller, absl::string_view key, absl::Time deadline,
           GetCallback done);

  // Answers the Gets whose deadline has passed. The controller's ticker calls it with the
  // registry's and the groups' ticks (every 200 ms at the default heartbeat period), so a
  // deadline is kept to within one tick.
  void Tick();

  // Answers every waiting Get, and every later one, with Unavailable: the server can then stop
  // without waiting for them. Idempotent.
  void Shutdown();

  // Gets waiting in all scopes (for tests and metrics).
  size_t waiting() const;

 private:
  struct Waiter {
    std::string key;
    absl::Time deadline;
    GetCallback done;
  };
  struct Scope {
    uint64_t generation = 0;
    std::string token;
    bool open = false;
    std::map<std::string, std::string, std::less<>> values;
    std::vector<Waiter> waiters;
  };
  // An answer to give once the lock is released.
  struct Answer {
    GetCallback done;
    absl::StatusOr<std::string> result;
  };

  // The caller's open scope, or why the request is refused.
  absl::StatusOr<Scope*> Authorize(const RendezvousCaller& caller)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckKey(absl::string_view key) const;
  // What a Get is answered now, or nullopt when it must wait (its scope is then open).
  std::optional<absl::StatusOr<std::string>> AnswerNow(const RendezvousCaller& caller,
                                                       absl::string_view key, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves every waiter of `scope` into `answers` with `status`, and drops its keys.
  static void EndScope(Scope& scope, const absl::Status& status, std::vector<Answer>& answers);
  static void Deliver(std::vector<Answer>& answers);

  const Clock* const clock_;
  const RendezvousLimits limits_;
  mutable absl::Mutex mu_;
  std::map<std::string, Scope, std::less<>> scopes_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fleet::controller
