list(APPEND LLI_TORCH_SOURCES
  text/llama_tokenizer.cpp
  text/chat_template.cpp)
