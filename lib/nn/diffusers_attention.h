// diffusers Attention (to_q/to_k/to_v/to_out.0), FeedForward (GEGLU).
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
