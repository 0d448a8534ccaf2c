// Who may join a real cluster and call what: agents join with a join token (by --controller or
// by being adopted through discovery), a wrong, expired or used-up token is refused, every
// connection is mutual TLS and every certificate is held to its role, a removed node stays out,
// the CA survives a controller crash, node certificates are renewed before they expire, and the
// token's secret never leaks into logs, process lists or listings.
//
// Each test runs its own `fleet controller` and agents on a five-host TestNetwork. Hosts live in
// network namespaces when the test runs as root; elsewhere, or with FLEET_TEST_FALLBACK=1, they
// are 127.0.0.x addresses and the discovery tests are skipped.

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif
#ifndef GRPC_PROBE_BINARY
#error "GRPC_PROBE_BINARY must name the grpc_probe helper (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kHosts = 5;
constexpr int kAgents = kHosts - 1;
// A joining agent is Ready within this (DESIGN.md); discovery's own listening comes on top.
constexpr absl::Duration kJoinTimeout = absl::Seconds(10);
// `fleet discover` listens this long by default (its --timeout).
constexpr absl::Duration kDiscoverListen = absl::Seconds(2);
// What a `fleet` command adds to its work: process start, TLS handshake, one round trip.
constexpr absl::Duration kCliSlack = absl::Milliseconds(1500);
// An agent that cannot join says why and exits; the bound is generous for a loaded CI machine.
constexpr absl::Duration kRefusalTimeout = absl::Seconds(15);
// The agent's "waiting to be adopted" line comes milliseconds after it starts.
constexpr absl::Duration kAgentStartTimeout = absl::Seconds(5);

// A token's parts: fleet1.<id>.<secret>.<ca sha256>.
std::vector<std::string> TokenParts(const std::string& token) { return absl::StrSplit(token, '.'); }

std::string RandomHex(size_t digits) {
  std::random_device random;
  std::string out;
  while (out.size() < digits) out += absl::StrFormat("%08x", random());
  return out.substr(0, digits);
}

// The item of a `fleet discover -o json` document that answered from `ip`, or nullptr.
const Json* FindDiscovered(const Json& doc, absl::string_view ip) {
  for (const Json& item : doc["items"]) {
    if (item.value("address", "") == ip) return &item;
  }
  return nullptr;
}

// "10.1.2.3 proven=true joined=false adopted=true ...", for failure messages.
std::string DiscoverySummary(const Json& doc) {
  std::string out;
  for (const Json& item : doc["items"]) {
    absl::StrAppend(&out, out.empty() ? "" : "; ", item.value("address", "?"),
                    " proven=", item.value("proven", false) ? "true" : "false",
                    " joined=", item.value("joined", false) ? "true" : "false",
                    " adopted=", item.value("adopted", false) ? "true" : "false",
                    " error=", item.value("adoptError", ""));
  }
  return out.empty() ? "(nothing discovered)" : out;
}

class TrustTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
  }

  // Why a test that needs discovery cannot run here, or empty.
  std::string DiscoveryUnavailable() const {
    if (network_->isolated()) return "";
    return absl::StrCat(
        "discovery probes are broadcast on the hosts' network, so this test needs network "
        "namespaces: ",
        network_->fallback_reason());
  }

  // Runs `fleet args...` as the admin and parses its JSON output; fails the test on a non-zero
  // exit or anything but a JSON object with "items".
  Json CliJson(const std::vector<std::string>& args, absl::Duration timeout = absl::Seconds(15)) {
    absl::StatusOr<CommandResult> result = cluster_->RunCli(args, timeout);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return Json::object();
    EXPECT_EQ(result->exit_code, 0) << absl::StrJoin(args, " ") << ": " << result->stderr_text;
    Json doc = Json::parse(result->stdout_text, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(!doc.is_discarded() && doc.is_object() && doc.contains("items"))
        << absl::StrJoin(args, " ") << " printed: " << result->stdout_text;
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("items")) return Json::object();
    return doc;
  }

  // Waits until `role`'s log contains `text`.
  bool WaitForLog(const std::string& role, absl::string_view text, absl::Duration timeout) {
    return TestCluster::WaitFor(
        [&] {
          absl::StatusOr<std::string> log = cluster_->ReadLog(role);
          return log.ok() && absl::StrContains(*log, text);
        },
        timeout);
  }

  int CountInLog(const std::string& role, absl::string_view text) {
    absl::StatusOr<std::string> log = cluster_->ReadLog(role);
    if (!log.ok()) return 0;
    const std::string needle(text);
    int count = 0;
    for (size_t at = log->find(needle); at != std::string::npos; at = log->find(needle, at + 1)) {
      ++count;
    }
    return count;
  }

  // Runs grpc_probe on host 0 (which reaches every host) and returns its line, "CODE: message".
  std::string Probe(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {GRPC_PROBE_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<CommandResult> result =
        RunCommand(network_->Wrap(0, std::move(argv)), std::chrono::seconds(15));
    if (!result.ok())
      return absl::StrCat("(grpc_probe did not finish: ", result.status().ToString(), ")");
    if (result->exit_code != 0) {
      return absl::StrCat("(grpc_probe exited with ", result->exit_code, ": ", result->stderr_text,
                          ")");
    }
    return std::string(absl::StripTrailingAsciiWhitespace(result->stdout_text));
  }

  // The ids of the join tokens `fleet token list -o json` shows.
  std::vector<std::string> TokenIds() {
    std::vector<std::string> ids;
    for (const Json& item : CliJson({"token", "list", "-o", "json"})["items"]) {
      ids.push_back(item.value("id", ""));
    }
    return ids;
  }
};

