list(APPEND LLI_BASE_SOURCES
  world/shapes_world.cpp)
