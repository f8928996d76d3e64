list(APPEND LLI_TORCH_SOURCES
  schedulers/scheduler.cpp)
