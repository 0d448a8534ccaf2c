// Docker for tests: a Docker engine started by scripts/dockerd.sh when none runs, shell
// commands, and a busybox image made with `docker import` of a small rootfs, so no registry is
// needed. Shared by the docker runtime, docker group and NCCL-in-image probe tests.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"

namespace fleet::testing {

// Output of a shell command, nullopt when it fails.
inline std::optional<std::string> Shell(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  return ::pclose(pipe) == 0 ? std::optional<std::string>(out) : std::nullopt;
}

// Makes sure a Docker engine answers (scripts/dockerd.sh under `source_dir`), then imports
// `image` from a rootfs of busybox-static and its applets; `extra_setup` is a shell fragment
// run before the import with $ROOT naming the rootfs, to add files. Returns why the docker
// tests must skip, or "" when the image is there.
inline std::string ImportBusyboxImage(const std::string& source_dir, const std::string& image,
                                      const std::string& extra_setup = "") {
  if (!Shell(absl::StrCat(source_dir, "/scripts/dockerd.sh /tmp/fleet-test-dockerd"))) {
    return "no Docker engine could be started (scripts/dockerd.sh failed)";
  }
  const std::string root = absl::StrCat("/tmp/fleet-test-rootfs-", ::getpid());
  if (!Shell(absl::StrCat("set -e; ROOT=", root, "; rm -rf $ROOT; mkdir -p $ROOT/bin; ",
                          "cp $(command -v busybox) $ROOT/bin/busybox; ",
                          "for a in $($ROOT/bin/busybox --list | grep -vx busybox); do ",
                          "ln -sf busybox $ROOT/bin/$a; done; ", extra_setup,
                          "\ntar -C $ROOT -c . | docker import - ", image,
                          " >/dev/null; rm -rf $ROOT"))) {
    Shell(absl::StrCat("rm -rf ", root));
    return "cannot build the busybox test image (is busybox-static installed?)";
  }
  return "";
}

}  // namespace fleet::testing
