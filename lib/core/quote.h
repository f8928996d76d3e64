// Echoing untrusted values into one-line messages: every error and log line stays ONE line and
// bounded whatever a file put in a key, a tensor name or a label.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lli {

// Default bound on the characters of a value quoted into a message.
constexpr std::size_t kQuoteExcerptChars = 60;

// Control characters (and DEL) escaped as \n, \r, \t or \xNN; everything else (UTF-8 included)
// kept. "a\nb" -> "a\\nb". Never shortens.
std::string escape_control(std::string_view s);

// `value` in single quotes for a message: control characters escaped (see escape_control), at
// most `max_chars` bytes of it kept (cut on a UTF-8 character boundary) and "..." appended when
// cut, followed by the value's full size: 'abc...' (12345 bytes). quote_excerpt("w\n") == "'w\\n'".
std::string quote_excerpt(std::string_view value, std::size_t max_chars = kQuoteExcerptChars);

// The first `max_chars` bytes of an already formatted message, control characters escaped, for
// a value whose text is built elsewhere (e.g. nlohmann's dump of a bad JSON value).
std::string one_line(std::string_view msg, std::size_t max_chars = std::string::npos);

}  // namespace lli
