// fly-edge pure core: who vouches for the near cache's entries (issue 11).
// No nginx header here: unit-tested with cmocka (t/unit/test_near_session.cpp).
//
// A zone entry may be served only while the Redis tracking session that
// read it is alive: the worker's data connection has CLIENT TRACKING on,
// redirected to its subscriber connection, and both are up.  Every such
// session holds a slot in shared memory (NearSessions, inside the zone):
// a 64-bit word, the session's id (high half) and the deadline of its
// lease (low half, in ticks of kNearTick ms of a monotonic clock common to
// all processes).  An entry records the slot and id that vouch for it; it
// is usable while the slot still holds that id and the lease has not run
// out.  So a session ends for all of its entries at once, with one store:
// a lost connection, a Redis restart, a FLUSHALL (the null invalidation),
// a full resync, a reload.  The lease, renewed by every PONG of the
// subscriber (whose replies come after every invalidation Redis sent
// before it), bounds how long a worker that stopped reading (hung, or
// killed without a successor) is trusted.
//
// NearRace is the worker's own defence against the race Redis's
// client-side caching documentation describes: the reply to a GET and an
// invalidation of the same key travel on different connections, so the
// invalidation may arrive first.  A GET takes a token when it is issued
// (the tracking generation and a counter of invalidations of its key's
// bucket); its reply may enter the zone only if the token still holds.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fly::core {

constexpr size_t kNearSlots = 128;        // sessions alive at once
constexpr uint64_t kNearTick = 16;        // ms per lease tick

// One session's slot.  Lock-free: shared by every worker.
struct NearSlot {
    std::atomic<uint64_t> word;           // id << 32 | lease deadline tick
    std::atomic<int64_t> pid;             // the holder (crash check)
};

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "slots live in shared memory");

// The slot word of session `id` with a lease until `until_ms`.
constexpr uint64_t near_slot_word(uint32_t id, uint64_t until_ms)
{
    return (static_cast<uint64_t>(id) << 32)
           | static_cast<uint32_t>(until_ms / kNearTick);
}

// Does `word` say session `id` is alive at `now_ms`?  (The tick counter
// wraps after 2^32 ticks, about two years; deadlines are compared as
// differences.)
constexpr bool near_word_live(uint64_t word, uint32_t id, uint64_t now_ms)
{
    return id != 0 && static_cast<uint32_t>(word >> 32) == id
           && static_cast<int32_t>(static_cast<uint32_t>(word)
                                   - static_cast<uint32_t>(now_ms / kNearTick))
                  > 0;
}

struct NearSessions {
    std::atomic<uint32_t> last_id;        // ids handed out (0 is never one)
    NearSlot slot[kNearSlots];

    // Every slot free.  Not concurrent with anything (the zone is new).
    void init() noexcept;

    // A new session for process `pid` with a lease until `until_ms`: takes
    // a slot that is free, whose lease has run out, or whose holder is no
    // longer alive (`alive(pid)` false; may be nullptr).  Returns the slot
    // and sets *id, or returns -1 when every slot is in use.
    int claim(int64_t pid, uint64_t now_ms, uint64_t until_ms,
              bool (*alive)(int64_t pid), uint32_t *id) noexcept;

    // Extends the lease of session `id` in `s`.  False when the slot is no
    // longer the session's (ended, or taken after its lease ran out): the
    // session is over.  A session whose lease ran out but whose slot no
    // one took is alive again (its subscriber kept reading in order: the
    // PONG proves every earlier invalidation was applied).
    bool renew(int s, uint32_t id, uint64_t until_ms) noexcept;

    // Ends session `id` (if the slot is still its own).
    void end(int s, uint32_t id) noexcept;

    // Ends every session (a reload: the zone is kept, its sessions are
    // not).
    void end_all() noexcept;

    bool live(int s, uint32_t id, uint64_t now_ms) const noexcept
    {
        return s >= 0 && static_cast<size_t>(s) < kNearSlots
               && near_word_live(slot[s].word.load(std::memory_order_acquire),
                                 id, now_ms);
    }
};

// ---- the GET / invalidation race (per worker) ------------------------------

class NearRace {
public:
    static constexpr size_t kBuckets = 4096;

    // What a GET of a key records when it is issued.
    struct Token {
        uint32_t gen = 0;        // the tracking generation then (0: none)
        uint32_t seq = 0;        // invalidations of the key's bucket then
        uint32_t bucket = 0;
    };

    NearRace() noexcept;

    // A new tracking generation: every token taken before it fails.  Call
    // it whenever what a reply could rely on changes: a connection opened
    // or lost, tracking turned on, the session ended, a flush.
    uint32_t next_generation() noexcept;
    uint32_t generation() const noexcept { return gen_; }

    Token take(uint64_t key_hash) const noexcept
    {
        uint32_t b = static_cast<uint32_t>(key_hash & (kBuckets - 1));
        return Token{gen_, seq_[b], b};
    }
    // An invalidation of a key with this hash arrived.
    void invalidated(uint64_t key_hash) noexcept
    {
        seq_[key_hash & (kBuckets - 1)]++;
    }
    // Nothing that concerns the token's key happened since it was taken
    // (a key sharing its bucket counts: only a lost chance to cache).
    bool holds(const Token &t) const noexcept
    {
        return t.gen != 0 && t.gen == gen_ && t.bucket < kBuckets
               && seq_[t.bucket] == t.seq;
    }

private:
    uint32_t gen_ = 0;
    uint32_t seq_[kBuckets];
};

}  // namespace fly::core
