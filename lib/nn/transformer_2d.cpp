#include "nn/transformer_2d.h"
