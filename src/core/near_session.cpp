// fly-edge pure core: near cache sessions and the GET / invalidation race
// (see near_session.hpp).
#include "core/near_session.hpp"

#include <cstring>

namespace fly::core {

void NearSessions::init() noexcept
{
    last_id.store(0, std::memory_order_relaxed);
    for (NearSlot &s : slot) {
        s.word.store(0, std::memory_order_relaxed);
        s.pid.store(0, std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_release);
}

int NearSessions::claim(int64_t pid, uint64_t now_ms, uint64_t until_ms,
                        bool (*alive)(int64_t pid), uint32_t *id) noexcept
{
    uint32_t mine;
    do {
        mine = last_id.fetch_add(1, std::memory_order_relaxed) + 1;
    } while (mine == 0);
    uint64_t want = near_slot_word(mine, until_ms);

    for (size_t i = 0; i < kNearSlots; i++) {
        NearSlot &s = slot[i];
        uint64_t w = s.word.load(std::memory_order_acquire);
        uint32_t holder = static_cast<uint32_t>(w >> 32);
        bool free = holder == 0 || !near_word_live(w, holder, now_ms);
        if (!free && alive != nullptr) {
            int64_t p = s.pid.load(std::memory_order_relaxed);
            free = p != 0 && p != pid && !alive(p);
        }
        if (free && s.word.compare_exchange_strong(w, want,
                                                   std::memory_order_acq_rel))
        {
            s.pid.store(pid, std::memory_order_relaxed);
            *id = mine;
            return static_cast<int>(i);
        }
    }
    return -1;
}

bool NearSessions::renew(int s, uint32_t id, uint64_t until_ms) noexcept
{
    if (s < 0 || static_cast<size_t>(s) >= kNearSlots || id == 0) {
        return false;
    }
    std::atomic<uint64_t> &word = slot[s].word;
    uint64_t w = word.load(std::memory_order_acquire);
    uint64_t want = near_slot_word(id, until_ms);
    while (static_cast<uint32_t>(w >> 32) == id) {
        if (word.compare_exchange_weak(w, want, std::memory_order_acq_rel)) {
            return true;
        }
    }
    return false;
}

void NearSessions::end(int s, uint32_t id) noexcept
{
    if (s < 0 || static_cast<size_t>(s) >= kNearSlots || id == 0) {
        return;
    }
    std::atomic<uint64_t> &word = slot[s].word;
    uint64_t w = word.load(std::memory_order_acquire);
    while (static_cast<uint32_t>(w >> 32) == id) {
        if (word.compare_exchange_weak(w, 0, std::memory_order_acq_rel)) {
            return;
        }
    }
}

void NearSessions::end_all() noexcept
{
    for (NearSlot &s : slot) {
        s.word.store(0, std::memory_order_release);
    }
}

NearRace::NearRace() noexcept
{
    std::memset(seq_, 0, sizeof(seq_));
}

uint32_t NearRace::next_generation() noexcept
{
    if (++gen_ == 0) {
        gen_ = 1;       // 0 is "no tracking"
    }
    return gen_;
}

}  // namespace fly::core
