// RpcMetrics: the latency of every RPC a gRPC server answers, by method and status code, as the
// Prometheus histogram fleet_rpc_duration_seconds. A server interceptor measures it, so no
// handler needs to know.
#pragma once

#include <memory>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace fleet {

// Example:
//   RpcMetrics rpc(*registry);
//   std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> v;
//   v.push_back(rpc.InterceptorFactory());
//   builder.experimental().SetInterceptorCreators(std::move(v));
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry& registry);

  // `method` is gRPC's full name ("/fleet.v1.Controller/Apply"); `code` a grpc::StatusCode.
  void Observe(absl::string_view method, int code, double seconds);

  // Makes interceptors that call Observe when each call sends its status. The factory refers to
  // this object, which must outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  prometheus::Family<prometheus::Histogram>& duration_;
};

}  // namespace fleet
