// fleet-engine's continuous batching (see scheduler.h).
#include "engine/server/scheduler.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace fleet::native {

Sequence::Sequence(std::vector<int> prompt, int max_tokens, absl::Time submitted)
    : prompt_(std::move(prompt)), max_tokens_(max_tokens), submitted_(submitted) {}

Sequence::Update Sequence::Next(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_ || !pending_.empty(); };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  Update update{.tokens = std::exchange(pending_, {}), .done = done_};
  if (done_) {
    update.finish_reason = finish_reason_;
    update.status = status_;
  }
  return update;
}

void Sequence::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

void Sequence::Push(int token) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(token);
}

void Sequence::Finish(std::string finish_reason, absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (done_) return;
  done_ = true;
  finish_reason_ = std::move(finish_reason);
  status_ = std::move(status);
}

bool Sequence::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

Scheduler::Scheduler(Model* model, Collectives* collectives, Metrics* metrics,
                     SchedulerOptions options)
    : model_(model),
      collectives_(collectives),
      metrics_(metrics),
      options_(options),
      host_schedule_(kHeader + 3 * options.max_num_seqs, 0),
      slots_(options.max_num_seqs) {}

absl::StatusOr<std::shared_ptr<Sequence>> Scheduler::Submit(std::vector<int> prompt,
                                                            int max_tokens) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be at least 1, not ", max_tokens));
  }
  for (int token : prompt) {
    if (token < 0 || token >= options_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", token, " is outside the vocabulary of ", options_.vocab_size));
    }
  }
  if (prompt.size() + static_cast<size_t>(max_tokens) > static_cast<size_t>(options_.max_seq_len)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt (", prompt.size(), " tokens) plus max_tokens (", max_tokens,
                     ") exceeds the model's context of ", options_.max_seq_len,
                     " tokens: shorten the prompt or lower max_tokens"));
  }
  auto sequence = std::make_shared<Sequence>(std::move(prompt), max_tokens, absl::Now());
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || broken_) return absl::UnavailableError("the engine is shutting down");
    if (waiting_.size() >= static_cast<size_t>(options_.max_waiting)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          options_.max_waiting, " requests are already waiting; retry when some finished"));
    }
    waiting_.push_back(sequence);
  }
  metrics_->AddPromptTokens(sequence->prompt().size());
  return sequence;
}

absl::Status Scheduler::Broadcast(Kind kind, const std::vector<StepEntry>& entries,
                                  bool want_logits) {
  if (schedule_ == nullptr) {
    ASSIGN_OR_RETURN(schedule_, collectives_->Allocate(host_schedule_.size() * sizeof(int32_t)));
  }
  std::fill(host_schedule_.begin(), host_schedule_.end(), 0);
  host_schedule_[0] = kind;
  host_schedule_[1] = static_cast<int32_t>(entries.size());
  host_schedule_[2] = want_logits ? 1 : 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    host_schedule_[kHeader + 3 * i] = entries[i].slot;
    host_schedule_[kHeader + 3 * i + 1] = entries[i].token;
    host_schedule_[kHeader + 3 * i + 2] = entries[i].position;
  }
  const size_t bytes = host_schedule_.size() * sizeof(int32_t);
  RETURN_IF_ERROR(collectives_->Upload(*schedule_, host_schedule_.data(), bytes));
  RETURN_IF_ERROR(
      collectives_->Broadcast(schedule_->data(), host_schedule_.size(), DType::kInt32, 0));
  return collectives_->Synchronize();
}

absl::StatusOr<StepOutput> Scheduler::LeaderStep(const std::vector<StepEntry>& entries,
                                                 bool want_logits) {
  if (entries.size() > static_cast<size_t>(options_.max_num_seqs)) {
    return absl::InvalidArgumentError(
        absl::StrCat(entries.size(), " entries exceed max_num_seqs ", options_.max_num_seqs));
  }
  RETURN_IF_ERROR(Broadcast(kStep, entries, want_logits));
  return model_->Step(entries, want_logits);
}

bool Scheduler::Admit() {
  absl::MutexLock lock(&mu_);
  bool busy = false;
  for (auto& slot : slots_) {
    if (slot != nullptr && slot->cancelled()) {
      slot->Finish("abort", absl::OkStatus());
      metrics_->RequestFinished("abort");
      slot = nullptr;
    }
    while (slot == nullptr && !waiting_.empty()) {
      std::shared_ptr<Sequence> next = std::move(waiting_.front());
      waiting_.pop_front();
      if (next->cancelled()) {
        next->Finish("abort", absl::OkStatus());
        metrics_->RequestFinished("abort");
        continue;
      }
      slot = std::move(next);
    }
    busy = busy || slot != nullptr;
  }
  return busy;
}

void Scheduler::PublishQueue() {
  int running = 0;
  int64_t used = 0;
  for (const auto& slot : slots_) {
    if (slot == nullptr) continue;
    ++running;
    used += static_cast<int64_t>(slot->fed_) + slot->generated_;
  }
  size_t waiting;
  {
    absl::MutexLock lock(&mu_);
    waiting = waiting_.size();
  }
  metrics_->SetQueue(running, static_cast<int>(waiting),
                     static_cast<double>(used) /
                         (static_cast<double>(options_.max_num_seqs) * options_.max_seq_len));
}

