#include "models/gligen_position_net.h"
