// fly-edge pure core: the near cache's table (see near_zone.hpp).
#include "core/near_zone.hpp"

#include <cstring>

namespace fly::core {

uint64_t near_hash(std::string_view key) noexcept
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : key) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

size_t NearZone::buckets_for(size_t bytes) noexcept
{
    // about one bucket per 4 KiB (an entry is rarely smaller): short chains
    size_t want = bytes / 4096;
    size_t n = 64;
    while (n < want && n < (size_t(1) << 24)) {
        n <<= 1;
    }
    return n;
}

void NearZone::init(NearEntry **b, size_t n) noexcept
{
    magic = kMagic;
    sessions.init();
    epoch = NearEpoch{0, 0, -1, 0};
    stats = NearStats{};
    buckets = b;
    mask = n - 1;
    std::memset(b, 0, n * sizeof(NearEntry *));
    newest = nullptr;
    oldest = nullptr;
}

NearEntry *NearZone::find(std::string_view key, uint64_t hash) const noexcept
{
    for (NearEntry *e = buckets[hash & mask]; e != nullptr; e = e->hnext) {
        if (e->hash == hash && e->key_len == key.size()
            && std::memcmp(e + 1, key.data(), key.size()) == 0)
        {
            return e;
        }
    }
    return nullptr;
}

bool NearZone::usable(const NearEntry *e, NearNow now) const noexcept
{
    return now.unix_s < e->fresh_until
           && sessions.live(e->slot, e->session, now.mono_ms)
           && epoch_usable(now.mono_ms) && e->epoch == epoch.value;
}

NearEntry *NearZone::acquire(std::string_view key, uint64_t hash,
                             NearNow now) noexcept
{
    NearEntry *e = find(key, hash);
    if (e == nullptr || !usable(e, now)) {
        return nullptr;
    }
    e->refs++;
    if (newest != e) {
        unlink_lru(e);
        push_newest(e);
    }
    return e;
}

void NearZone::release(NearEntry *e, const NearAlloc &a) noexcept
{
    if (e->refs > 0 && --e->refs == 0 && e->dead) {
        a.free(a.ctx, e);
    }
}

// ---- lists ------------------------------------------------------------------

void NearZone::unlink_lru(NearEntry *e) noexcept
{
    if (e->newer != nullptr) {
        e->newer->older = e->older;
    } else {
        newest = e->older;
    }
    if (e->older != nullptr) {
        e->older->newer = e->newer;
    } else {
        oldest = e->newer;
    }
    e->newer = e->older = nullptr;
}

void NearZone::push_newest(NearEntry *e) noexcept
{
    e->older = newest;
    e->newer = nullptr;
    if (newest != nullptr) {
        newest->newer = e;
    } else {
        oldest = e;
    }
    newest = e;
}

void NearZone::unlink_bucket(NearEntry *e) noexcept
{
    for (NearEntry **p = &buckets[e->hash & mask]; *p != nullptr;
         p = &(*p)->hnext)
    {
        if (*p == e) {
            *p = e->hnext;
            e->hnext = nullptr;
            return;
        }
    }
}

void NearZone::free_entry(NearEntry *e, const NearAlloc &a) noexcept
{
    if (e->refs == 0) {
        a.free(a.ctx, e);
    } else {
        e->dead = 1;        // the last release() frees it
    }
}

void NearZone::remove(NearEntry *e, const NearAlloc &a) noexcept
{
    unlink_bucket(e);
    unlink_lru(e);
    stats.entries--;
    stats.bytes -= NearEntry::size_for(e->key_len, e->value_len);
    free_entry(e, a);
}

// The least recently used entry that no request is sending leaves.
bool NearZone::evict_one(const NearAlloc &a) noexcept
{
    for (NearEntry *e = oldest; e != nullptr; e = e->newer) {
        if (e->refs == 0) {
            remove(e, a);
            stats.evicted++;
            return true;
        }
    }
    return false;
}

// ---- changes ----------------------------------------------------------------

NearEntry *NearZone::store(std::string_view key, uint64_t hash,
                           std::string_view value, NearVouch v,
                           uint64_t ep, int64_t fresh_until, uint8_t flags,
                           const NearAlloc &a) noexcept
{
    if (NearEntry *old = find(key, hash)) {
        remove(old, a);
    }
    if (key.size() > UINT32_MAX || value.size() > UINT32_MAX - key.size()) {
        stats.no_memory++;
        return nullptr;
    }
    size_t size = NearEntry::size_for(key.size(), value.size());
    void *mem = a.alloc(a.ctx, size);
    for (size_t i = 0; mem == nullptr && i < kMaxEvictions; i++) {
        if (!evict_one(a)) {
            break;
        }
        mem = a.alloc(a.ctx, size);
    }
    if (mem == nullptr) {
        stats.no_memory++;
        return nullptr;
    }
    auto *e = static_cast<NearEntry *>(mem);
    e->hnext = nullptr;
    e->newer = e->older = nullptr;
    e->hash = hash;
    e->epoch = ep;
    e->fresh_until = fresh_until;
    e->key_len = static_cast<uint32_t>(key.size());
    e->value_len = static_cast<uint32_t>(value.size());
    e->refs = 0;
    e->session = v.session;
    e->slot = v.slot;
    e->flags = flags;
    e->dead = 0;
    char *p = reinterpret_cast<char *>(e + 1);
    std::memcpy(p, key.data(), key.size());
    if (!value.empty()) {        // (a record of absence has no bytes)
        std::memcpy(p + key.size(), value.data(), value.size());
    }

    NearEntry **b = &buckets[hash & mask];
    e->hnext = *b;
    *b = e;
    push_newest(e);
    stats.entries++;
    stats.bytes += size;
    stats.stored++;
    return e;
}

bool NearZone::forget(std::string_view key, uint64_t hash,
                      const NearAlloc &a) noexcept
{
    NearEntry *e = find(key, hash);
    if (e == nullptr) {
        return false;
    }
    remove(e, a);
    stats.invalidated++;
    return true;
}

void NearZone::set_epoch(uint64_t value, NearVouch v) noexcept
{
    epoch.value = value;
    epoch.session = v.session;
    epoch.slot = v.slot;
    epoch.present = 1;
}

void NearZone::clear(const NearAlloc &a) noexcept
{
    sessions.end_all();
    forget_epoch();
    while (oldest != nullptr) {
        remove(oldest, a);
    }
}

}  // namespace fly::core
