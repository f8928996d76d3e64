list(APPEND LLI_TORCH_SOURCES
  nn/layers.cpp)
