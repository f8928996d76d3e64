#include "nn/diffusers_attention.h"
