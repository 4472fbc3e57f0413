// fly-edge nginx shell: the near cache (issue 11): the regional cache's
// hottest entries in an nginx shared-memory zone (fly_cache_near_zone),
// served with no Redis round trip and kept coherent by Redis client-side
// caching.
//
// Per worker, a NearTracker holds a second connection to the region's
// Redis, subscribed to __redis__:invalidate (ngx_fly_redis_sub.hpp), and
// turns on CLIENT TRACKING (default mode, REDIRECT to that connection) on
// the data connection after every (re)connect of either.  Default mode
// tracks exactly the keys this connection read: the entries, Vary markers
// and variants the lookups GET, and the tag epoch that every lookup reads,
// which is what the zone holds; Redis keeps a table of them (bounded by
// its tracking-table-max-keys) and tells this worker, and no other, when
// one changes.  BCAST (with the prefix fly:) would send every change under
// fly: of the region (every fill, every tombstone) to every worker of every
// nginx, whether it holds the key or not.
//
// What vouches for a zone entry is the tracking session that read it: a
// slot in the zone (core/near_session.hpp), ended at once when anything
// could make the worker miss an invalidation (see the .cpp).  A reply
// enters the zone only when the GET was sent after tracking was on, under
// the same session, and no invalidation of its key (or the epoch's) came
// between the GET's sending and its reply (core::NearRace).  Fills never
// enter the zone: a write does not make Redis track the key (and the fill
// script's own read is undone by its own SET), so nothing would vouch for
// the copy; the next lookup's GET, which is tracked, brings it in.
//
// A MISS whose response is not stored (no-store, private, an error, ...)
// leaves a record of the key's absence in the zone, under the same rules
// (its GET's token must still hold when the response decides): the next
// lookups of the key are MISSes at once, with no Redis command, and do not
// take the fill lock (they cannot wait for a fill that is not coming).  A
// response that may be stored is stored as after any MISS; its SET makes
// Redis invalidate the key, which ends the record, as any other change of
// the key does.
#pragma once

#include "ngx_fly.hpp"
#include "core/near_session.hpp"
#include "core/near_zone.hpp"

#include <string_view>

namespace fly {

// ---- configuration (the command table is in ngx_fly_conf.cpp) ---------------

// fly_cache_near_zone SIZE [max_entry=SIZE];   fly_cache_near on | off;
char *set_near_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_near(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
// init_main_conf's part: refuses "fly_cache_near on" without a zone.
bool check_near_conf(ngx_conf_t *cf, MainConf *mcf) noexcept;

// ---- the worker ----------------------------------------------------------------

// init_process / exit_process (after the Redis clients are made / before
// they are deleted).
void near_init_process(ngx_cycle_t *cycle, MainConf *mcf) noexcept;
void near_exit_process() noexcept;

// Is the zone in use for this request's location (a zone, fly_cache_near
// on, a Redis client with its tracking)?
bool near_enabled(ngx_http_request_t *r) noexcept;

// What a GET records when it is sent (for a key with this near_hash).
using NearToken = core::NearRace::Token;
NearToken near_token(uint64_t hash) noexcept;

// The usable zone entry of `key` (a value, or a record of its absence),
// referenced until the request's pool goes (its bytes stay valid until
// then); nullptr if none.
const core::NearEntry *near_get(ngx_http_request_t *r, std::string_view key,
                                uint64_t hash) noexcept;

// A value Redis sent for `key` to a GET that took `token`, valid at tag
// epoch `epoch`, which the lookup's GET of the epoch (`epoch_token`) read.
// The epoch becomes the zone's (if its token holds), then the value
// enters the zone if both tokens hold (the session that read them still
// vouches for them, nothing of either changed meanwhile), it is not over
// max_entry and it is fresh (until `fresh_until`, unix seconds).
void near_offer(std::string_view key, uint64_t hash, const NearToken &token,
                std::string_view value, int64_t fresh_until, bool marker,
                uint64_t epoch, const NearToken &epoch_token) noexcept;

// Redis had no value under `key` for the GET that took `token` (the
// lookup read the tag epoch `epoch` with `epoch_token`), and the response
// was not stored: if both tokens still hold, the zone records the key's
// absence (core::kNearAbsent, for core::kNearAbsentSeconds at most), so
// the next lookups go to the app without asking Redis until Redis tells
// of a change of the key.
void near_offer_absent(std::string_view key, const NearToken &token,
                       uint64_t epoch, const NearToken &epoch_token) noexcept;

// This nginx invalidated `key` (the primary's tombstone will come back as
// an invalidation too): out of the zone now.
void near_drop(std::string_view key) noexcept;

// The zone's counts (fly_status), when this worker has a zone.
bool near_stats(core::NearStats *out) noexcept;

}  // namespace fly
