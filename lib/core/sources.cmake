list(APPEND LLI_BASE_SOURCES
  core/activity.cpp
  core/fs.cpp
  core/log.cpp
  core/quote.cpp
  core/version.cpp)
list(APPEND LLI_TORCH_SOURCES
  core/cpu_allocator.cpp
  core/device.cpp)
