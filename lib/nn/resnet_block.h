// diffusers ResnetBlock2D, Downsample2D, Upsample2D.
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
