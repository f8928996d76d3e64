list(APPEND LLI_TORCH_SOURCES
  train/demo_sam.cpp)