// The code a grpc_probe line starts with.
std::string CodeOf(const std::string& probe_line) {
  return std::string(probe_line.substr(0, probe_line.find(':')));
}

// Four agents that know no controller but hold a join token answer `fleet discover`, prove the
// token, are adopted, join and become Ready, with no address typed anywhere.
TEST_F(TrustTest, DiscoveredAgentsAreAdoptedAndBecomeReady) {
  if (std::string why = DiscoveryUnavailable(); !why.empty()) GTEST_SKIP() << why;
  ASSERT_TRUE(cluster_->StartController().ok());
  for (int i = 1; i <= kAgents; ++i) {
    ASSERT_TRUE(cluster_->StartAgent(i, {.with_controller = false}).ok());
  }
  // The agent logs this once its discovery responder listens.
  for (int i = 1; i <= kAgents; ++i) {
    ASSERT_TRUE(WaitForLog(TestCluster::AgentName(i), "waiting to be adopted", kAgentStartTimeout))
        << TestCluster::AgentName(i) << " did not start waiting for adoption";
  }

  const absl::Time start = absl::Now();
  Json found = CliJson({"discover", "--adopt", "-o", "json"});
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(HasFailure());
  std::printf("[ TIMING   ] `fleet discover --adopt` (listening %s) found %zu agents in %s\n",
              absl::FormatDuration(kDiscoverListen).c_str(), found["items"].size(),
              absl::FormatDuration(took).c_str());
  // Every agent answered inside the command's listening window.
  EXPECT_LT(took, kDiscoverListen + kCliSlack);
  EXPECT_EQ(found["items"].size(), static_cast<size_t>(kAgents)) << DiscoverySummary(found);
  std::map<std::string, std::string> discovered_ids;
  for (int i = 1; i <= kAgents; ++i) {
    const std::string name = TestCluster::AgentName(i);
    const Json* item = FindDiscovered(found, network_->host(i).ip);
    ASSERT_NE(item, nullptr) << name << " at " << network_->host(i).ip
                             << " did not answer: " << DiscoverySummary(found);
    SCOPED_TRACE(item->dump(2));
    EXPECT_TRUE(item->value("proven", false)) << name << " holds this cluster's token";
    EXPECT_FALSE(item->value("joined", true));
    EXPECT_TRUE(item->value("adopted", false)) << item->value("adoptError", "");
    absl::StatusOr<std::string> id = cluster_->AgentNodeId(i);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(item->value("nodeId", ""), *id);
    discovered_ids[name] = *id;
  }

  Json doc;
  ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kJoinTimeout - (absl::Now() - start), &doc))
      << "adopted agents must be Ready within " << absl::FormatDuration(kJoinTimeout)
      << " of the discover command";
  std::printf("[ TIMING   ] %d adopted agents Ready %s after `fleet discover --adopt` started\n",
              kAgents, absl::FormatDuration(absl::Now() - start).c_str());
  for (int i = 1; i <= kAgents; ++i) {
    const Json* node = FindNode(doc, TestCluster::AgentName(i));
    ASSERT_NE(node, nullptr);
    EXPECT_EQ(node->value("id", ""), discovered_ids[TestCluster::AgentName(i)]);
    EXPECT_EQ(node->value("address", ""), cluster_->agent_address(i));
  }
  EXPECT_EQ(doc["items"].size(), static_cast<size_t>(kAgents)) << Summary(doc);

  // An adopted agent remembers its controller: restarted, still without --controller (as its
  // service unit starts it), it comes back as the same node.
  ASSERT_TRUE(cluster_->KillAgent(1, SIGKILL).ok());
  const int registered = CountInLog(TestCluster::AgentName(1), "agent registered");
  ASSERT_TRUE(cluster_->StartAgent(1, {.with_controller = false}).ok());
  EXPECT_TRUE(TestCluster::WaitFor(
      [&] { return CountInLog(TestCluster::AgentName(1), "agent registered") > registered; },
      kJoinTimeout))
      << "the adopted agent did not return to its controller after a restart";
  ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kJoinTimeout, &doc));
  EXPECT_EQ(FindNode(doc, TestCluster::AgentName(1))->value("id", ""),
            discovered_ids[TestCluster::AgentName(1)]);
}

