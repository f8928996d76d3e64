#include "models/clip_text.h"
