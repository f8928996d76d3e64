// GLIGEN position net (GLIGENTextBoundingboxProjection).
// (placeholder: filled in by the GLIGEN generation work, issue 8)
#pragma once
