// fleet-nccl-probe [LIBRARY]: loads LIBRARY (default libnccl.so.2) as a shard started with this
// process's environment would (the agent runs it with the shard's LD_PRELOAD and
// LD_LIBRARY_PATH, and passes VLLM_NCCL_SO_PATH's value as LIBRARY, as vLLM dlopen()s that) and
// prints one line:
//   fleet-nccl-probe: ok VERSION_CODE PATH      (exit 0)
//   fleet-nccl-probe: error MESSAGE             (exit 1)
// It stays a separate tiny executable so the loader resolves the library in a fresh process,
// never in the agent, which may have loaded another NCCL already. It needs nothing but the C
// library, so the agent can also run it inside a shard's image (mounted read-only) to ask a
// libnccl.so.2 whose file name carries no version.
#include <dlfcn.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc > 2) {
    std::printf("fleet-nccl-probe: error usage: fleet-nccl-probe [LIBRARY]\n");
    return 2;
  }
  const char* name = argc == 2 ? argv[1] : "libnccl.so.2";
  void* library = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::printf("fleet-nccl-probe: error %s\n", ::dlerror());
    return 1;
  }
  void* symbol = ::dlsym(library, "ncclGetVersion");
  if (symbol == nullptr) {
    std::printf("fleet-nccl-probe: error %s lacks ncclGetVersion: %s\n", name, ::dlerror());
    return 1;
  }
  Dl_info info{};
  if (::dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) {
    std::printf("fleet-nccl-probe: error dladdr(ncclGetVersion) found no file\n");
    return 1;
  }
  // ncclResult_t ncclGetVersion(int*); ncclResult_t is an enum whose ncclSuccess is 0.
  using GetVersion = int (*)(int*);
  int code = 0;
  if (int rc = reinterpret_cast<GetVersion>(symbol)(&code); rc != 0) {
    std::printf("fleet-nccl-probe: error ncclGetVersion of %s returned ncclResult_t %d\n",
                info.dli_fname, rc);
    return 1;
  }
  std::printf("fleet-nccl-probe: ok %d %s\n", code, info.dli_fname);
  return 0;
}
