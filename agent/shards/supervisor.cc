// Supervisor::Create: the production wiring of SupervisorImpl (real runtimes, clock, TCP dialer
// and readiness probe). Kept apart so unit tests with fakes link without Docker or libcurl code.
#include "agent/shards/docker_runtime.h"
#include "agent/shards/process_runtime.h"
#include "agent/shards/readiness.h"
#include "agent/shards/supervisor_impl.h"
#include "common/status_macros.h"

namespace fleet::agent {

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Create(SupervisorOptions options) {
  SupervisorDeps deps = {
      .clock = RealClock::Get(),
      .process_runtime = std::make_unique<ProcessRuntime>(options.node_name),
      .docker_runtime = std::make_unique<DockerRuntime>(
          DockerRuntimeOptions{.docker = options.docker,
                               .node_name = options.node_name,
                               .state_dir = options.state_dir,
                               .cache_root = options.state_dir + "/cache",
                               .home = options.home}),
      .probe = ProbeReadiness,
      .look_at_head = LookAtHead,
      .one_token = OneTokenCompletion,
      .dial = DialTcp,
  };
  ASSIGN_OR_RETURN(std::unique_ptr<SupervisorImpl> supervisor,
                   SupervisorImpl::Create(std::move(options), std::move(deps)));
  return supervisor;
}

}  // namespace fleet::agent
