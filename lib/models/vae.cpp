#include "models/vae.h"
