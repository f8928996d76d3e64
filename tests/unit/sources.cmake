set(LLI_UNIT_TEST_SOURCES
  unit/test_fs.cpp
  unit/test_safetensors.cpp
  unit/test_image.cpp
  unit/test_classical.cpp
  unit/test_prompt.cpp
  unit/test_session.cpp
  unit/test_registry.cpp)
