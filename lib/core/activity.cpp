#include "core/activity.h"

#include <exception>
#include <mutex>
#include <vector>

namespace lli {

namespace {
std::mutex g_mu;
std::vector<std::string> g_stack;
std::string g_failed;  // set by the first Activity an exception leaves
}  // namespace

Activity::Activity(std::string what) : uncaught_(std::uncaught_exceptions()) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_failed.clear();  // a new phase began: an earlier failure was handled
  g_stack.push_back(std::move(what));
}

Activity::~Activity() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (std::uncaught_exceptions() > uncaught_ && g_failed.empty() && !g_stack.empty()) g_failed = g_stack.back();
  if (!g_stack.empty()) g_stack.pop_back();
}

std::string current_activity() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_stack.empty() ? std::string() : g_stack.back();
}

std::string take_failed_activity() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::string s = g_failed.empty() ? (g_stack.empty() ? std::string() : g_stack.back()) : g_failed;
  g_failed.clear();
  return s;
}

bool is_allocation_failure(std::string_view m) {
  for (const char* s : {"std::bad_alloc", "can't allocate memory", "Cannot allocate memory", "Failed to allocate",
                        "Insufficient memory"})
    if (m.find(s) != std::string_view::npos) return true;
  return false;
}

std::string out_of_memory_message(const std::string& fallback, std::string_view detail) {
  detail = detail.substr(0, detail.find('\n'));
  std::string what = take_failed_activity();
  if (what.empty()) what = fallback;
  std::string msg = "out of memory while " + what;
  if (!detail.empty() && detail != "std::bad_alloc") msg += " (" + std::string(detail) + ")";
  return msg;
}

}  // namespace lli
