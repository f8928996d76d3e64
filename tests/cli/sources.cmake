set(LLI_CLI_TEST_SOURCES
  cli/test_cli.cpp
  cli/test_chat.cpp
  cli/test_segment_sam.cpp
  cli/test_segment_owl.cpp
  cli/test_generate.cpp
  cli/test_edit.cpp
  cli/test_hardening.cpp)
