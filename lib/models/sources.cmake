list(APPEND LLI_TORCH_SOURCES
  models/config_json.cpp
  models/clip_vision.cpp
  models/llava_projector.cpp
  models/llama.cpp
  models/llava_preprocess.cpp
  models/llava.cpp)
