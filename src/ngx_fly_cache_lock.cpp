// fly-edge nginx shell: the fill lock (fly_cache_lock, issue 10).  A
// lookup that ends in a MISS which may be stored takes the key's lock in
// the regional Redis (SET NX PX, core/cache_lock.hpp) before it goes to
// the app:
//   - taken: the request is the key's filler; the lock is released (the
//     unlock script: only while it holds our token) right after its fill
//     is sent, or as soon as it is known that nothing will be stored;
//   - held by another request (any worker, any nginx on that Redis): the
//     request waits.  The waiters of a key in a worker share one LockWatch
//     that GETs the lock every core::lock_poll_ms(); when it is gone
//     (released or expired) every waiter looks the key up again (the fill
//     is in Redis before the lock goes: one connection, in order) and gets
//     a HIT; a waiter that still misses goes to the app without the lock.
//     Each waiter has its own timer (fly_cache_lock_timeout): then it goes
//     to the app and does not store;
//   - Redis failing or slow: the request goes on as without the lock.
// An expired entry within its stale-while-revalidate window (or
// fly_cache_use_stale updating) takes the same lock: the holder refreshes
// the entry (EXPIRED, revalidated when it can be), the others are answered
// from it at once as UPDATING (lookup_updating), nobody waits.
// Nothing here ever fails a request.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_redis.hpp"
#include "core/cache_lock.hpp"

extern "C" {
#include <hiredis/hiredis.h>
}

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace fly {

// The worker's wait for one lock: its waiters and its poll.
struct LockWatch {
    std::string lock_key;
    ngx_msec_t poll_ms = 25;
    std::vector<CacheCtx *> waiters;
    Event timer;                 // next poll (cancelable: waiters have theirs)
    RedisOp *op = nullptr;       // the poll's GET in flight
};

namespace {

time_t log_slot_lock;

// By lock key.  Worker-local (nginx workers are single-threaded).
std::unordered_map<std::string, std::unique_ptr<LockWatch>> &watches()
{
    static std::unordered_map<std::string, std::unique_ptr<LockWatch>> w;
    return w;
}

RedisClient *regional_client(ngx_http_request_t *r)
{
    return main_conf(r)->redis_client;
}

void drop_watch(LockWatch *w) noexcept
{
    if (w->op != nullptr) {
        RedisClient::cancel(w->op);
        w->op = nullptr;
    }
    watches().erase(w->lock_key);   // destroys w (and disarms its timer)
}

// cc no longer waits on its watch.
void leave_watch(CacheCtx *cc) noexcept
{
    LockWatch *w = cc->watch;
    if (w == nullptr) {
        return;
    }
    cc->watch = nullptr;
    auto it = std::find(w->waiters.begin(), w->waiters.end(), cc);
    if (it != w->waiters.end()) {
        w->waiters.erase(it);
    }
    if (w->waiters.empty()) {
        drop_watch(w);
    }
}

// The lock is gone (or cannot be watched): every waiter looks again.
void wake_all(LockWatch *w) noexcept
{
    std::vector<CacheCtx *> waiters;
    waiters.swap(w->waiters);
    drop_watch(w);
    for (CacheCtx *cc : waiters) {
        cc->watch = nullptr;
        cc->lock_timer.disarm();
        ngx_http_request_t *r = cc->r;
        ngx_connection_t *c = r->connection;
        try {
            lookup_again(r, cc);
        } catch (const std::exception &e) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0, "fly_cache: %s", e.what());
            lookup_finish(r, cc, CacheStatus::miss, false);
        }
        ngx_http_run_posted_requests(c);
    }
}

void on_poll(void *data, redisReply *reply) noexcept;

void poll_now(void *data) noexcept
{
    auto *w = static_cast<LockWatch *>(data);
    if (w->op != nullptr) {
        w->timer.arm(w->poll_ms);
        return;
    }
    const char *argv[2] = {"GET", w->lock_key.data()};
    size_t argvlen[2] = {3, w->lock_key.size()};
    RedisClient *client = w->waiters.empty()
                              ? nullptr
                              : regional_client(w->waiters.front()->r);
    w->op = client ? client->command(2, argv, argvlen, on_poll, w) : nullptr;
    if (w->op == nullptr) {
        wake_all(w);             // Redis unavailable: fail open
    }
}

void on_poll(void *data, redisReply *reply) noexcept
{
    auto *w = static_cast<LockWatch *>(data);
    w->op = nullptr;
    if (reply != nullptr && reply->type == REDIS_REPLY_STRING) {
        w->timer.arm(w->poll_ms);    // still held
        return;
    }
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR
        && log_allowed(&log_slot_lock))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fly_cache: Redis answered GET of a fill lock with "
                      "\"%*s\"", (int) reply->len, reply->str);
    }
    wake_all(w);                 // released, expired, or Redis failing
}

