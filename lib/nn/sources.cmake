list(APPEND LLI_TORCH_SOURCES
  nn/layers.cpp
  nn/attention.cpp
  nn/clip_layer.cpp
  nn/linear_bf16.cpp
  nn/quant_linear.cpp
  nn/attention_bf16.cpp
  nn/decoder_ops_bf16.cpp
  nn/group_norm_bf16.cpp
  nn/transpose_copy.cpp
  nn/fft_nhwc.cpp
  nn/resnet_block.cpp
  nn/diffusers_attention.cpp
  nn/transformer_2d.cpp)
list(APPEND LLI_BASE_SOURCES nn/quant_kernels.cpp)
# The fused RMSNorm reproduces libtorch's fp32 rounding step by step: no contraction into fma.
set_source_files_properties(nn/decoder_ops_bf16.cpp PROPERTIES COMPILE_OPTIONS -ffp-contract=off)
