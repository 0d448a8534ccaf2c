// A stand-in libnccl.so.2 whose only export is ncclGetVersion, answering FAKE_NCCL_VERSION, so
// the NCCL probe's tests can tell which library the dynamic loader picked.
extern "C" int ncclGetVersion(int* version) {
  *version = FAKE_NCCL_VERSION;
  return 0;  // ncclSuccess
}
