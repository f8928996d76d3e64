list(APPEND LLI_TORCH_SOURCES
  train/demo_lama.cpp
  train/demo_llava.cpp
  train/demo_sam.cpp)
