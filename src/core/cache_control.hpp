// fly-edge pure core: the Cache-Control header (RFC 9111 section 5.2).
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstdint>
#include <string_view>

namespace fly::core {

struct CacheControl {
    bool no_store = false;
    bool no_cache = false;          // also the qualified form no-cache="x"
    bool is_private = false;        // also the qualified form private="x"
    bool is_public = false;
    bool must_revalidate = false;
    bool proxy_revalidate = false;
    bool immutable = false;
    int64_t max_age = -1;           // -1 when absent or invalid
    int64_t s_maxage = -1;
    int64_t stale_while_revalidate = -1;
    int64_t stale_if_error = -1;
    bool invalid = false;           // something could not be parsed
};

// Adds the directives of one Cache-Control header value to `cc` (call
// once per header line).  Directive names are case-insensitive; values
// may be quoted; unknown directives are ignored.  A delta-seconds value
// that is not all digits makes that directive absent and sets `invalid`;
// one over 2^31 is clamped to 2^31 (RFC 9111 1.2.2).  When a directive
// repeats, the first value wins.
void parse_cache_control(std::string_view value, CacheControl &cc);

// Parses an HTTP-date (IMF-fixdate, RFC 850 and asctime forms) into
// unix seconds.  Returns false when it is not a valid date.
bool parse_http_date(std::string_view value, int64_t &out);

}  // namespace fly::core
