// DynamicLibrary: a dlopen()ed library, closed when the handle goes away. NVML and the CUDA
// runtime come with the driver, not with the build machine, so the agent loads them at run time.
//
// Example:
//   ASSIGN_OR_RETURN(DynamicLibrary nvml, DynamicLibrary::Create({"libnvidia-ml.so.1"}));
//   auto init = nvml.Symbol<int (*)()>("nvmlInit_v2");
#pragma once

#include <dlfcn.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fleet::agent {

class DynamicLibrary {
 public:
  // Tries `names` in order; NotFound with the last dlerror() when none loads.
  static absl::StatusOr<DynamicLibrary> Create(const std::vector<std::string>& names) {
    std::string errors;
    for (const std::string& name : names) {
      if (void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        return DynamicLibrary(handle, name);
      }
      const char* error = ::dlerror();
      errors = error != nullptr ? error : absl::StrCat(name, ": dlopen failed");
    }
    return absl::NotFoundError(errors);
  }

  DynamicLibrary(DynamicLibrary&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), name_(std::move(other.name_)) {}
  DynamicLibrary& operator=(DynamicLibrary&& other) noexcept {
    if (this != &other) {
      Close();
      handle_ = std::exchange(other.handle_, nullptr);
      name_ = std::move(other.name_);
    }
    return *this;
  }
  DynamicLibrary(const DynamicLibrary&) = delete;
  DynamicLibrary& operator=(const DynamicLibrary&) = delete;
  ~DynamicLibrary() { Close(); }

  const std::string& name() const { return name_; }

  // The symbol as a function pointer of type `F`; nullptr when the library lacks it.
  template <typename F>
  F Symbol(const char* symbol) const {
    return reinterpret_cast<F>(::dlsym(handle_, symbol));
  }

 private:
  DynamicLibrary(void* handle, std::string name) : handle_(handle), name_(std::move(name)) {}
  void Close() {
    if (handle_ != nullptr) ::dlclose(handle_);
    handle_ = nullptr;
  }

  void* handle_;
  std::string name_;
};

}  // namespace fleet::agent
