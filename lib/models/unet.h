// diffusers UNet2DConditionModel.
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
