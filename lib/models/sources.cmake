list(APPEND LLI_TORCH_SOURCES
  models/clip_vision.cpp
  models/llava_projector.cpp
  models/llama.cpp
  models/llava.cpp)