// An agent whose token is not this cluster's is shown to the operator as unproven and is never
// adopted, even by a controller that adopts every proven agent by itself; given the
// controller's address, it refuses to join a controller whose CA its token does not pin.
TEST_F(TrustTest, StaticNodeListIsProbedAndAdoptedWithoutBroadcast) {
  if (std::string why = DiscoveryUnavailable(); !why.empty()) GTEST_SKIP() << why;
  // Hosts 1 and 2 are listed in the controller's config; 3 and 4 are not, and since a static
  // list alone probes only its addresses, they must never be adopted.
  const std::string config = cluster_->temp_dir() + "/controller-config.yaml";
  ASSERT_TRUE(
      WriteFileAtomically(
          config, absl::StrCat("nodes:\n  - {name: static-1, address: ", network_->host(1).ip,
                               "}\n  - {name: static-2, address: ", network_->host(2).ip, "}\n"))
          .ok());
  ASSERT_TRUE(cluster_->StartController({"--config", config}).ok());
  for (int i = 1; i <= kAgents; ++i) {
    ASSERT_TRUE(cluster_->StartAgent(i, {.with_controller = false}).ok());
  }
  const std::vector<std::string> listed = {TestCluster::AgentName(1), TestCluster::AgentName(2)};
  Json doc;
  ASSERT_TRUE(WaitForNodes([&](const Json& d) { return AllReady(d, listed); }, kJoinTimeout, &doc))
      << "the statically listed nodes were not adopted: " << Summary(doc);
  // Three more auto-adopt rounds (every 2 s, each logs "probe finished"): the unlisted agents
  // stay out.
  const int rounds = CountInLog("controller", "probe finished");
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] { return CountInLog("controller", "probe finished") >= rounds + 3; }, kJoinTimeout))
      << "the controller did not probe its static node list every 2 s";
  absl::StatusOr<Json> after = cluster_->Nodes();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)["items"].size(), 2u) << Summary(*after);
  EXPECT_EQ(FindNode(*after, TestCluster::AgentName(3)), nullptr);
  EXPECT_EQ(FindNode(*after, TestCluster::AgentName(4)), nullptr);
}

TEST_F(TrustTest, AgentsWithAWrongTokenAreUnprovenAndNeverAdopted) {
  if (std::string why = DiscoveryUnavailable(); !why.empty()) GTEST_SKIP() << why;
  // A token of another cluster: another controller, with its own CA, on the same host and port,
  // made and stopped before this cluster's controller starts.
  std::string foreign;
  {
    absl::StatusOr<std::unique_ptr<TestCluster>> other =
        TestCluster::Create(*network_, FLEET_BINARY);
    ASSERT_TRUE(other.ok()) << other.status();
    ASSERT_TRUE((*other)->StartController().ok());
    absl::StatusOr<std::string> token = (*other)->CreateToken();
    ASSERT_TRUE(token.ok()) << token.status();
    foreign = *token;
    ASSERT_TRUE((*other)->KillController(SIGTERM).ok());
  }
  ASSERT_TRUE(cluster_->StartController({"--auto-adopt"}).ok());
  absl::StatusOr<std::string> ours = cluster_->ClusterToken();
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_EQ(TokenParts(*ours).size(), 4u) << *ours;
  ASSERT_EQ(TokenParts(foreign).size(), 4u) << foreign;
  // Well formed and pinning this cluster's CA, but with an id and secret nobody issued.
  const std::string forged =
      absl::StrCat("fleet1.", RandomHex(16), ".", RandomHex(32), ".", TokenParts(*ours)[3]);
  ASSERT_NE(TokenParts(foreign)[3], TokenParts(*ours)[3]) << "the two clusters share a CA";

  constexpr int kForeign = 1, kForged = 2, kGood = 3, kForeignDirect = 4;
  ASSERT_TRUE(cluster_->SetJoinToken(kForeign, foreign).ok());
  ASSERT_TRUE(cluster_->SetJoinToken(kForged, forged).ok());
  ASSERT_TRUE(cluster_->SetJoinToken(kForeignDirect, foreign).ok());
  for (int i : {kForeign, kForged, kGood}) {
    ASSERT_TRUE(cluster_->StartAgent(i, {.with_controller = false}).ok());
  }
  ASSERT_TRUE(cluster_->StartAgent(kForeignDirect).ok());

  // The agent with the right token shows that adoption works in this very cluster.
  const std::string good = TestCluster::AgentName(kGood);
  ASSERT_TRUE(
      WaitForNodes([&](const Json& d) { return StateOf(d, good) == "Ready"; }, kJoinTimeout))
      << "the auto-adopting controller did not adopt " << good;

  Json found = CliJson({"discover", "-o", "json"});
  ASSERT_FALSE(HasFailure());
  for (int i : {kForeign, kForged}) {
    const Json* item = FindDiscovered(found, network_->host(i).ip);
    ASSERT_NE(item, nullptr) << TestCluster::AgentName(i)
                             << " did not answer: " << DiscoverySummary(found);
    EXPECT_FALSE(item->value("proven", true)) << item->dump(2);
    EXPECT_FALSE(item->value("adopted", true)) << item->dump(2);
    EXPECT_FALSE(item->value("joined", true)) << item->dump(2);
  }
  const Json* good_item = FindDiscovered(found, network_->host(kGood).ip);
  ASSERT_NE(good_item, nullptr) << DiscoverySummary(found);
  EXPECT_TRUE(good_item->value("proven", false)) << good_item->dump(2);
  EXPECT_TRUE(good_item->value("joined", false)) << good_item->dump(2);

  // Two more auto-adopt rounds (every 2 s): nobody but the good agent is ever listed.
  std::string intruder;
  TestCluster::WaitFor(
      [&] {
        absl::StatusOr<Json> nodes = cluster_->Nodes();
        if (nodes.ok() && (*nodes)["items"].size() != 1 && intruder.empty()) {
          intruder = Summary(*nodes);
        }
        return false;
      },
      absl::Seconds(4));
  EXPECT_EQ(intruder, "") << "only " << good << " may be a node";
  for (int i : {kForeign, kForged}) {
    EXPECT_TRUE(cluster_->AgentRunning(i))
        << TestCluster::AgentName(i) << " should still wait for a controller that proves it";
  }

  // Told the address, the agent with the foreign token checks the controller's CA against its
  // token, sends nothing, and exits saying why.
  absl::StatusOr<int> exited = cluster_->WaitForAgentExit(kForeignDirect, kRefusalTimeout);
  ASSERT_TRUE(exited.ok()) << exited.status();
  EXPECT_NE(*exited, 0) << DescribeWaitStatus(*exited);
  absl::StatusOr<std::string> log = cluster_->ReadLog(TestCluster::AgentName(kForeignDirect));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE(absl::StrContains(*log, "another cluster")) << *log;
}

