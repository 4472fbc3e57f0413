// fly-edge pure core: tombstones and the fill fence (design-cache.md,
// "Tombstones").  No nginx header here: this file is unit-tested with
// cmocka.
//
// An invalidation (a successful write, a purge, a purge rule, a Location
// target) writes, on the primary Redis, the same tombstone under the
// key's base key `fly:<key>` (replication then overwrites every region's
// copy, region-local fills included, and every Vary variant becomes
// unreachable) and under its fence record `fly:<key>\x1fi`, both for
// tombstone_ttl_ms(fence).  A lookup that finds a tombstone is a MISS.
//
// The fence: a fill may be stored only if fence_allows() says so of the
// tombstone in the fence record, if any (the fill script checks it in
// Redis, atomically with the SET; the lookup checks the one it saw, to
// skip capturing a body that could not be stored):
//   - its lookup happened at least `fence` after the invalidation, so the
//     region's database had that long to replay the write (without
//     fly_postgres, `fence` is the replication lag one is willing to
//     assume); a lookup before the invalidation never passes, so a
//     response rendered across an invalidation is never stored;
//   - (issue 9) when the tombstone holds the primary's WAL position and
//     the region's replica position was sampled before the lookup: that
//     position alone decides, the fill passes iff the replica had
//     replayed at least the tombstone's (however long ago the
//     invalidation was: a replica far behind must not store old pages).
// The record outlives the tombstone's fence by kFenceGraceMs, and a fill
// whose response took longer than that since its lookup is not stored:
// whatever invalidation happened meanwhile is still on record.
//
// Encoding (ASCII, fixed width, so the fill script compares fields as
// strings): "FLYT" "1" <flags: one hex digit, bit 0 = has LSN>
// <invalidation time, unix ms, 16 lower-case hex digits> <primary WAL
// LSN, 16 hex digits, 0 when none>: 38 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fly::core {

constexpr size_t kTombstoneLen = 38;
constexpr int64_t kFenceGraceMs = 60000;

struct Tombstone {
    int64_t time_ms = 0;         // when the invalidation was made (unix ms)
    bool has_lsn = false;        // issue 9: the primary's WAL position then
    uint64_t lsn = 0;
};

// The value starts like a tombstone (magic "FLYT"): it is not an entry.
bool is_tombstone(std::string_view value);

std::string encode_tombstone(const Tombstone &t);

// False unless `value` is exactly a tombstone as encode_tombstone()
// writes them (time 0..2^53, lower-case hex, no LSN bits without the flag).
bool decode_tombstone(std::string_view value, Tombstone &out);

// How long the tombstone and the fence record live.
inline int64_t tombstone_ttl_ms(int64_t fence_ms)
{
    return fence_ms + kFenceGraceMs;
}

// The fence record of base key `base_key`.
std::string fence_record_key(std::string_view base_key);

// Where a fill first writes its entry: "<key>\x1fs<token>" (a Vary part
// is "\x1f<name>=<value>" and a token has no '=', so it is no entry's
// key).  The entry is sent there with a plain SET and the fill script
// moves it under `key` (RENAME) when the fence allows, else deletes it:
// the value never passes through Lua, which copies it twice.  `token` is
// unique in the region (core::lock_token()).
std::string fill_staging_key(std::string_view key, std::string_view token);

// How long a staged entry lives when no fill script comes to move it (the
// connection was lost between the two commands).
constexpr int64_t kStagingTtlMs = 60000;

// What a fill knows of its lookup.
struct FillFence {
    int64_t lookup_ms = 0;       // unix ms when the lookup was made
    int64_t fence_ms = 0;        // fly_cache_fence of the filling location
    bool has_lsn = false;        // issue 9: the replica position sampled
    uint64_t replica_lsn = 0;    // before the app was asked
};

// The fence decision (see above).
bool fence_allows(const Tombstone &t, const FillFence &f);

// The same decision in the fill script's terms: its two arguments, the
// latest invalidation time the fill may pass (16 hex digits; negative
// times clamp to 0, which passes nothing but time 0) and the replica LSN
// (16 hex digits, or "" without one).  The script passes a record iff,
// when the record has an LSN and the replica LSN is given, record.lsn <=
// replica LSN, else record.time <= threshold (strings of equal width
// compare as their numbers).
std::string fence_threshold_arg(const FillFence &f);
std::string fence_lsn_arg(const FillFence &f);

// A response that took longer than the grace since its lookup is not
// stored (its `elapsed_ms` from lookup to store).
inline bool fill_in_time(int64_t elapsed_ms)
{
    return elapsed_ms >= 0 && elapsed_ms < kFenceGraceMs;
}

// 16 lower-case hex digits.
std::string hex16(uint64_t v);

}  // namespace fly::core
