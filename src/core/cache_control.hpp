// fly-edge pure core: the Cache-Control header (RFC 9111 section 5.2), the
// targeted fields that stand in for it (RFC 9213), Age (RFC 9111 5.1) and
// HTTP-date.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstddef>
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
    bool empty = true;              // no list element at all (RFC 9213)
};

// Adds the directives of one Cache-Control header value to `cc` (call
// once per header line).  Directive names are case-insensitive; values
// may be quoted; unknown directives are ignored.  A delta-seconds value
// that is not all digits makes that directive absent and sets `invalid`;
// one over 2^31 is clamped to 2^31 (RFC 9111 1.2.2).  When a directive
// repeats, the first value wins.
void parse_cache_control(std::string_view value, CacheControl &cc);

// RFC 9213 targeted fields (CDN-Cache-Control, fly_cache_control_header):
// `targeted` holds the n fields this cache is targeted by, in precedence
// order, each parsed with parse_cache_control (all of its lines; a field
// the response lacks stays default-constructed).  Returns the index of
// the first one that is valid and non-empty, whose directives then apply
// instead of Cache-Control's and Expires (RFC 9213 2.1); or n when none
// is, and Cache-Control applies.  A field that does not parse (`invalid`)
// is not used.
size_t select_targeted(const CacheControl *targeted, size_t n);

// The Age header (RFC 9111 5.1).  Call once per header line, in order: the
// lines form one list, and only its first member counts (a list is
// invalid, but a cache uses the first value).  `seconds` is that member as
// delta-seconds (clamped to 2^31); when the member is not one, or the
// lines hold no member at all, the field is invalid.
struct AgeField {
    bool present = false;           // an Age line was seen
    bool first_seen = false;        // its first member was read
    int64_t seconds = -1;           // -1 while absent or invalid
    bool invalid() const { return present && seconds < 0; }
};
void parse_age(std::string_view value, AgeField &age);

// Parses an HTTP-date (IMF-fixdate, RFC 850 and asctime forms) into
// unix seconds.  Returns false when it is not a valid date.
bool parse_http_date(std::string_view value, int64_t &out);

}  // namespace fly::core