// Nothing without a certificate of the cluster CA gets an answer: not a plaintext client, not a
// TLS client that presents no certificate.
TEST_F(TrustTest, ClientsWithoutAClusterCertificateAreRejected) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(1));
  WaitAllReady(1, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<std::string> node_id = cluster_->AgentNodeId(1);
  ASSERT_TRUE(node_id.ok()) << node_id.status();
  const std::vector<std::string> tokens_before = TokenIds();

  const std::string pki = absl::StrCat(cluster_->controller_state_dir(), "/pki");
  const std::string ca = absl::StrCat(pki, "/ca.crt");
  const std::vector<std::string> controller = {"--address", cluster_->controller_address()};
  const std::vector<std::string> agent = {
      "--address", cluster_->agent_address(1), "--node-id", *node_id, "--call", "agent.Describe"};
  auto with = [](std::vector<std::string> base, const std::vector<std::string>& more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
  };
  struct Case {
    std::string what;
    std::vector<std::string> args;
    std::string code;
  };
  const std::vector<Case> cases = {
      // The controller's TLS handshake fails for a client that does not speak TLS.
      {"plaintext ListNodes on the controller",
       with(controller, {"--call", "controller.ListNodes", "--credentials", "plaintext"}),
       "UNAVAILABLE"},
      // The controller lets a caller without a certificate in (a joining agent has none) and
      // then refuses everything but the join calls.
      {"TLS without a certificate, ListNodes on the controller",
       with(controller, {"--call", "controller.ListNodes", "--credentials", "tls", "--ca", ca}),
       "UNAUTHENTICATED"},
      {"TLS without a certificate, CreateToken on the controller",
       with(controller, {"--call", "controller.CreateToken", "--credentials", "tls-unverified"}),
       "UNAUTHENTICATED"},
      // An agent requires a client certificate in the handshake itself.
      {"plaintext Describe on an agent", with(agent, {"--credentials", "plaintext"}),
       "UNAVAILABLE"},
      {"TLS without a certificate, Describe on an agent",
       with(agent, {"--credentials", "tls", "--ca", ca}), "UNAVAILABLE"},
      // The same calls with the right credentials succeed, so the refusals above are the
      // credentials' doing.
      {"the admin's ListNodes",
       with(controller, {"--call", "controller.ListNodes", "--credentials", "mtls", "--ca", ca,
                         "--cert", pki + "/admin.crt", "--key", pki + "/admin.key"}),
       "OK"},
      {"the controller's Describe",
       with(agent, {"--credentials", "mtls", "--ca", ca, "--cert", pki + "/controller.crt", "--key",
                    pki + "/controller.key"}),
       "OK"},
  };
  for (const Case& c : cases) {
    const std::string line = Probe(c.args);
    std::printf("[ PROBE    ] %s: %s\n", c.what.c_str(), line.c_str());
    EXPECT_EQ(CodeOf(line), c.code) << c.what << ": " << line;
  }
  EXPECT_EQ(TokenIds(), tokens_before) << "a refused CreateToken made a token";
}

