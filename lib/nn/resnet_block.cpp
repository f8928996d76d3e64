#include "nn/resnet_block.h"