// fly_cache_lock_timeout: to the app, not stored.
void on_lock_timeout(void *data) noexcept
{
    auto *cc = static_cast<CacheCtx *>(data);
    ngx_http_request_t *r = cc->r;
    ngx_connection_t *c = r->connection;
    leave_watch(cc);
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "fly cache: fill lock wait timed out, not storing");
    lookup_finish(r, cc, CacheStatus::miss, false);
    ngx_http_run_posted_requests(c);
}

void wait_for(ngx_http_request_t *r, CacheCtx *cc)
{
    LocConf *lcf = loc_conf(r);
    auto &all = watches();
    auto it = all.find(cc->lock_key);
    LockWatch *w;
    if (it == all.end()) {
        auto nw = std::make_unique<LockWatch>();
        nw->lock_key = cc->lock_key;
        nw->poll_ms = static_cast<ngx_msec_t>(
            core::lock_poll_ms(lcf->cache_lock_timeout));
        nw->timer.init(poll_now, nw.get(), ngx_cycle->log, true);
        w = nw.get();
        all.emplace(cc->lock_key, std::move(nw));
        w->timer.arm(w->poll_ms);
    } else {
        w = it->second.get();
    }
    w->waiters.push_back(cc);
    cc->watch = w;
    // bounds the request's wait: not cancelable
    cc->lock_timer.init(on_lock_timeout, cc, r->connection->log, false);
    cc->lock_timer.arm(lcf->cache_lock_timeout);
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: fill lock held elsewhere, waiting (%uz "
                   "waiters in this worker)", w->waiters.size());
}

void on_lock(void *data, redisReply *reply) noexcept
{
    auto *cc = static_cast<CacheCtx *>(data);
    ngx_http_request_t *r = cc->r;
    ngx_connection_t *c = r->connection;
    cc->lock_op = nullptr;
    try {
        if (reply != nullptr && reply->type == REDIS_REPLY_STATUS) {
            cc->lock_held = true;
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "fly cache: fill lock taken");
            if (cc->lock_updating) {
                lookup_updating(r, cc, false);      // we refresh it
            } else {
                lookup_finish(r, cc, CacheStatus::miss, true);
            }
        } else if (reply != nullptr && reply->type == REDIS_REPLY_NIL) {
            if (cc->lock_updating) {
                lookup_updating(r, cc, true);       // UPDATING
            } else {
                wait_for(r, cc);
            }
        } else {
            // Redis failing: as without the lock (fail open)
            if (reply != nullptr && log_allowed(&log_slot_lock)) {
                ngx_log_error(NGX_LOG_ERR, c->log, 0,
                              "fly_cache: Redis answered SET of a fill lock "
                              "with %s", reply->type == REDIS_REPLY_ERROR
                                             ? reply->str : "something else");
            }
            if (cc->lock_updating) {
                lookup_updating(r, cc, false);
            } else {
                lookup_finish(r, cc, CacheStatus::miss, true);
            }
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "fly_cache: %s", e.what());
        leave_watch(cc);
        cc->lock_timer.disarm();
        lookup_finish(r, cc, CacheStatus::error, false);
    }
    ngx_http_run_posted_requests(c);
}

}  // namespace

bool lock_try(ngx_http_request_t *r, CacheCtx *cc)
{
    cc->lock_tried = true;
    RedisClient *client = regional_client(r);
    if (client == nullptr) {
        return false;
    }
    LocConf *lcf = loc_conf(r);
    const std::string &key = cc->lookup_variant ? cc->variant_key : cc->key;
    cc->lock_key = core::lock_key(key);
    cc->lock_token = core::lock_token(static_cast<uint32_t>(ngx_pid),
                                      static_cast<uint64_t>(ngx_random()),
                                      now_ms());
    std::string ttl = std::to_string(core::lock_ttl_ms(lcf->cache_lock_timeout));
    const char *argv[6] = {"SET", cc->lock_key.data(), cc->lock_token.data(),
                           "NX", "PX", ttl.data()};
    size_t argvlen[6] = {3, cc->lock_key.size(), cc->lock_token.size(), 2, 2,
                         ttl.size()};
    cc->lock_op = client->command(6, argv, argvlen, on_lock, cc);
    if (cc->lock_op == nullptr) {
        forget_scripts(client);
        return false;
    }
    return true;
}

void lock_release(ngx_http_request_t *r, CacheCtx *cc) noexcept
{
    if (!cc->lock_held) {
        return;
    }
    cc->lock_held = false;
    try {
        std::vector<std::string> words;
        words.push_back(cc->lock_key);
        words.push_back(cc->lock_token);
        // nullptr: Redis unavailable; the lock's TTL ends it
        run_script(regional_client(r), unlock_script, 1, std::move(words),
                   nullptr, nullptr);
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: fill lock released");
    } catch (const std::exception &) {
        // no memory: the lock's TTL ends it
    }
}

void lock_cleanup(CacheCtx *cc) noexcept
{
    if (cc->lock_op != nullptr) {
        RedisClient::cancel(cc->lock_op);
        cc->lock_op = nullptr;
    }
    leave_watch(cc);
    cc->lock_timer.disarm();
    lock_release(cc->r, cc);
}

}  // namespace fly