absl::Status Scheduler::RunStep() {
  std::vector<StepEntry> entries;
  std::vector<int> slot_of_entry;
  for (int slot = 0; slot < options_.max_num_seqs; ++slot) {
    Sequence* sequence = slots_[slot].get();
    if (sequence == nullptr) continue;
    const auto prompt_len = static_cast<int>(sequence->prompt_.size());
    StepEntry entry{.slot = slot};
    if (sequence->fed_ < sequence->prompt_.size()) {
      entry.token = sequence->prompt_[sequence->fed_];
      entry.position = static_cast<int>(sequence->fed_);
    } else {
      entry.token = sequence->last_token_;
      entry.position = prompt_len + sequence->generated_ - 1;
    }
    entries.push_back(entry);
    slot_of_entry.push_back(slot);
  }
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(StepOutput output, LeaderStep(entries, /*want_logits=*/false));
  const absl::Time end = absl::Now();
  metrics_->ObserveStep(absl::ToDoubleSeconds(end - start));

  // Metrics and slots are settled before any client hears of its tokens, so what a client
  // sees after its answer is already counted.
  std::vector<std::pair<std::shared_ptr<Sequence>, int>> tokens;
  std::vector<std::shared_ptr<Sequence>> finished;
  for (size_t i = 0; i < entries.size(); ++i) {
    std::shared_ptr<Sequence>& slot = slots_[slot_of_entry[i]];
    Sequence& sequence = *slot;
    if (sequence.fed_ < sequence.prompt_.size()) {
      ++sequence.fed_;
      // Only the last prompt token's output is the first generated token.
      if (sequence.fed_ < sequence.prompt_.size()) continue;
    }
    const int token = output.next_tokens[i];
    if (sequence.generated_ == 0) {
      metrics_->ObserveTimeToFirstToken(absl::ToDoubleSeconds(end - sequence.submitted_));
    } else {
      metrics_->ObserveInterTokenLatency(absl::ToDoubleSeconds(end - sequence.last_token_at_));
    }
    ++sequence.generated_;
    sequence.last_token_ = token;
    sequence.last_token_at_ = end;
    tokens.emplace_back(slot, token);
    if (sequence.generated_ >= sequence.max_tokens_) {
      metrics_->RequestFinished("length");
      finished.push_back(std::move(slot));
      slot = nullptr;
    }
  }
  metrics_->AddGenerationTokens(tokens.size());
  PublishQueue();
  for (auto& [sequence, token] : tokens) sequence->Push(token);
  for (auto& sequence : finished) sequence->Finish("length", absl::OkStatus());
  return absl::OkStatus();
}

void Scheduler::FailAll(const absl::Status& status) {
  std::deque<std::shared_ptr<Sequence>> waiting;
  {
    absl::MutexLock lock(&mu_);
    broken_ = !status.ok() || broken_;
    waiting.swap(waiting_);
  }
  const absl::Status why =
      status.ok() ? absl::UnavailableError("the engine is shutting down") : status;
  for (auto& slot : slots_) {
    if (slot != nullptr) slot->Finish("abort", why);
    slot = nullptr;
  }
  for (auto& sequence : waiting) sequence->Finish("abort", why);
}

absl::Status Scheduler::RunLeader() {
  {
    absl::MutexLock lock(&mu_);
    running_ = true;
  }
  absl::Status status;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    bool busy = Admit();
    PublishQueue();
    if (!busy) {
      bool woken;
      {
        absl::MutexLock lock(&mu_);
        auto wake = [this]()
                        ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !waiting_.empty(); };
        woken = mu_.AwaitWithTimeout(absl::Condition(&wake), options_.idle_beat);
      }
      if (woken) continue;
      status = Broadcast(kIdle, {}, false);
    } else {
      status = RunStep();
    }
    if (!status.ok()) break;
  }
  if (status.ok()) status = Broadcast(kShutdown, {}, false);
  FailAll(status);
  PublishQueue();
  absl::MutexLock lock(&mu_);
  running_ = false;
  broken_ = true;
  return status;
}

void Scheduler::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

bool Scheduler::healthy() const {
  absl::MutexLock lock(&mu_);
  return running_ && !broken_ && !stopping_;
}

absl::Status Scheduler::RunFollower() {
  ASSIGN_OR_RETURN(schedule_, collectives_->Allocate(host_schedule_.size() * sizeof(int32_t)));
  const size_t bytes = host_schedule_.size() * sizeof(int32_t);
  std::vector<StepEntry> entries;
  for (;;) {
    RETURN_IF_ERROR(
        collectives_->Broadcast(schedule_->data(), host_schedule_.size(), DType::kInt32, 0));
    RETURN_IF_ERROR(collectives_->Synchronize());
    RETURN_IF_ERROR(collectives_->Download(host_schedule_.data(), *schedule_, bytes));
    const int32_t kind = host_schedule_[0];
    if (kind == kShutdown) return absl::OkStatus();
    if (kind == kIdle) continue;
    const int32_t count = host_schedule_[1];
    if (kind != kStep || count < 0 || count > options_.max_num_seqs) {
      return absl::InternalError(
          absl::StrCat("rank 0 sent a schedule this rank cannot read (kind ", kind, ", ", count,
                       " entries): are all ranks running the same fleet-engine build?"));
    }
    entries.resize(count);
    for (int32_t i = 0; i < count; ++i) {
      entries[i] = {.slot = host_schedule_[kHeader + 3 * i],
                    .token = host_schedule_[kHeader + 3 * i + 1],
                    .position = host_schedule_[kHeader + 3 * i + 2]};
    }
    RETURN_IF_ERROR(model_->Step(entries, host_schedule_[2] != 0).status());
  }
}

}  // namespace fleet::native
