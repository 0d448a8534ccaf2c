// The healing policy without a network: the recipe's `restart:` and `health:` keys with their
// errors, the backoff and budget of RestartBudget under a fake clock, and log signatures counted
// in their sliding windows.
#include <string>

#include "absl/strings/str_cat.h"
#include "common/fake_clock.h"
#include "controller/groups/restart_budget.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/recipe.h"
#include "launch/signatures.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::string_view kV2 =
    "recipe_version: \"2\"\nname: demo\nengine: vllm\ncontainer: img\ncommand: run\n";

engine::Recipe MustParse(absl::string_view tail) {
  absl::StatusOr<engine::Recipe> r = engine::ParseRecipe("x.yaml", absl::StrCat(kV2, tail));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : engine::Recipe();
}

std::string ParseError(absl::string_view tail) {
  absl::StatusOr<engine::Recipe> r = engine::ParseRecipe("x.yaml", absl::StrCat(kV2, tail));
  EXPECT_FALSE(r.ok());
  return std::string(r.status().message());
}

TEST(RestartKeys, DefaultsAreTheIssueOnes) {
  engine::Recipe r = MustParse("");
  EXPECT_TRUE(r.restart.always);
  EXPECT_EQ(r.restart.initial_backoff, absl::Seconds(5));
  EXPECT_EQ(r.restart.max_backoff, absl::Seconds(300));
  EXPECT_EQ(r.restart.max_restarts, 5);
  EXPECT_EQ(r.restart.window, absl::Minutes(10));
  EXPECT_EQ(r.health.stall_timeout, absl::Seconds(120));
  EXPECT_TRUE(r.health.signatures.empty());
}

TEST(RestartKeys, EveryKeyIsRead) {
  engine::Recipe r = MustParse(
      "restart:\n  policy: never\n  initial_backoff: 200ms\n  max_backoff: 2s\n"
      "  max_restarts: 2\n  window: 1m\nhealth:\n  stall_timeout: 30s\n  signatures:\n"
      "    - pattern: \"boom [0-9]+\"\n      count: 2\n      window: 10s\n      action: fail\n"
      "      fix: stop doing that\n    - {pattern: wedged}\n");
  EXPECT_FALSE(r.restart.always);
  EXPECT_EQ(r.restart.initial_backoff, absl::Milliseconds(200));
  EXPECT_EQ(r.restart.max_backoff, absl::Seconds(2));
  EXPECT_EQ(r.restart.max_restarts, 2);
  EXPECT_EQ(r.restart.window, absl::Minutes(1));
  EXPECT_EQ(r.health.stall_timeout, absl::Seconds(30));
  ASSERT_EQ(r.health.signatures.size(), 2u);
  EXPECT_EQ(r.health.signatures[0].pattern, "boom [0-9]+");
  EXPECT_EQ(r.health.signatures[0].count, 2);
  EXPECT_EQ(r.health.signatures[0].window, absl::Seconds(10));
  EXPECT_EQ(r.health.signatures[0].action, engine::SignatureAction::kFail);
  EXPECT_EQ(r.health.signatures[0].fix, "stop doing that");
  EXPECT_EQ(r.health.signatures[1].count, 1);
  EXPECT_EQ(r.health.signatures[1].action, engine::SignatureAction::kRestart);
}