// A certificate of the cluster CA is good only for its role: a node's certificate cannot act as
// the admin, and neither the admin's nor another node's can call an agent.
TEST_F(TrustTest, CertificatesOfTheWrongRoleAreRejected) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(2));
  WaitAllReady(2, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<std::string> node2_id = cluster_->AgentNodeId(2);
  ASSERT_TRUE(node2_id.ok()) << node2_id.status();
  const std::vector<std::string> tokens_before = TokenIds();

  const std::string pki = absl::StrCat(cluster_->controller_state_dir(), "/pki");
  const std::string node1_pki = absl::StrCat(cluster_->agent_state_dir(1), "/pki");
  const std::vector<std::string> as_node1 = {"--credentials", "mtls",
                                             "--ca",          node1_pki + "/ca.crt",
                                             "--cert",        node1_pki + "/node.crt",
                                             "--key",         node1_pki + "/node.key"};
  const std::vector<std::string> as_admin = {
      "--credentials",   "mtls", "--ca", pki + "/ca.crt", "--cert", pki + "/admin.crt", "--key",
      pki + "/admin.key"};
  auto cat = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::vector<std::string> describe_node2 = {
      "--address", cluster_->agent_address(2), "--node-id", *node2_id, "--call", "agent.Describe"};
  struct Case {
    std::string what;
    std::vector<std::string> args;
  };
  const std::vector<Case> cases = {
      {"node-1's certificate calling ListNodes",
       cat({"--address", cluster_->controller_address(), "--call", "controller.ListNodes"},
           as_node1)},
      {"node-1's certificate calling CreateToken",
       cat({"--address", cluster_->controller_address(), "--call", "controller.CreateToken"},
           as_node1)},
      {"the admin certificate calling Describe on node-2", cat(describe_node2, as_admin)},
      {"node-1's certificate calling Describe on node-2", cat(describe_node2, as_node1)},
  };
  for (const Case& c : cases) {
    const std::string line = Probe(c.args);
    std::printf("[ PROBE    ] %s: %s\n", c.what.c_str(), line.c_str());
    EXPECT_EQ(CodeOf(line), "PERMISSION_DENIED") << c.what << ": " << line;
  }
  EXPECT_EQ(TokenIds(), tokens_before) << "a node's certificate made a join token";
}

// `fleet node remove` is final: the removed node's agent, running on or restarted, cannot come
// back with its certificate.
TEST_F(TrustTest, RemovedNodeNeverComesBack) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  constexpr int kVictim = 2;
  const std::string victim = TestCluster::AgentName(kVictim);
  std::vector<std::string> others;
  for (const std::string& name : AgentNames(kAgents)) {
    if (name != victim) others.push_back(name);
  }

  absl::StatusOr<CommandResult> removed = cluster_->RunCli({"node", "remove", victim});
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(removed->exit_code, 0) << removed->stderr_text;

  // Polls `fleet nodes` for `how_long`; the first listing that shows the victim, or leaves
  // another node not Ready, is kept for the failure message.
  auto watch = [&](absl::Duration how_long) {
    std::string wrong;
    TestCluster::WaitFor(
        [&] {
          absl::StatusOr<Json> nodes = cluster_->Nodes();
          if (!nodes.ok()) {
            if (wrong.empty()) wrong = nodes.status().ToString();
          } else if ((FindNode(*nodes, victim) != nullptr || !AllReady(*nodes, others)) &&
                     wrong.empty()) {
            wrong = Summary(*nodes);
          }
          return false;
        },
        how_long);
    return wrong;
  };
  EXPECT_EQ(watch(absl::Seconds(3)), "") << victim << " was removed while its agent ran on";

  // Restarted, the agent still holds only its revoked certificate; the controller, killed and
  // restarted meanwhile, still knows the revocation from its store.
  if (cluster_->AgentRunning(kVictim)) {
    ASSERT_TRUE(cluster_->KillAgent(kVictim, SIGKILL).ok());
  }
  ASSERT_TRUE(cluster_->RestartController().ok());
  ASSERT_TRUE(cluster_->StartAgent(kVictim).ok());
  EXPECT_EQ(watch(absl::Seconds(8)), "")
      << victim << " was removed, then its agent and the controller restarted";
  absl::StatusOr<std::string> log = cluster_->ReadLog(victim);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE(absl::StrContains(*log, "revoked"))
      << "the removed agent's log should say its certificate was revoked: " << *log;
}

// A token that expired, or was used as often as allowed, is refused: the agent says so and
// exits instead of retrying forever.
TEST_F(TrustTest, ExpiredAndUsedUpTokensAreRefused) {
  ASSERT_TRUE(cluster_->StartController().ok());
  absl::StatusOr<std::string> expiring = cluster_->CreateToken(0, absl::Seconds(1));
  ASSERT_TRUE(expiring.ok()) << expiring.status();
  const absl::Time expiring_made = absl::Now();
  absl::StatusOr<std::string> once = cluster_->CreateToken(1);
  ASSERT_TRUE(once.ok()) << once.status();

  constexpr int kExpired = 1, kFirst = 2, kSecond = 3;
  ASSERT_TRUE(cluster_->SetJoinToken(kExpired, *expiring).ok());
  ASSERT_TRUE(cluster_->SetJoinToken(kFirst, *once).ok());
  ASSERT_TRUE(cluster_->SetJoinToken(kSecond, *once).ok());
  // The first agent uses up the single-use token.
  ASSERT_TRUE(cluster_->StartAgent(kFirst).ok());
  ASSERT_TRUE(WaitForNodes(
      [&](const Json& d) { return StateOf(d, TestCluster::AgentName(kFirst)) == "Ready"; },
      kJoinTimeout));
  // Expiry is wall-clock time, so this waits for the time itself: the 1 s lifetime, counted from
  // after the controller made the token, and a second of slack.
  absl::SleepFor(expiring_made + absl::Seconds(2) - absl::Now());
  ASSERT_TRUE(cluster_->StartAgent(kExpired).ok());
  ASSERT_TRUE(cluster_->StartAgent(kSecond).ok());
  const absl::Time started = absl::Now();

  for (auto [i, reason] : {std::pair{kExpired, "expired"}, std::pair{kSecond, "used up"}}) {
    const std::string name = TestCluster::AgentName(i);
    SCOPED_TRACE(name);
    absl::StatusOr<int> exited = cluster_->WaitForAgentExit(i, kRefusalTimeout);
    ASSERT_TRUE(exited.ok()) << name << " must give up on a token that is " << reason << ": "
                             << exited.status();
    std::printf("[ TIMING   ] %s (token %s) %s %s after it started\n", name.c_str(), reason,
                DescribeWaitStatus(*exited).c_str(),
                absl::FormatDuration(absl::Now() - started).c_str());
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) != 0) << DescribeWaitStatus(*exited);
    absl::StatusOr<std::string> log = cluster_->ReadLog(name);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_TRUE(absl::StrContains(*log, reason))
        << "the error must say the token is " << reason << ": " << *log;
  }
  absl::StatusOr<Json> nodes = cluster_->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ((*nodes)["items"].size(), 1u) << Summary(*nodes);
}

