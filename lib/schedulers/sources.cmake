list(APPEND LLI_TORCH_SOURCES
  schedulers/scheduler.cpp
  schedulers/pndm.cpp
  schedulers/ddim.cpp
  schedulers/euler.cpp
  schedulers/dpm_solver.cpp)
