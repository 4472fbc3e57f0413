// fly-edge pure core: the near cache's table (issue 11), the part of the
// fly_cache_near_zone shared memory that holds entries.  No nginx header
// here: the memory comes from an allocator the caller passes in (nginx's
// slab allocator in the zone, malloc in the unit tests,
// t/unit/test_near_zone.cpp).
//
// Everything here lives in memory shared by the workers and is called with
// the zone's lock held (the sessions of near_session.hpp are lock-free).
// Pointers are plain: every process maps the zone at the same address.
// Nothing that could differ between processes (function pointers, a
// vtable) is stored here.
//
// An entry is keyed by its Redis key and holds the value Redis sent (a
// cache entry, or a Vary marker) or the record that Redis had none, the session that vouches for it (the
// tracking session whose GET read it), the tag epoch it was valid at and
// how long it is fresh.  The table is a chained hash table plus an LRU
// list; when memory runs out, the least recently used entries that no
// request is sending go first.  An entry being sent (refs > 0) that is
// invalidated or replaced leaves the table at once and its memory is
// freed when the last request lets it go.
//
// The zone also knows the current tag epoch (the value of fly:\x1fepoch,
// read with every lookup), vouched for like an entry; a tag purge INCRs
// it, its invalidation clears the record, and until a lookup reads it
// again no entry is usable.
#pragma once

#include "core/near_session.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fly::core {

// Memory for the table (entries); alloc returns nullptr when out.
struct NearAlloc {
    void *(*alloc)(void *ctx, size_t size) noexcept;
    void (*free)(void *ctx, void *p) noexcept;
    void *ctx;
};

constexpr uint8_t kNearMarker = 0x01;    // the value is a Vary marker
// No value: Redis had nothing under the key when a lookup read it (a MISS
// whose response was not stored).  Vouched for like a value, so while it
// is usable the key's lookups skip Redis and go to the app at once.
constexpr uint8_t kNearAbsent = 0x02;
// How long such a record is kept at most (seconds).  Redis's tracking
// tells of any change of the key sooner; the bound is for a key whose
// lookups, skipping Redis, no longer take the fill lock.
constexpr int64_t kNearAbsentSeconds = 60;

struct NearEntry {
    NearEntry *hnext;            // bucket chain
    NearEntry *newer;            // LRU list
    NearEntry *older;
    uint64_t hash;
    uint64_t epoch;              // the tag epoch it was valid at
    int64_t fresh_until;         // unix seconds: not served at or after
    uint32_t key_len;
    uint32_t value_len;
    uint32_t refs;               // requests sending it now
    uint32_t session;            // the session that vouches for it
    int16_t slot;                // ... and its slot
    uint8_t flags;               // kNearMarker, kNearAbsent
    uint8_t dead;                // out of the table, freed at refs == 0

    std::string_view key() const noexcept
    {
        return {reinterpret_cast<const char *>(this + 1), key_len};
    }
    std::string_view value() const noexcept
    {
        return {reinterpret_cast<const char *>(this + 1) + key_len, value_len};
    }
    // The memory one entry takes (before the allocator's rounding).
    static size_t size_for(size_t key_len, size_t value_len) noexcept
    {
        return sizeof(NearEntry) + key_len + value_len;
    }
};

// 64-bit FNV-1a of a key.
uint64_t near_hash(std::string_view key) noexcept;

// May a value Redis sent enter the zone?  Not over `max_entry` bytes, and
// fresh now (what is not fresh is never served from the zone).
constexpr bool near_admissible(size_t value_len, size_t max_entry,
                               int64_t fresh_until, int64_t now_s)
{
    return value_len <= max_entry && now_s < fresh_until;
}

struct NearStats {
    uint64_t entries;            // in the table
    uint64_t bytes;              // their size_for() total
    uint64_t stored;
    uint64_t evicted;
    uint64_t invalidated;        // removed by an invalidation
    uint64_t no_memory;          // values not stored: no room even after
                                 // evicting
};

// What a value stored in the zone carries besides its bytes.
struct NearVouch {
    int16_t slot = -1;
    uint32_t session = 0;
};

struct NearEpoch {
    uint64_t value;
    uint32_t session;
    int16_t slot;
    uint8_t present;
};

// The time of a check: wall clock seconds (freshness) and the monotonic
// milliseconds of the session leases.
struct NearNow {
    int64_t unix_s;
    uint64_t mono_ms;
};

struct NearZone {
    static constexpr uint64_t kMagic = 0x464c594e45415231ull;   // FLYNEAR1
    static constexpr size_t kMaxEvictions = 256;   // per store

    uint64_t magic;
    NearSessions sessions;
    NearEpoch epoch;
    NearStats stats;
    NearEntry **buckets;
    uint64_t mask;               // buckets - 1 (a power of two)
    NearEntry *newest;
    NearEntry *oldest;

    // How many buckets for a zone of `bytes` (a power of two).
    static size_t buckets_for(size_t bytes) noexcept;

    // An empty zone with `n` buckets (a power of two) at `b`.
    void init(NearEntry **b, size_t n) noexcept;

    // The entry under `key`, usable or not; nullptr if none.
    NearEntry *find(std::string_view key, uint64_t hash) const noexcept;

    // May `e` be served now?  Fresh, vouched for by a live session, and
    // valid at the tag epoch the zone knows (itself vouched for).
    bool usable(const NearEntry *e, NearNow now) const noexcept;

    // The usable entry of `key`, referenced (release() it) and made the
    // most recent; nullptr if none.
    NearEntry *acquire(std::string_view key, uint64_t hash,
                       NearNow now) noexcept;
    void release(NearEntry *e, const NearAlloc &a) noexcept;

    // Stores `value` under `key` (replacing what was there), vouched for
    // by `v`, valid at tag epoch `epoch` and fresh until `fresh_until`.
    // Evicts the least recently used entries no request is sending when
    // memory is short (at most kMaxEvictions).  nullptr when it does not
    // fit: then nothing of the key is left in the table either.
    NearEntry *store(std::string_view key, uint64_t hash,
                     std::string_view value, NearVouch v, uint64_t epoch,
                     int64_t fresh_until, uint8_t flags,
                     const NearAlloc &a) noexcept;

    // Redis says `key` changed: it leaves the table.  True if it was there.
    bool forget(std::string_view key, uint64_t hash,
                const NearAlloc &a) noexcept;

    // The tag epoch as a lookup read it, vouched for by `v`; or unknown.
    void set_epoch(uint64_t value, NearVouch v) noexcept;
    void forget_epoch() noexcept { epoch.present = 0; }
    bool epoch_usable(uint64_t now_ms) const noexcept
    {
        return epoch.present
               && sessions.live(epoch.slot, epoch.session, now_ms);
    }

    // Every entry leaves (a reload), and every session ends.
    void clear(const NearAlloc &a) noexcept;

    // The entry leaves the table (it is freed now, or by the last release).
    void remove(NearEntry *e, const NearAlloc &a) noexcept;

private:
    void unlink_lru(NearEntry *e) noexcept;
    void push_newest(NearEntry *e) noexcept;
    void unlink_bucket(NearEntry *e) noexcept;
    void free_entry(NearEntry *e, const NearAlloc &a) noexcept;
    bool evict_one(const NearAlloc &a) noexcept;
};

}  // namespace fly::core