// A controller killed -9 comes back with the same CA: the admin's credential still works, and
// every agent reconnects with its certificate, needing no token (the token is revoked first).
TEST_F(TrustTest, ControllerCrashKeepsTheCaAndAgentsNeedNoNewToken) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  std::map<std::string, std::string> ids = WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());

  const std::string pki = absl::StrCat(cluster_->controller_state_dir(), "/pki");
  absl::StatusOr<std::string> ca_before = ReadFileToString(pki + "/ca.crt");
  ASSERT_TRUE(ca_before.ok()) << ca_before.status();
  // The admin's credential as it was before the crash, kept where the controller cannot touch it.
  const std::string kept = absl::StrCat(cluster_->temp_dir(), "/kept-admin");
  ASSERT_TRUE(MakeDirectories(kept, 0700).ok());
  for (const char* file : {"ca.crt", "admin.crt", "admin.key"}) {
    absl::StatusOr<std::string> text = ReadFileToString(absl::StrCat(pki, "/", file));
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_TRUE(WriteFileAtomically(absl::StrCat(kept, "/", file), *text, 0600).ok());
  }
  ASSERT_TRUE(WriteFileAtomically(absl::StrCat(kept, "/config.yaml"),
                                  absl::StrCat("controller: ", cluster_->controller_address(),
                                               "\nca: ca.crt\ncert: admin.crt\nkey: admin.key\n"),
                                  0600)
                  .ok());

  absl::StatusOr<std::string> token = cluster_->ClusterToken();
  ASSERT_TRUE(token.ok()) << token.status();
  ASSERT_EQ(TokenParts(*token).size(), 4u) << *token;
  absl::StatusOr<CommandResult> revoked =
      cluster_->RunCli({"token", "revoke", TokenParts(*token)[1]});
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  ASSERT_EQ(revoked->exit_code, 0) << revoked->stderr_text;
  std::vector<pid_t> agent_pids;
  for (int i = 1; i <= kAgents; ++i) agent_pids.push_back(cluster_->agent_pid(i));

  ASSERT_TRUE(cluster_->KillController(SIGKILL).ok());
  ASSERT_TRUE(cluster_->StartController().ok());
  const absl::Time serving = absl::Now();

  absl::StatusOr<std::string> ca_after = ReadFileToString(pki + "/ca.crt");
  ASSERT_TRUE(ca_after.ok()) << ca_after.status();
  EXPECT_TRUE(*ca_after == *ca_before) << "the restarted controller made a new CA";
  absl::StatusOr<CommandResult> old_admin = cluster_->RunFleet(
      0, {"nodes"}, absl::Seconds(15), {absl::StrCat("FLEET_CONFIG=", kept, "/config.yaml")});
  ASSERT_TRUE(old_admin.ok()) << old_admin.status();
  EXPECT_EQ(old_admin->exit_code, 0)
      << "the admin credential from before the crash was refused: " << old_admin->stderr_text;

  // Ready on heartbeats the new controller received.
  Json doc;
  ASSERT_TRUE(WaitForNodes(
      [&](const Json& d) {
        if (!AllReady(d, AgentNames(kAgents))) return false;
        double since_restart = absl::ToDoubleSeconds(absl::Now() - serving);
        for (const Json& item : d["items"]) {
          const Json& age = item.value("lastHeartbeatAgeSeconds", Json());
          if (!age.is_number() || age.get<double>() >= since_restart) return false;
        }
        return true;
      },
      kJoinTimeout, &doc));
  std::printf("[ TIMING   ] all agents heartbeating %s after the controller restart\n",
              absl::FormatDuration(absl::Now() - serving).c_str());
  for (int i = 1; i <= kAgents; ++i) {
    const std::string name = TestCluster::AgentName(i);
    const Json* node = FindNode(doc, name);
    ASSERT_NE(node, nullptr) << Summary(doc);
    EXPECT_EQ(node->value("id", ""), ids[name]);
    EXPECT_EQ(cluster_->agent_pid(i), agent_pids[static_cast<size_t>(i - 1)])
        << name << " was restarted";
  }

  // An agent restarted now has only its certificate: the token it joined with is revoked.
  const int registered = CountInLog(TestCluster::AgentName(1), "agent registered");
  ASSERT_TRUE(cluster_->KillAgent(1, SIGKILL).ok());
  ASSERT_TRUE(cluster_->StartAgent(1).ok());
  const std::string restarted = TestCluster::AgentName(1);
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] { return CountInLog(restarted, "agent registered") > registered; }, kJoinTimeout))
      << restarted << " did not register again after its restart";
  ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kJoinTimeout, &doc));
  ASSERT_NE(FindNode(doc, restarted), nullptr);
  EXPECT_EQ(FindNode(doc, restarted)->value("id", ""), ids[restarted]);
}