TEST(RestartKeys, BadValuesNameTheLineAndTheFix) {
  EXPECT_EQ(ParseError("restart:\n  policy: sometimes\n"),
            "x.yaml:7:11: \"restart.policy\" must be always or never, found \"sometimes\"");
  EXPECT_EQ(ParseError("restart:\n  initial_backof: 5s\n"),
            "x.yaml:7:3: unknown key \"restart.initial_backof\"; did you mean "
            "\"initial_backoff\"?");
  EXPECT_EQ(ParseError("restart:\n  initial_backoff: 5\n"),
            "x.yaml:7:20: \"restart.initial_backoff\" must be a positive duration such as "
            "\"500ms\", \"5s\" or \"10m\", found \"5\"");
  EXPECT_EQ(ParseError("restart:\n  max_restarts: -1\n"),
            "x.yaml:7:17: \"restart.max_restarts\" must be an integer from 0 to 1000, found "
            "\"-1\"");
  EXPECT_EQ(ParseError("restart:\n  initial_backoff: 10s\n  max_backoff: 1s\n"),
            "x.yaml:8:16: \"restart.max_backoff\" (1s) is below \"restart.initial_backoff\" "
            "(10s); raise max_backoff");
  EXPECT_EQ(ParseError("restart: always\n"),
            "x.yaml:6:10: \"restart\" must be a map such as {policy: always, initial_backoff: "
            "5s}, found \"always\"");
  // The rest of the message is the C++ library's own.
  EXPECT_THAT(ParseError("health:\n  signatures:\n    - pattern: \"(unclosed\"\n"),
              HasSubstr("x.yaml:8:16: \"health.signatures[0].pattern\" is not a valid regular "
                        "expression (ECMAScript): "));
  EXPECT_EQ(ParseError("health:\n  signatures:\n    - {count: 2}\n"),
            "x.yaml:8:7: \"health.signatures[0]\" needs a pattern, e.g. {pattern: "
            "\"EngineDeadError\"}");
  EXPECT_EQ(ParseError("health:\n  signatures:\n    - {pattern: x, action: reboot}\n"),
            "x.yaml:8:28: \"health.signatures[0].action\" must be restart or fail, found "
            "\"reboot\"");
  EXPECT_EQ(ParseError("health:\n  signatures:\n    - {pattern: x, windw: 2m}\n"),
            "x.yaml:8:20: unknown key \"health.signatures[0].windw\"; did you mean \"window\"?");
  EXPECT_THAT(absl::StatusOr<engine::Recipe>(
                  engine::ParseRecipe("x.yaml",
                                      "recipe_version: \"1\"\nname: d\ncontainer: i\n"
                                      "command: run\nrestart:\n  policy: never\n"))
                  .status()
                  .message(),
              HasSubstr("\"restart\" is a version-2 key"));
}

TEST(RestartBudget, FirstRestartIsImmediateThenBackoffDoublesToItsCap) {
  FakeClock clock;
  engine::RestartSettings s{.always = true,
                            .initial_backoff = absl::Seconds(5),
                            .max_backoff = absl::Seconds(12),
                            .max_restarts = 5,
                            .window = absl::Minutes(10)};
  controller::RestartBudget budget(s, &clock, {});
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 5; ++i) {
    controller::RestartBudget::Decision d = budget.Decide();
    ASSERT_TRUE(d.restart) << i;
    EXPECT_EQ(d.restarts_in_window, i);
    delays.push_back(d.delay);
    budget.Record();
    clock.Advance(d.delay + absl::Seconds(1));
  }
  EXPECT_THAT(delays,
              ::testing::ElementsAre(absl::ZeroDuration(), absl::Seconds(5), absl::Seconds(10),
                                     absl::Seconds(12), absl::Seconds(12)));
  // The sixth failure within the window: the budget is spent.
  EXPECT_FALSE(budget.Decide().restart);
  EXPECT_EQ(budget.Decide().restarts_in_window, 5);
}

TEST(RestartBudget, RestartsOlderThanTheWindowNoLongerCount) {
  FakeClock clock;
  engine::RestartSettings s;
  s.max_restarts = 2;
  s.window = absl::Minutes(1);
  controller::RestartBudget budget(s, &clock, {clock.Now() - absl::Seconds(50)});
  EXPECT_EQ(budget.Decide().delay, absl::Seconds(5));
  budget.Record();
  EXPECT_FALSE(budget.Decide().restart);
  clock.Advance(absl::Seconds(11));  // the first restart is now 61 s old
  controller::RestartBudget::Decision d = budget.Decide();
  EXPECT_TRUE(d.restart);
  EXPECT_EQ(d.restarts_in_window, 1);
  EXPECT_EQ(budget.history().size(), 1u);
}

TEST(RestartBudget, PolicyNeverNeverRestarts) {
  FakeClock clock;
  engine::RestartSettings s;
  s.always = false;
  EXPECT_FALSE(controller::RestartBudget(s, &clock, {}).Decide().restart);
}

TEST(Signatures, VllmWedgeRestartsOnTheThirdLineWithinThreeMinutes) {
  FakeClock clock;
  engine::SignatureCounter counter(engine::EffectiveSignatures(MustParse("")));
  const std::string wedge =
      "WARNING shm_broadcast.py:466] No available shared memory broadcast block found in 60 "
      "seconds.\n";
  EXPECT_FALSE(counter.Feed(wedge, clock.Now()).has_value());
  clock.Advance(absl::Minutes(1));
  EXPECT_FALSE(counter.Feed(wedge, clock.Now()).has_value());
  clock.Advance(absl::Minutes(1));
  std::optional<engine::SignatureMatch> m = counter.Feed(wedge, clock.Now());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->seen, 3);
  EXPECT_EQ(m->signature.action, engine::SignatureAction::kRestart);
  EXPECT_THAT(m->line, HasSubstr("No available shared memory broadcast block"));
}

