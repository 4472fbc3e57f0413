// fly-edge nginx shell: what the cache's lookup takes from the near cache
// (ngx_fly_near.hpp) before it asks Redis: a HIT sent from the zone's copy
// of the entry, or the zone's record that Redis has nothing under the key
// (a MISS at once); and, after a MISS whose response was not stored, that
// record offered to the zone.  The lookup is ngx_fly_cache_lookup.cpp.
#include "ngx_fly_cache.hpp"
#include "core/cache_entry.hpp"

#include <cstdio>
#include <string>

namespace fly {

namespace {

// The zone says Redis has nothing under the key (or the variant): the
// lookup is a MISS at once, as if its GETs had found nothing at the tag
// epoch the record was made at.
void near_absent(ngx_http_request_t *r, CacheCtx *cc, const core::NearEntry *n)
{
    cc->near_absent = true;
    cc->epoch_ok = true;
    cc->epoch = n->epoch;
    if (n->epoch != 0) {         // 0: no purge ever, the epoch key is nil
        char buf[24];
        cc->epoch_str.assign(buf, snprintf(buf, sizeof(buf), "%llu",
                                           static_cast<unsigned long long>(n->epoch)));
    }
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: near MISS: Redis has no entry");
}

}  // namespace

// A HIT from the near cache: no Redis command at all.  NGX_DECLINED when
// the zone has no usable entry (or Vary variant) for the request; then
// cc->near_absent says whether it knew Redis has none either.  The zone
// holds only what a Redis lookup of the current tag epoch read (markers
// too, and the absence of what a MISS did not store).
ngx_int_t near_hit(ngx_http_request_t *r, CacheCtx *cc, RequestCtx *ctx)
{
    const core::NearEntry *n = near_get(r, cc->key, core::near_hash(cc->key));
    if (n != nullptr && (n->flags & core::kNearAbsent)) {
        near_absent(r, cc, n);
        return NGX_DECLINED;
    }
    core::EntryView e;
    // (the zone holds only what decode_entry() accepted)
    if (n == nullptr || core::decode_known_entry(n->value(), e) != core::DecodeError::none) {
        return NGX_DECLINED;
    }
    if (e.meta.flags & core::kEntryVaryMarker) {
        std::string vkey;
        if (e.nheaders != 1
            || !core::build_variant_key(
                   variant_base(cc->key, e.body), e.headers[0].value,
                   [&](std::string_view name) { return request_header(r, name); },
                   vkey))
        {
            return NGX_DECLINED;
        }
        const core::NearEntry *v = near_get(r, vkey, core::near_hash(vkey));
        if (v != nullptr && (v->flags & core::kNearAbsent)
            && v->epoch == n->epoch)
        {
            // the fill stores the variant under this marker's generation
            cc->generation.assign(e.body);
            cc->variant_key = std::move(vkey);
            cc->lookup_variant = true;
            near_absent(r, cc, v);
            return NGX_DECLINED;
        }
        n = v;
        if (n == nullptr
            || core::decode_known_entry(n->value(), e) != core::DecodeError::none
            || (e.meta.flags & core::kEntryVaryMarker))
        {
            return NGX_DECLINED;
        }
    }
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: near HIT status %ui, %uz body bytes",
                   (ngx_uint_t) e.meta.status, e.body.size());
    ctx->cache_tier = CacheTier::near;
    cc->want_store = false;
    ngx_http_finalize_request(r, send_hit(r, ctx, e));
    return NGX_DONE;
}

void offer_absent(CacheCtx *cc) noexcept
{
    if (cc->absent_key.empty()) {
        return;
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cc->r->connection->log, 0,
                   "fly cache: not stored, Redis has nothing under \"%s\"",
                   cc->absent_key.c_str());
    // (cc->near_token is the last GET's: the one that found nothing)
    near_offer_absent(cc->absent_key, cc->near_token, cc->epoch,
                      cc->near_epoch_token);
    cc->absent_key.clear();
}

}  // namespace fly
