// RendezvousStore: scopes per group generation, keys, waiting Gets and their deadlines.
#include "controller/rendezvous/rendezvous_store.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/pki.h"

namespace fleet::controller {
namespace {

absl::Status Ended(absl::string_view group, uint64_t generation) {
  return absl::AbortedError(absl::StrCat("generation ", generation, " of group ", group,
                                         " ended: this rank should exit"));
}

}  // namespace

RendezvousStore::~RendezvousStore() { Shutdown(); }

void RendezvousStore::Deliver(std::vector<Answer>& answers) {
  for (Answer& a : answers) std::move(a.done)(std::move(a.result));
  answers.clear();
}

void RendezvousStore::EndScope(Scope& scope, const absl::Status& status,
                               std::vector<Answer>& answers) {
  for (Waiter& w : scope.waiters) answers.push_back({std::move(w.done), status});
  scope.waiters.clear();
  scope.values.clear();
}

void RendezvousStore::Open(absl::string_view group, uint64_t generation, absl::string_view token) {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    auto it = scopes_.find(group);
    if (it == scopes_.end()) it = scopes_.emplace(std::string(group), Scope()).first;
    Scope& scope = it->second;
    if (scope.open && scope.generation == generation && scope.token == token) return;
    if (scope.open) {
      EndScope(scope,
               absl::AbortedError(absl::StrCat("generation ", scope.generation, " of group ", group,
                                               " ended: the group is at generation ", generation,
                                               " now; this rank should exit")),
               answers);
    }
    scope.generation = generation;
    scope.token = std::string(token);
    scope.open = true;
  }
  Deliver(answers);
}

void RendezvousStore::Close(absl::string_view group, uint64_t generation) {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    auto it = scopes_.find(group);
    if (it == scopes_.end() || it->second.generation != generation || !it->second.open) return;
    Scope& scope = it->second;
    EndScope(scope, Ended(group, generation), answers);
    // The generation is kept, so its ranks learn that it ended rather than that it never was.
    scope.open = false;
    scope.token.clear();
  }
  Deliver(answers);
}

absl::StatusOr<RendezvousStore::Scope*> RendezvousStore::Authorize(const RendezvousCaller& caller) {
  if (shut_down_) {
    return absl::UnavailableError("the controller is shutting down; ask again once it is back");
  }
  auto it = scopes_.find(caller.group);
  if (it == scopes_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "the controller runs no group named ", caller.group,
        " with a rendezvous (only `native` groups have one); was the group stopped, or did "
        "the controller lose its state? Re-apply the recipe"));
  }
  Scope& scope = it->second;
  if (caller.generation != scope.generation) {
    return absl::AbortedError(absl::StrCat(
        "rank ", caller.rank, " of group ", caller.group, " is from generation ", caller.generation,
        "; the group is at generation ", scope.generation, ": it was replaced, exit"));
  }
  if (!scope.open) return Ended(caller.group, caller.generation);
  if (!pki::ConstantTimeEquals(caller.token, scope.token)) {
    Log(LogLevel::kWarning, "rendezvous", "request with a wrong token refused",
        {{"group", caller.group},
         {"generation", absl::StrCat(caller.generation)},
         {"rank", absl::StrCat(caller.rank)}});
    return absl::PermissionDeniedError(absl::StrCat(
        "rank ", caller.rank, " of group ", caller.group, " generation ", caller.generation,
        " presented a rendezvous token that is not the generation's; fleet-engine reads it "
        "from FLEET_RENDEZVOUS_TOKEN, which the controller gives each rank through its agent"));
  }
  return &scope;
}

absl::Status RendezvousStore::CheckKey(absl::string_view key) const {
  if (key.empty() || key.size() > limits_.max_key_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a rendezvous key must be 1 to ", limits_.max_key_bytes, " bytes long, not ", key.size()));
  }
  return absl::OkStatus();
}

absl::Status RendezvousStore::Set(const RendezvousCaller& caller, absl::string_view key,
                                  std::string value) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Scope*> scope = Authorize(caller);
    if (!scope.ok()) return scope.status();
    Scope& s = **scope;
    if (value.size() > limits_.max_value_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the value of rendezvous key '", key, "' is ", value.size(),
                       " bytes; a value may hold at most ", limits_.max_value_bytes));
    }
    auto it = s.values.find(key);
    if (it == s.values.end() && s.values.size() >= limits_.max_keys) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "generation ", caller.generation, " of group ", caller.group, " already holds ",
          s.values.size(), " rendezvous keys, the most a generation may hold; key '", key,
          "' was not stored"));
    }
    for (auto w = s.waiters.begin(); w != s.waiters.end();) {
      if (w->key == key) {
        answers.push_back({std::move(w->done), value});
        w = s.waiters.erase(w);
      } else {
        ++w;
      }
    }
    if (it == s.values.end()) {
      s.values.emplace(std::string(key), std::move(value));
    } else {
      it->second = std::move(value);
    }
  }
  Deliver(answers);
  return absl::OkStatus();
}

void RendezvousStore::Get(const RendezvousCaller& caller, absl::string_view key,
                          absl::Time deadline, GetCallback done) {
  std::optional<absl::StatusOr<std::string>> answer;
  {
    absl::MutexLock lock(&mu_);
    answer = AnswerNow(caller, key, deadline);
    if (!answer.has_value()) {
      scopes_.find(caller.group)
          ->second.waiters.push_back({std::string(key), deadline, std::move(done)});
      return;
    }
  }
  std::move(done)(*std::move(answer));
}

std::optional<absl::StatusOr<std::string>> RendezvousStore::AnswerNow(
    const RendezvousCaller& caller, absl::string_view key, absl::Time deadline) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  absl::StatusOr<Scope*> scope = Authorize(caller);
  if (!scope.ok()) return scope.status();
  Scope& s = **scope;
  if (auto it = s.values.find(key); it != s.values.end()) return it->second;
  if (deadline <= clock_->Now()) {
    return absl::DeadlineExceededError(absl::StrCat("rendezvous key '", key, "' of group ",
                                                    caller.group, " generation ", caller.generation,
                                                    " is not set"));
  }
  if (s.waiters.size() >= limits_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat(s.waiters.size(), " requests of group ", caller.group, " generation ",
                     caller.generation, " already wait for rendezvous keys, the most allowed"));
  }
  return std::nullopt;
}

void RendezvousStore::Tick() {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto& [group, scope] : scopes_) {
      for (auto w = scope.waiters.begin(); w != scope.waiters.end();) {
        if (w->deadline > now) {
          ++w;
          continue;
        }
        answers.push_back({std::move(w->done),
                           absl::DeadlineExceededError(absl::StrCat(
                               "rendezvous key '", w->key, "' of group ", group, " generation ",
                               scope.generation, " was not set before the deadline"))});
        w = scope.waiters.erase(w);
      }
    }
  }
  Deliver(answers);
}

void RendezvousStore::Shutdown() {
  std::vector<Answer> answers;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [group, scope] : scopes_) {
      for (Waiter& w : scope.waiters) {
        answers.push_back(
            {std::move(w.done),
             absl::UnavailableError("the controller is shutting down; ask again once it is back")});
      }
      scope.waiters.clear();
    }
  }
  Deliver(answers);
}

size_t RendezvousStore::waiting() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [group, scope] : scopes_) n += scope.waiters.size();
  return n;
}

}  // namespace fleet::controller
