// Whether Debian's HAProxy, which runs each application's router, is installed: tests that need
// a router skip with the reason when it is not.

#ifndef FLEET_TESTS_INTEGRATION_HAPROXY_PRESENT_H_
#define FLEET_TESTS_INTEGRATION_HAPROXY_PRESENT_H_

#include <unistd.h>

namespace fleet::testing {

inline bool HaveHaproxy() {
  for (const char* path : {"/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"}) {
    if (::access(path, X_OK) == 0) return true;
  }
  return false;
}

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_HAPROXY_PRESENT_H_
