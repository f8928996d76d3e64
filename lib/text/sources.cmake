list(APPEND LLI_BASE_SOURCES
  text/sentencepiece_model.cpp
  text/sentencepiece.cpp
  text/llama_tokenizer.cpp
  text/chat_template.cpp
  text/unicode.cpp
  text/added_tokens.cpp
  text/clip_tokenizer.cpp)
