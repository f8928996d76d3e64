list(APPEND LLI_TORCH_SOURCES
  train/demo_gligen.cpp
  train/demo_lama.cpp
  train/demo_llava.cpp
  train/demo_owl.cpp
  train/demo_sam.cpp)
