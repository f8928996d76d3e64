// diffusers Transformer2DModel + BasicTransformerBlock (+ GLIGEN GatedSelfAttentionDense fuser).
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