// With short-lived node certificates, every agent gets a new one before the old one expires and
// stays Ready throughout; an agent restarted after its first certificate expired comes back
// with the renewed one.
TEST_F(TrustTest, NodeCertificatesAreRenewedBeforeTheyExpire) {
  constexpr absl::Duration kValidity = absl::Seconds(9);
  // Renewal is due two thirds into the validity (6 s); one heartbeat period of slack.
  constexpr absl::Duration kRenewedWithin = absl::Seconds(8);
  constexpr absl::Duration kWatch = absl::Seconds(15);
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(kAgents, {"--node-cert-validity", absl::FormatDuration(kValidity)}));
  WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  const absl::Time start = absl::Now();
  auto cert_of = [&](int i) {
    absl::StatusOr<std::string> cert =
        ReadFileToString(absl::StrCat(cluster_->agent_state_dir(i), "/pki/node.crt"));
    return cert.ok() ? *cert : std::string();
  };
  std::vector<std::string> first(kAgents + 1);
  for (int i = 1; i <= kAgents; ++i) {
    first[static_cast<size_t>(i)] = cert_of(i);
    ASSERT_FALSE(first[static_cast<size_t>(i)].empty()) << "agent " << i << " has no node.crt";
  }

  // When each agent's certificate was first seen to change.
  std::vector<std::optional<absl::Duration>> renewed(kAgents + 1);
  std::string not_ready;
  bool restarted = false;
  const std::string restarted_name = TestCluster::AgentName(1);
  int registrations = 0;
  TestCluster::WaitFor(
      [&] {
        const absl::Duration elapsed = absl::Now() - start;
        for (int i = 1; i <= kAgents; ++i) {
          if (!renewed[static_cast<size_t>(i)] && cert_of(i) != first[static_cast<size_t>(i)]) {
            renewed[static_cast<size_t>(i)] = elapsed;
            std::printf("[ TIMING   ] %s's certificate renewed within %s\n",
                        TestCluster::AgentName(i).c_str(), absl::FormatDuration(elapsed).c_str());
          }
        }
        absl::StatusOr<Json> nodes = cluster_->Nodes();
        if (not_ready.empty() && (!nodes.ok() || !AllReady(*nodes, AgentNames(kAgents)))) {
          not_ready = absl::StrCat("at ", absl::FormatDuration(elapsed), ": ",
                                   nodes.ok() ? Summary(*nodes) : nodes.status().ToString());
        }
        // Past the first certificate's end, a restart must use the renewed one.
        if (!restarted && elapsed > kValidity + absl::Seconds(1)) {
          restarted = true;
          registrations = CountInLog(restarted_name, "agent registered");
          EXPECT_TRUE(cluster_->KillAgent(1, SIGKILL).ok());
          EXPECT_TRUE(cluster_->StartAgent(1).ok());
        }
        return false;
      },
      kWatch);
  for (int i = 1; i <= kAgents; ++i) {
    const std::optional<absl::Duration>& when = renewed[static_cast<size_t>(i)];
    ASSERT_TRUE(when.has_value()) << TestCluster::AgentName(i)
                                  << "'s certificate was not renewed within "
                                  << absl::FormatDuration(kWatch);
    EXPECT_LE(*when, kRenewedWithin) << TestCluster::AgentName(i);
  }
  EXPECT_EQ(not_ready, "") << "a node left Ready while certificates were renewed";
  EXPECT_GT(CountInLog(restarted_name, "agent registered"), registrations)
      << restarted_name << " did not register again after its restart with a renewed certificate";
  for (int i = 1; i <= kAgents; ++i) {
    std::printf("[ NOTE     ] %s renewed its certificate %d times in %s\n",
                TestCluster::AgentName(i).c_str(),
                CountInLog(TestCluster::AgentName(i), "certificate renewed"),
                absl::FormatDuration(absl::Now() - start).c_str());
  }
}

