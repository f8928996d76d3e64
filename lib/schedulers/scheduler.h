// Diffusion schedulers (diffusers 0.31).
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
