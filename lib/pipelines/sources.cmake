list(APPEND LLI_BASE_SOURCES
  pipelines/grabcut.cpp
  pipelines/inpaint_telea.cpp
  pipelines/edit_region.cpp
  pipelines/llava_grounding.cpp)
list(APPEND LLI_TORCH_SOURCES
  pipelines/chat.cpp
  pipelines/ground_llava.cpp
  pipelines/segment_sam.cpp
  pipelines/feature_cache.cpp
  pipelines/ground_owl.cpp
  pipelines/generate.cpp
  pipelines/edit.cpp
  pipelines/inpaint_lama.cpp)
