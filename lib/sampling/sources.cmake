list(APPEND LLI_TORCH_SOURCES
  sampling/sampler.cpp)
