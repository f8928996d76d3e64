list(APPEND LLI_TORCH_SOURCES
  models/config_json.cpp
  models/clip_vision.cpp
  models/llava_projector.cpp
  models/llama.cpp
  models/image_normalize.cpp
  models/llava_preprocess.cpp
  models/llava.cpp
  models/sam_image_encoder.cpp
  models/sam_prompt_encoder.cpp
  models/sam_mask_decoder.cpp
  models/sam.cpp
  models/sam_preprocess.cpp
  models/clip_text.cpp
  models/unet.cpp
  models/gligen_position_net.cpp
  models/vae.cpp
  models/lama.cpp)
