#include "schedulers/scheduler.h"
