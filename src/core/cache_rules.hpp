// fly-edge pure core: what a shared cache may store, and for how long
// (RFC 9111 sections 3 and 4.2), plus the cache key and its Vary variants.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "cache_control.hpp"

namespace fly::core {

// One fly_cache_valid rule: `status` 0 means "any".
struct ValidRule {
    int status;
    int64_t ttl;
};

struct CachePolicy {
    const ValidRule *valid = nullptr;   // fly_cache_valid rules, in order
    size_t nvalid = 0;
    int64_t min_ttl = 0;                // fly_cache_min_ttl, 0 = none
    int64_t max_ttl = 0;                // fly_cache_max_ttl, 0 = none
    bool ignore_set_cookie = false;     // fly_cache_ignore_set_cookie
    // fly_cache_revalidate: a response with a validator that is already
    // stale (max-age=0, ...) or says no-cache is stored with ttl 0, so
    // the next request revalidates it instead of fetching it whole.
    bool revalidate = false;
};

// What the shell gathered from the request and the response headers.
struct ResponseFacts {
    int status = 0;
    // All lines of the cache-control field that applies (select_targeted):
    // CDN-Cache-Control or the fly_cache_control_header field when one is
    // usable (`targeted`: Expires is then ignored, RFC 9213 2.1), else
    // Cache-Control.
    CacheControl cc;
    bool targeted = false;
    bool has_expires = false;
    bool expires_valid = false;         // false: Expires present but bad (= already expired)
    int64_t expires = 0;
    bool has_date = false;
    int64_t date = 0;
    int64_t age = 0;                    // Age header of the origin, 0 if none
    bool age_invalid = false;           // AgeField::invalid(): treated as stale
    bool has_set_cookie = false;
    bool vary_star = false;             // Vary contains "*"
    bool has_validator = false;         // ETag or Last-Modified
    bool request_authorization = false; // the request had Authorization
    bool request_range = false;         // the request had Range
    // The request had a header through which apps rebuild the URL or the
    // method they answer for, that the key does not hold
    // (unkeyed_forwarding()): what the app made of it is not for everyone.
    bool request_forwarded = false;
    // The request had a body (Content-Length > 0 or chunked): a GET's body
    // has no meaning for the key (RFC 9110 9.3.1), yet an app may read it.
    bool request_body = false;
    // The response has fly-replay: a routing answer for one request (the
    // app asked Fly to replay it), never one for everyone.
    bool has_fly_replay = false;
    // The request had a precondition (If-Match, If-None-Match,
    // If-Modified-Since, If-Unmodified-Since, If-Range): only a 200 answers
    // it with the representation every other client would get.
    bool request_conditional = false;
    int64_t now = 0;                    // unix seconds when the response arrived
};

enum class StoreVerdict : uint8_t {
    store,
    no_store,        // Cache-Control: no-store
    is_private,      // Cache-Control: private
    no_cache,        // Cache-Control: no-cache (would need revalidation)
    authorization,   // request had Authorization, response not marked shareable
    set_cookie,      // Set-Cookie without fly_cache_ignore_set_cookie
    vary_star,       // Vary: *
    status,          // status not cacheable (1xx, 206, 304, ...)
    no_freshness,    // neither explicit freshness nor a fly_cache_valid rule
    expired,         // freshness lifetime minus age is <= 0
    // added by the core (appended, so the values above do not move):
    range,           // the request had Range (we store only whole responses)
    invalid,         // Cache-Control could not be parsed: treated as stale
    conditional,     // the request had a precondition and the answer is not a 200
    invalid_age,     // Age is not delta-seconds: how old it is is unknown
    forwarded,       // the request had an unkeyed_forwarding() header
    request_body,    // the request had a body, which the key does not hold
    fly_replay,      // the response asks Fly to replay the request
};

struct StoreDecision {
    StoreVerdict verdict = StoreVerdict::status;
    int64_t ttl = 0;                 // seconds to keep, when verdict == store
    int64_t stale_while_revalidate = 0;  // from the response, for later use
    int64_t stale_if_error = 0;
    // The stale rules of Cache-Control (cache_entry.hpp flags):
    // kEntryNoStale, kEntryMustRevalidate, kEntrySharedMaxAge.
    uint8_t stale_flags = 0;
};

// The rules of RFC 9111 for a shared cache, with fly_cache_valid as the
// freshness of responses that give none of their own, then min/max ttl.
StoreDecision decide_store(const ResponseFacts &facts, const CachePolicy &policy);
// The refusals of decide_store() alone (RFC 9111 3: status, no-store,
// private, Set-Cookie, ...): true and `why` when the response must not be
// stored.  They read neither Date nor Expires, so a caller may check them
// before it parses those (decide_store() checks them again).
bool store_refused(const ResponseFacts &facts, const CachePolicy &policy,
                   StoreVerdict &why);

// Short reason for logs ("no-store", "private", ...).
std::string_view verdict_name(StoreVerdict v);

// A stored Content-Type as nginx's upstream module hands one to the
// filters (ngx_http_upstream_copy_content_type): `type_len` is the length
// of the value up to the ';' that starts a charset parameter (the whole
// value when there is none), `charset` that parameter's value, without
// quotes.  gzip_types, ssi_types, sub_filter_types and charset_types
// match the first type_len bytes, so a HIT is filtered like its MISS.
struct ContentType {
    size_t type_len = 0;
    std::string_view charset;           // points into the value
};
ContentType split_content_type(std::string_view value);

// Headers a cache drops when storing (RFC 9110 7.6.1): Connection,
// Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
// Proxy-Authenticate, Proxy-Authorization, and any header named in the
// response's Connection header value(s) `connection` (comma list).
// Case-insensitive.
bool is_hop_by_hop(std::string_view name, std::string_view connection);

// Request headers through which apps rebuild the URL (or the method) they
// answer for: X-Forwarded-Host, -Server, -Prefix, -Uri, -Scheme, -SSL,
// Forwarded, X-Host, X-Original-Host, X-HTTP-Host-Override, X-Original-URL,
// X-Original-URI, X-Rewrite-URL, Front-End-Https, X-HTTP-Method-Override,
// X-HTTP-Method, X-Method-Override.  Fly's proxy sets none of them (it does
// set X-Forwarded-Proto and -Port, which a client cannot), so a client may
// send any value, and the cache key holds none: true when `name`
// (case-insensitive) is one of them and the response's Vary list `vary`
// does not name it (Vary makes the request's value part of the key).
bool unkeyed_forwarding(std::string_view name, std::string_view vary);

// Keys.  The Redis key of a response is kKeyPrefix + the configured key
// (fly_cache_key).  A key over kMaxKeyLen bytes is not cached.
constexpr std::string_view kKeyPrefix = "fly:";
constexpr size_t kMaxKeyLen = 2048;

// Builds the Redis key for the base entry; false when the configured key
// is empty, holds the variant separator byte 0x1f (which would let one
// URL's key spell another URL's variant key) or the result is over
// kMaxKeyLen.
bool build_key(std::string_view configured, std::string &out);
// The same for a configured key given in parts (their concatenation),
// without putting them together first.
bool build_key(std::initializer_list<std::string_view> parts, std::string &out);

// Vary.  `vary` is the list of request header names the response varies
// on (comma list, as stored in the entry).  `lookup(name)` returns the
// request's value of that header (empty when absent; several lines are
// already joined with ", ").  The variant key is the base key followed
// by, for each name in lower case and sorted order, "\x1f" name "="
// normalized value (white space around commas collapsed, empty list
// elements dropped, '%', control bytes and DEL written as %XX so that a
// value cannot forge the separator).  False when the result is over
// kMaxKeyLen, or when `vary` names more than 16 distinct headers.
template <typename Lookup>
bool build_variant_key(std::string_view base_key, std::string_view vary,
                       Lookup &&lookup, std::string &out);

// Non-template part, used by the template above and by tests.
// Splits `vary` into names (lower-cased, sorted, duplicates removed).
// Returns false when the list has "*", an invalid token or more than
// `max` distinct names.  Empty elements are skipped; n == 0 is possible.
bool vary_names(std::string_view vary, std::string names[], size_t max,
                size_t &n);
void append_vary_part(std::string &key, std::string_view name,
                      std::string_view value);

template <typename Lookup>
bool build_variant_key(std::string_view base_key, std::string_view vary,
                       Lookup &&lookup, std::string &out)
{
    std::string names[16];
    size_t n = 0;
    if (!vary_names(vary, names, 16, n)) {
        return false;
    }
    out.assign(base_key);
    for (size_t i = 0; i < n; i++) {
        append_vary_part(out, names[i], lookup(std::string_view(names[i])));
    }
    return out.size() <= kMaxKeyLen;
}

}  // namespace fly::core
