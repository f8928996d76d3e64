#include "core/version.h"

namespace lli {

const char* version() { return LLI_VERSION; }

}  // namespace lli
