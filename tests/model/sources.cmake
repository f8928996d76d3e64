set(LLI_TORCH_TEST_SOURCES
  model/test_binder.cpp
  model/test_tokenizer.cpp
  model/test_sampling.cpp
  model/test_llava.cpp
  model/test_sam.cpp
  model/test_linear_bf16.cpp
  model/test_chat_pipeline.cpp)
