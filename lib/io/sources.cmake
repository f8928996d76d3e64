list(APPEND LLI_BASE_SOURCES
  io/bounded_parse.cpp
  io/safetensors.cpp
  io/dtype_convert.cpp
  io/image.cpp
  io/prompt.cpp
  io/session.cpp
  io/registry.cpp
  io/pil_resize.cpp
  io/ndimage_resize.cpp
  io/png_text.cpp
  io/protobuf_wire.cpp)
list(APPEND LLI_TORCH_SOURCES
  io/tensor_io.cpp)
