list(APPEND LLI_BASE_SOURCES
  text/sentencepiece.cpp
  text/unicode.cpp
  text/added_tokens.cpp
  text/clip_tokenizer.cpp)
list(APPEND LLI_TORCH_SOURCES
  text/llama_tokenizer.cpp
  text/chat_template.cpp)
