// lli's version (CMake's project version), for provenance records and --version.
#pragma once

namespace lli {

const char* version();  // e.g. "0.1.0"

}  // namespace lli