TEST(Signatures, LinesSpreadBeyondTheWindowDoNotFire) {
  FakeClock clock;
  engine::SignatureCounter counter(engine::EffectiveSignatures(MustParse("")));
  const std::string wedge = "No available shared memory broadcast block found in 60 seconds\n";
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(counter.Feed(wedge, clock.Now()).has_value()) << i;
    clock.Advance(absl::Seconds(100));  // two in any 3 minutes, never three
  }
}

TEST(Signatures, EngineDeadRestartsAtOnceEvenWhenSplitAcrossReads) {
  FakeClock clock;
  engine::SignatureCounter counter(engine::EffectiveSignatures(MustParse("")));
  EXPECT_FALSE(counter.Feed("vllm.v1.engine.exceptions.Engine", clock.Now()).has_value());
  std::optional<engine::SignatureMatch> m = counter.Feed("DeadError: boom\n", clock.Now());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->line, "vllm.v1.engine.exceptions.EngineDeadError: boom");
}

TEST(Signatures, UnhealableOnesFailWithTheFixForTheRuntime) {
  FakeClock clock;
  const std::string line =
      "ibv_reg_mr failed for mr 0x7f: Cannot allocate memory\nEngineDeadError\n";
  engine::SignatureCounter docker(engine::EffectiveSignatures(MustParse("")));
  std::optional<engine::SignatureMatch> m = docker.FeedAll(line, clock.Now());
  ASSERT_TRUE(m.has_value());
  // Failing signatures win over restarting ones seen in the same output.
  EXPECT_EQ(m->signature.action, engine::SignatureAction::kFail);
  EXPECT_THAT(m->signature.fix, HasSubstr("runtime.ulimits.memlock: unlimited"));
  EXPECT_THAT(m->signature.fix, HasSubstr("--ulimit memlock=-1:-1"));

  absl::StatusOr<engine::Recipe> process = engine::ParseRecipe(
      "x.yaml", "recipe_version: \"2\"\nname: d\nruntime: process\ncommand: run\n");
  ASSERT_TRUE(process.ok());
  engine::SignatureCounter counter(engine::EffectiveSignatures(*process));
  m = counter.FeedAll("ibv_reg_mr: Cannot allocate memory", clock.Now());
  ASSERT_TRUE(m.has_value());
  EXPECT_THAT(m->signature.fix, HasSubstr("LimitMEMLOCK=infinity"));
  EXPECT_THAT(m->signature.fix, Not(HasSubstr("--ulimit")));

  for (const char* text : {"vllm: error: unrecognized arguments: serve",
                           "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB",
                           "docker: Error response from daemon: unknown or invalid runtime name: "
                           "nvidia."}) {
    engine::SignatureCounter c(engine::EffectiveSignatures(MustParse("")));
    std::optional<engine::SignatureMatch> f = c.FeedAll(text, clock.Now());
    ASSERT_TRUE(f.has_value()) << text;
    EXPECT_EQ(f->signature.action, engine::SignatureAction::kFail) << text;
    EXPECT_FALSE(f->signature.fix.empty()) << text;
  }
}

TEST(Signatures, RecipeEntriesAddToAndReplaceTheBuiltInOnes) {
  engine::Recipe r = MustParse(
      "health:\n  signatures:\n"
      "    - {pattern: \"No available shared memory broadcast block found\", count: 1}\n"
      "    - {pattern: \"my engine gave up\", action: fail, fix: call someone}\n");
  std::vector<engine::LogSignature> all = engine::EffectiveSignatures(r);
  int shm = 0;
  for (const engine::LogSignature& s : all) {
    if (s.pattern == "No available shared memory broadcast block found") {
      ++shm;
      EXPECT_EQ(s.count, 1);
    }
  }
  EXPECT_EQ(shm, 1);
  FakeClock clock;
  engine::SignatureCounter counter(all);
  std::optional<engine::SignatureMatch> m =
      counter.Feed("No available shared memory broadcast block found in 60 s\n", clock.Now());
  ASSERT_TRUE(m.has_value());
  m = counter.Feed("oh no: my engine gave up\n", clock.Now());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->signature.fix, "call someone");
  // Engines other than vLLM have only the unhealable built-ins.
  absl::StatusOr<engine::Recipe> exec =
      engine::ParseRecipe("x.yaml", "recipe_version: \"2\"\nname: d\nengine: exec\ncommand: run\n");
  ASSERT_TRUE(exec.ok());
  engine::SignatureCounter plain(engine::EffectiveSignatures(*exec));
  EXPECT_FALSE(plain.FeedAll("EngineDeadError\n", clock.Now()).has_value());
}

}  // namespace
}  // namespace fleet
