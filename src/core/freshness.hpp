// fly-edge pure core: what the cache does with an entry past its freshness
// (RFC 9111 4.2.4, 4.3, 5.2.2; RFC 5861): whether to revalidate it with a
// conditional request, how a 304 updates its headers, whether it may be
// served stale when the app fails, and how long it stays in Redis.
// No nginx header here: this file is unit-tested with cmocka.
//
// The stale window.  An entry is fresh while now < stored + ttl (its end
// of freshness).  Past that, it may be served stale for a failure of the
// app (error, timeout, http_5xx) while
//   now < end + W,  W = fly_cache_stale when set, else the larger of the
//                   response's stale-if-error and stale-while-revalidate,
// when fly_cache_use_stale names the failure; and, whatever
// fly_cache_use_stale says (as nginx does), while now < end + stale-if-error
// for a failure that RFC 5861 covers (all of them).  Never when the entry
// says no stale (must-revalidate, proxy-revalidate, no-cache: kEntryNoStale);
// with s-maxage (kEntrySharedMaxAge, RFC 9111 5.2.2.10) only the
// response's own stale-if-error counts, not the configuration.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cache_entry.hpp"

namespace fly::core {

// Why the cache would like to serve an entry stale.
enum class StaleCause : uint8_t {
    error,          // the app could not be reached, or failed (nginx's 502)
    timeout,        // the app did not answer in time (nginx's 504)
    http_500,       // the app answered 500, 502, 503, 504
    http_502,
    http_503,
    http_504,
};

// fly_cache_use_stale keeps these bits; 0 is "off".
constexpr uint32_t stale_bit(StaleCause c)
{
    return 1u << static_cast<unsigned>(c);
}

// fly_cache_use_stale updating: not a failure, its own bit.
constexpr uint32_t kUseStaleUpdating = 1u << 8;

struct StaleConfig {
    uint32_t use_stale = 0;         // stale_bit() of each fly_cache_use_stale cause
    int64_t stale = -1;             // fly_cache_stale seconds; -1 = not set
    bool revalidate = true;         // fly_cache_revalidate
};

// What made the response that is about to go out a failure, if it is one:
// `generated` when nginx made it (the app was not reached or did not
// answer: 504 is a timeout, any other status an error), otherwise the
// app's own status (500, 502, 503, 504).  False for anything else.
bool failure_cause(int status, bool generated, StaleCause &cause);

// Seconds past the end of freshness during which `cause` lets the entry
// be served stale (0: not at all), by the rules above.
int64_t stale_window(const EntryMeta &m, const StaleConfig &c, StaleCause cause);

// True when, at `now`, the entry may be served stale for `cause`.  A
// fresh entry that a soft purge made stale counts from now (past = 0).
bool may_serve_stale(const EntryMeta &m, const StaleConfig &c,
                     StaleCause cause, int64_t now);

// Seconds past the end of freshness during which the entry may be served
// (UPDATING) while one request of the region refreshes it: the response's
// stale-while-revalidate (RFC 5861 3, honoured without configuration),
// or, with fly_cache_use_stale updating, fly_cache_stale when set, else
// stale-while-revalidate.  Never for kEntryNoStale (must-revalidate,
// proxy-revalidate, no-cache); with s-maxage only the response's own.
int64_t updating_window(const EntryMeta &m, const StaleConfig &c);

// True when, at `now`, the expired (or soft-purged: counted from now)
// entry may be served as UPDATING.
bool may_serve_updating(const EntryMeta &m, const StaleConfig &c, int64_t now);

// RFC 9111 5.2.2.2: a cache that cannot reach the origin (error, timeout)
// for an entry with must-revalidate (or proxy-revalidate) answers 504.
bool must_answer_504(const EntryMeta &m, StaleCause cause);

// How long (seconds) Redis keeps an entry of freshness `ttl`: its
// freshness, the longest stale window any cause could use (also for an
// entry that may not be served stale: must-revalidate answers 504 in that
// window), and, when the
// entry can be revalidated (fly_cache_revalidate on and the response has
// an ETag or Last-Modified), kRevalidateKeep more: a 304 then refreshes it
// instead of a full fetch.  At least 1 (Redis refuses EX 0).
constexpr int64_t kRevalidateKeepMin = 60;
constexpr int64_t kRevalidateKeepMax = 86400;
int64_t keep_seconds(const EntryMeta &m, const StaleConfig &c, bool validators);

// Whether a lookup that found an expired entry sends a conditional
// request: revalidation on, a GET, the entry has a validator, and the
// client sent no precondition and no Range of its own (those go to the
// app as they came: the app answers the client's preconditions, ours are
// never mixed with them).
bool should_revalidate(bool enabled, bool get, bool client_conditional,
                       std::string_view etag, std::string_view last_modified);

// A stored entry's first ETag and Last-Modified (empty when absent).
void entry_validators(const EntryView &e, std::string_view &etag,
                      std::string_view &last_modified);

// RFC 9111 3.2 and 4.3.4: a 304 replaces the stored header fields it
// carries, except those a cache does not store (hop-by-hop ones, those
// `connection` names) and those that describe the stored body's framing
// or coding, which the 304 does not change: Content-Length,
// Content-Range, Content-Encoding, Transfer-Encoding.  Age is never
// stored.
bool kept_from_304(std::string_view name, std::string_view connection);

// The stored headers updated by a 304's (`fresh`): each name the 304 has
// (and kept_from_304() does not exclude) loses all its stored lines; the
// 304's lines take the place of the first one, in their order; names new
// to the entry follow, in the 304's order.  Names compare
// case-insensitively.  Writes at most `max` headers to `out` (views into
// the inputs) and returns how many; false when there would be more.
bool merge_304(const EntryHeader *stored, size_t nstored,
               const EntryHeader *fresh, size_t nfresh,
               std::string_view connection, EntryHeader *out, size_t max,
               size_t &n);

}  // namespace fly::core
