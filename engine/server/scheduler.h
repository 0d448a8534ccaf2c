// fleet-engine's continuous batching. Rank 0 (the leader) owns the requests: every step it
// admits waiting requests into free KV cache slots (up to max_num_seqs), gives each running
// sequence one entry (its next prompt token, or the token it generated last), and broadcasts
// that schedule to the other ranks (followers) before all of them run the same Model::Step.
// Prompts are fed one token per step, interleaved with other sequences' decoding. When nothing
// runs the leader broadcasts an idle beat every second, so a follower can tell a quiet leader
// from a dead one (its collective fails with an error and it exits, never hangs).
//
// Example (rank 0):
//   Scheduler scheduler(model.get(), collectives.get(), &metrics, {.max_num_seqs = 8, ...});
//   std::thread loop([&] { status = scheduler.RunLeader(); });
//   ASSIGN_OR_RETURN(auto sequence, scheduler.Submit(prompt_tokens, /*max_tokens=*/16));
//   for (auto update = sequence->Next(deadline); ...) { ... }
// Example (ranks > 0): return scheduler.RunFollower();
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/collectives/collectives.h"
#include "engine/model/model.h"
#include "engine/server/metrics.h"

namespace fleet::native {

// One request's stream of generated tokens, shared by the HTTP thread that reads it and the
// scheduler that fills it. Thread-safe.
class Sequence {
 public:
  struct Update {
    std::vector<int> tokens;    // generated since the previous Next
    bool done = false;          // no more tokens will come
    std::string finish_reason;  // "length" when done normally
    absl::Status status;        // not OK when the engine failed the request
  };

  Sequence(std::vector<int> prompt, int max_tokens, absl::Time submitted);

  // Waits until there are new tokens or the sequence is done, at most until `deadline` (then
  // returns what there is, possibly nothing).
  Update Next(absl::Time deadline);

  // The client went away: the scheduler frees the slot at its next step.
  void Cancel();

  const std::vector<int>& prompt() const { return prompt_; }
  int max_tokens() const { return max_tokens_; }

 private:
  friend class Scheduler;

  void Push(int token);
  void Finish(std::string finish_reason, absl::Status status);
  bool cancelled() const;

  const std::vector<int> prompt_;
  const int max_tokens_;
  const absl::Time submitted_;
  // Scheduler-thread state.
  size_t fed_ = 0;  // prompt tokens already stepped
  int generated_ = 0;
  int last_token_ = 0;
  absl::Time last_token_at_;

  mutable absl::Mutex mu_;
  std::vector<int> pending_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::string finish_reason_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

struct SchedulerOptions {
  int max_num_seqs = 8;
  int max_seq_len = 512;
  int vocab_size = 256;
  int max_waiting = 256;                        // Submit beyond this is ResourceExhausted
  absl::Duration idle_beat = absl::Seconds(1);  // the leader's broadcast when nothing runs
};

class Scheduler {
 public:
  // `model`, `collectives` and `metrics` must outlive the scheduler.
  Scheduler(Model* model, Collectives* collectives, Metrics* metrics, SchedulerOptions options);

  // Rank 0: queues a request. InvalidArgument when the prompt is empty, a token is out of the
  // vocabulary or prompt + max_tokens exceeds max_seq_len; ResourceExhausted when max_waiting
  // requests already wait; Unavailable once the leader stopped.
  absl::StatusOr<std::shared_ptr<Sequence>> Submit(std::vector<int> prompt, int max_tokens);

  // Rank 0: one step of `entries` on the whole group, outside the serving loop (the reference
  // check before serving). Not concurrently with RunLeader.
  absl::StatusOr<StepOutput> LeaderStep(const std::vector<StepEntry>& entries, bool want_logits);

  // Rank 0: serves until Stop(), then tells the followers to exit. Returns the error that broke
  // the group, if one did (every queued and running request then fails with it).
  absl::Status RunLeader();
  void Stop();
  // False once RunLeader has returned or failed (GET /health answers 503 then).
  bool healthy() const;

  // Ranks > 0: follows the leader's schedule until it says to exit (OK) or the group breaks.
  absl::Status RunFollower();

 private:
  enum Kind : int32_t { kIdle = 0, kStep = 1, kShutdown = 2 };
  static constexpr int kHeader = 3;  // kind, entries, want_logits

  absl::Status Broadcast(Kind kind, const std::vector<StepEntry>& entries, bool want_logits);
  // Admits waiting sequences into free slots; returns whether any slot is busy.
  bool Admit();
  absl::Status RunStep();
  void FailAll(const absl::Status& status);
  void PublishQueue();

  Model* const model_;
  Collectives* const collectives_;
  Metrics* const metrics_;
  const SchedulerOptions options_;
  std::unique_ptr<Buffer> schedule_;  // kHeader + 3 * max_num_seqs int32, in collective memory
  std::vector<int32_t> host_schedule_;

  // Leader-thread state.
  std::vector<std::shared_ptr<Sequence>> slots_;

  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fleet::native
