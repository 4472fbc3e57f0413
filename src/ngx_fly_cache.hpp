// fly-edge nginx shell: the regional Redis cache.  What its two sides
// share: the lookup (ngx_fly_cache_lookup.cpp: pre-content handler, Redis
// reply, HIT) and the fill (ngx_fly_cache_fill.cpp: header and body
// filters, store, invalidation).  Private to those two files.  Nothing in
// either ever fails a request: any Redis trouble turns into a MISS or
// ERROR served by the app.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_near.hpp"
#include "core/http_text.hpp"

#include <string>

namespace fly {

struct RedisOp;

struct CacheCtx {
    ngx_http_request_t *r;
    RedisOp *op;                 // pending GET
    std::string key;             // Redis key of the base entry
    std::string variant_key;     // Redis key of the Vary variant, if any
    std::string generation;      // token of the Vary marker seen or made
    bool new_marker;             // the fill writes a new Vary marker
    char *reply;                 // stolen reply bytes behind a HIT
    bool waiting;                // parked on a GET
    bool lookup_variant;         // the GET in flight is for the variant
    bool want_store;             // a fill may happen if the response allows
    uint8_t uri_changes;         // r->uri_changes at the lookup: the fill
                                 // belongs to the location that looked up
    bool capturing;              // body filter is copying the body
    std::string entry;           // the entry being captured
    size_t prefix_len;
    int64_t ttl;
    std::string vary;            // Vary names, when a marker must be stored
    bool near;                   // the near cache is used (ngx_fly_near.hpp)
    NearToken near_token;        // what the GET in flight took
};

// The request's value of header `name` (lower case), lines joined
// with ", ", as Vary compares them.
inline std::string request_header(ngx_http_request_t *r, std::string_view name)
{
    std::string v;
    for_each_header(r->headers_in.headers, [&](ngx_table_elt_t &h) {
        if (core::iequals(view(h.key), name)) {
            if (!v.empty()) {
                v.append(", ");
            }
            v.append(view(h.value));
        }
    });
    return v;
}

// Variant keys: the base key, the marker's generation, then the Vary
// parts (the core adds those).  0x1f cannot occur in a base key.
inline std::string variant_base(const CacheCtx *cc)
{
    std::string base(cc->key);
    base.append("\x1fg").append(cc->generation);
    return base;
}

// Adds fly_cache_status_header, when configured; false on no memory.
inline bool add_status_header(ngx_http_request_t *r, LocConf *lcf,
                              CacheStatus s)
{
    return lcf->cache_status_header.len == 0
           || push_header(r, view(lcf->cache_status_header),
                          cache_status_name(s)) != nullptr;
}

// ngx_fly_cache_fill.cpp: installs the header and body filters.
void cache_filters_init();

}  // namespace fly
