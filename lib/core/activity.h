// What the process is doing, for the messages that need it: "out of memory while loading the
// model llava-1.5-7b". Tools open an Activity for each long phase (nested ones stack); when an
// exception leaves an Activity, the innermost one it left is remembered for the error message.
// Torch-free.
#pragma once

#include <string>
#include <string_view>

namespace lli {

class Activity {
 public:
  explicit Activity(std::string what);
  ~Activity();
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;

 private:
  int uncaught_ = 0;
};

// The innermost open activity ("" when none).
std::string current_activity();

// The innermost activity the exception being handled left (else current_activity()), and forget
// it: call once in the handler that reports the error.
std::string take_failed_activity();

// Whether an error message reports a failed allocation: std::bad_alloc's, libtorch's
// "DefaultCPUAllocator: can't allocate memory", OpenCV's "Failed to allocate" / "Insufficient
// memory", strerror(ENOMEM) "Cannot allocate memory" (also inside a message that wraps them).
bool is_allocation_failure(std::string_view message);

// "out of memory while <take_failed_activity(), else `fallback`> (<detail>)": one line, the
// detail's first line only (libtorch's messages carry a backtrace).
std::string out_of_memory_message(const std::string& fallback, std::string_view detail);

}  // namespace lli