// `--node-cert-validity` promises renewal two thirds into a certificate's lifetime: not sooner,
// which would have every agent generate a key and call the controller on every heartbeat.
TEST_F(TrustTest, NodeCertificateIsRenewedTwoThirdsIntoItsLifetime) {
  constexpr absl::Duration kValidity = absl::Seconds(9);
  // Due at 6 s; a heartbeat period (when the agent checks) of slack either way.
  constexpr absl::Duration kEarliest = absl::Seconds(5);
  constexpr absl::Duration kLatest = absl::Seconds(8);
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(1, {"--node-cert-validity", absl::FormatDuration(kValidity)}));
  const std::string name = TestCluster::AgentName(1);
  const std::string cert_path = absl::StrCat(cluster_->agent_state_dir(1), "/pki/node.crt");
  // The first certificate is written the moment the agent joins.
  std::string first;
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] {
        absl::StatusOr<std::string> cert = ReadFileToString(cert_path);
        if (cert.ok()) first = *cert;
        return cert.ok();
      },
      kJoinTimeout))
      << name << " did not join";
  const absl::Time joined = absl::Now();
  // Watched until the first renewal is overdue, counting every renewal meanwhile.
  std::optional<absl::Duration> renewed_after;
  TestCluster::WaitFor(
      [&] {
        absl::StatusOr<std::string> cert = ReadFileToString(cert_path);
        if (!renewed_after.has_value() && cert.ok() && *cert != first) {
          renewed_after = absl::Now() - joined;
        }
        return false;
      },
      kLatest);
  const int renewals = CountInLog(name, "certificate renewed");
  ASSERT_TRUE(renewed_after.has_value())
      << name << "'s " << absl::FormatDuration(kValidity) << " certificate was not renewed within "
      << absl::FormatDuration(kLatest);
  std::printf("[ TIMING   ] %s's %s certificate first renewed %s after the join; %d renewals\n",
              name.c_str(), absl::FormatDuration(kValidity).c_str(),
              absl::FormatDuration(*renewed_after).c_str(), renewals);
  EXPECT_GE(*renewed_after, kEarliest)
      << "renewed long before two thirds of its " << absl::FormatDuration(kValidity)
      << " lifetime; the agent has renewed " << renewals << " times since it joined";
  EXPECT_EQ(renewals, 1) << "one renewal is due in the first " << absl::FormatDuration(kLatest)
                         << " of a " << absl::FormatDuration(kValidity) << " certificate";
}

// The join token's secret is shown once, by `fleet token create`, and nowhere after: not in a
// daemon's log, not on a command line `ps` shows, not in `fleet token list`, not in the
// controller's database.
TEST_F(TrustTest, JoinTokenSecretStaysOutOfLogsAndProcessLists) {
  ASSERT_TRUE(cluster_->StartController().ok());
  absl::StatusOr<CommandResult> created = cluster_->RunCli({"token", "create"});
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ(created->exit_code, 0) << created->stderr_text;
  const std::string token(absl::StripTrailingAsciiWhitespace(created->stdout_text));
  ASSERT_EQ(absl::StrSplit(created->stdout_text, '\n', absl::SkipEmpty()).begin()->size(),
            token.size())
      << "stdout must be the token alone: " << created->stdout_text;
  const std::vector<std::string> parts = TokenParts(token);
  ASSERT_EQ(parts.size(), 4u) << token;
  const std::string& secret = parts[2];
  ASSERT_EQ(secret.size(), 32u) << token;
  EXPECT_FALSE(absl::StrContains(created->stderr_text, secret)) << created->stderr_text;

  for (int i = 1; i <= kAgents; ++i) {
    ASSERT_TRUE(cluster_->SetJoinToken(i, token).ok());
    ASSERT_TRUE(cluster_->StartAgent(i).ok());
  }
  WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  // Discovery answers carry a mac under a key derived from the secret, never the secret.
  if (network_->isolated()) CliJson({"discover", "-o", "json"});

  std::vector<std::pair<std::string, pid_t>> daemons = {{"controller", cluster_->controller_pid()}};
  for (int i = 1; i <= kAgents; ++i)
    daemons.push_back({TestCluster::AgentName(i), cluster_->agent_pid(i)});
  for (const auto& [role, pid] : daemons) {
    absl::StatusOr<std::string> log = cluster_->ReadLog(role);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_FALSE(absl::StrContains(*log, secret)) << role << "'s log shows the secret: " << *log;
    absl::StatusOr<std::string> cmdline = ReadFileToString(absl::StrCat("/proc/", pid, "/cmdline"));
    ASSERT_TRUE(cmdline.ok()) << cmdline.status();
    EXPECT_FALSE(absl::StrContains(*cmdline, secret))
        << role << "'s command line shows the secret: "
        << absl::StrJoin(absl::StrSplit(*cmdline, '\0'), " ");
  }

  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"token", "list", "-o", "json"}, {"token", "list"}}) {
    absl::StatusOr<CommandResult> listed = cluster_->RunCli(args);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->exit_code, 0) << listed->stderr_text;
    EXPECT_TRUE(absl::StrContains(listed->stdout_text, parts[1]))
        << "the token is not listed: " << listed->stdout_text;
    EXPECT_FALSE(absl::StrContains(listed->stdout_text, secret)) << listed->stdout_text;
  }

  // SQLite keeps recent writes in its write-ahead log until a checkpoint.
  for (const char* file : {"fleet.db", "fleet.db-wal"}) {
    absl::StatusOr<std::string> bytes =
        ReadFileToString(absl::StrCat(cluster_->controller_state_dir(), "/", file));
    if (!bytes.ok()) continue;
    EXPECT_FALSE(absl::StrContains(*bytes, secret)) << file << " holds the secret in clear";
  }
}

}  // namespace
}  // namespace fleet::testing
