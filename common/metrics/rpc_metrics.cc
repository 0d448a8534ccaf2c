// RpcMetrics: a server interceptor that times each call from its creation to its status.
#include "common/metrics/rpc_metrics.h"

#include <chrono>
#include <string>

#include "grpcpp/support/status.h"

namespace fleet {
namespace {

// From 1 ms (a ListNodes) to 10 min (an apply that waits for a model to load, or a preflight
// that hashes one).
prometheus::Histogram::BucketBoundaries RpcBuckets() {
  return {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600};
}

class LatencyInterceptor : public grpc::experimental::Interceptor {
 public:
  LatencyInterceptor(RpcMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using Hook = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(Hook::PRE_SEND_STATUS)) {
      std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
      metrics_->Observe(method_, methods->GetSendStatus().error_code(), took.count());
    }
    methods->Proceed();
  }

 private:
  RpcMetrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
};

class LatencyInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit LatencyInterceptorFactory(RpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new LatencyInterceptor(metrics_, info->method() == nullptr ? "" : info->method());
  }

 private:
  RpcMetrics* const metrics_;
};

// gRPC's own names of its status codes, as they appear in its documentation.
const char* CodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

}  // namespace

RpcMetrics::RpcMetrics(prometheus::Registry& registry)
    : duration_(prometheus::BuildHistogram()
                    .Name("fleet_rpc_duration_seconds")
                    .Help("Time from the start of a gRPC call to its status, by method and code")
                    .Register(registry)) {}

void RpcMetrics::Observe(absl::string_view method, int code, double seconds) {
  duration_.Add({{"method", std::string(method)}, {"code", CodeName(code)}}, RpcBuckets())
      .Observe(seconds);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::InterceptorFactory() {
  return std::make_unique<LatencyInterceptorFactory>(this);
}

}  // namespace fleet
