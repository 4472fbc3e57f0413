// fly-edge nginx shell: the cache's Redis scripts, and running them: EVAL
// until one has succeeded on that Redis (which then has it cached), then
// EVALSHA, and EVAL again when Redis answers NOSCRIPT (after a restart or
// a SCRIPT FLUSH).  The EVAL after a NOSCRIPT comes one round trip later,
// behind commands sent meanwhile (a GET that should have seen the fill or
// the invalidation), so whenever a command to a Redis fails (how a restart
// shows) the scripts are taken as gone there: the next call is an EVAL.
// The Lua text of every script lives here; the data model they work on is
// described in core/cache_tags.hpp and core/tombstone.hpp.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_redis.hpp"

extern "C" {
#include <ngx_sha1.h>
#include <hiredis/hiredis.h>
}

#include <exception>
#include <new>
#include <string>
#include <vector>

namespace fly {

// The fill (regional Redis).  The entry is already in Redis: send_fill()
// (ngx_fly_cache_fill.cpp) SETs it under a staging key
// (core::fill_staging_key()) just before, on the same connection, so the
// value, up to fly_cache_max_size, never passes through Lua (which would
// copy it into a Lua string and back).  The script moves it under its key
// (RENAME, then the entry's TTL), and with a new Vary marker stores the
// marker too, unless
//   1: the tag epoch changed since the lookup read it (a tag or soft
//      purge happened while the app was rendering), or
//   2: the key's fence record holds a tombstone the fill may not pass:
//      core::fence_allows(), in the same terms (16-hex-digit fields,
//      compared byte by byte: no locale), or
//   3: the staged entry is gone (expired, evicted, flushed);
// on 1 and 2 it deletes the staged entry.
// KEYS: epoch, fence record, key to store, staged entry [, Vary marker's
//       base key]
// ARGV: epoch read by the lookup ("" for none), fence threshold, replica
//       LSN ("" for none), TTL seconds [, marker]
// Returns 0 (stored), 1, 2 or 3.
Script fill_script = {"fill", R"lua(
local function le(a, b)
  for i = 1, 16 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return true
end
local v = redis.call('MGET', KEYS[1], KEYS[2])
local refused = 0
if (v[1] or '') ~= ARGV[1] then
  refused = 1
elseif v[2] then
  local r = v[2]
  local ok = #r == 38 and string.sub(r, 1, 5) == 'FLYT1'
  if ok then
    if ARGV[3] ~= '' and string.sub(r, 6, 6) == '1' then
      ok = le(string.sub(r, 23, 38), ARGV[3])
    else
      ok = le(string.sub(r, 7, 22), ARGV[2])
    end
  end
  if not ok then refused = 2 end
end
if refused ~= 0 then
  redis.call('DEL', KEYS[4])
  return refused
end
local m = redis.pcall('RENAME', KEYS[4], KEYS[3])
if type(m) == 'table' and m.err then return 3 end
redis.call('EXPIRE', KEYS[3], ARGV[4])
if KEYS[5] then redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[4]) end
return 0
)lua", {}, {}};

// The fill lock's release (ngx_fly_cache_lock.cpp): deletes the lock only
// while it still holds this holder's token (it may have expired and been
// taken by another request since).
// KEYS: the lock; ARGV: the token.  Returns 1 (deleted) or 0.
Script unlock_script = {"unlock", R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua", {}, {}};

// An invalidation (primary Redis; the URL part also on the regional one):
// with tags, INCR the epoch and set each tag record's hard or soft epoch
// to it (the other one kept: a soft purge after a hard one must not
// revive what the hard one purged); then write the tombstone under every
// URL key and its fence record.
// KEYS: epoch, NTAGS tag records, then pairs (base key, fence record)
// ARGV: NTAGS, "H" or "S", tombstone, its TTL in ms
// Returns the new epoch, or 0 without tags.
Script invalidate_script = {"invalidate", R"lua(
local nt = tonumber(ARGV[1])
local e = 0
if nt > 0 then
  e = redis.call('INCR', KEYS[1])
  for i = 2, nt + 1 do
    local h, s = '0', '0'
    local r = redis.call('GET', KEYS[i])
    if r then
      local a, b = string.match(r, '^(%d+):(%d+)$')
      if a then h, s = a, b end
    end
    if ARGV[2] == 'H' then h = e else s = e end
    redis.call('SET', KEYS[i], h .. ':' .. s)
  end
end
for i = nt + 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[4])
end
return e
)lua", {}, {}};

namespace {

time_t log_slot_script;

void compute_sha(Script &s)
{
    ngx_sha1_t ctx;
    u_char digest[20];
    ngx_sha1_init(&ctx);
    ngx_sha1_update(&ctx, s.text.data(), s.text.size());
    ngx_sha1_final(digest, &ctx);
    ngx_hex_dump(reinterpret_cast<u_char *>(s.sha), digest, sizeof(digest));
    s.sha[40] = '\0';
}

}  // namespace

// Whether an EVAL of `s` succeeded on `client` (the worker has at most
// two clients: the region's Redis and the primary's).
bool loaded(const Script &s, const RedisClient *client)
{
    return s.loaded_on[0] == client || s.loaded_on[1] == client;
}

void set_loaded(Script &s, RedisClient *client, bool yes)
{
    for (RedisClient *&slot : s.loaded_on) {
        if (slot == client) {
            slot = nullptr;
        }
    }
    if (yes) {
        (s.loaded_on[0] == nullptr ? s.loaded_on[0] : s.loaded_on[1]) = client;
    }
}

struct ScriptCall {
    RedisClient *client;
    Script *script;
    std::vector<std::string> words;     // keys, then arguments
    size_t nkeys;
    ScriptDone done;
    void *data;
    bool eval = false;                  // the last one sent was an EVAL
    bool retried = false;

    bool send(bool eval) noexcept;
    static void on_reply(void *data, redisReply *reply) noexcept;
};

bool ScriptCall::send(bool with_text) noexcept
{
    eval = with_text;
    try {
        std::string nk = std::to_string(nkeys);
        std::vector<const char *> argv;
        std::vector<size_t> argvlen;
        argv.reserve(words.size() + 3);
        argvlen.reserve(words.size() + 3);
        std::string_view head[3] = {
            eval ? "EVAL" : "EVALSHA",
            eval ? script->text : std::string_view(script->sha, 40),
            nk,
        };
        for (std::string_view h : head) {
            argv.push_back(h.data());
            argvlen.push_back(h.size());
        }
        for (const std::string &w : words) {
            argv.push_back(w.data());
            argvlen.push_back(w.size());
        }
        return client->command(static_cast<int>(argv.size()), argv.data(),
                               argvlen.data(), on_reply, this)
               != nullptr;
    } catch (const std::exception &) {
        return false;
    }
}

void ScriptCall::on_reply(void *data, redisReply *reply) noexcept
{
    auto *call = static_cast<ScriptCall *>(data);
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR
        && std::string_view(reply->str, reply->len).substr(0, 8) == "NOSCRIPT"
        && !call->retried)
    {
        set_loaded(*call->script, call->client, false);
        call->retried = true;
        if (call->send(true)) {
            return;
        }
        reply = nullptr;
    }
    if (reply != nullptr && call->eval
        && !(reply->type == REDIS_REPLY_ERROR
             && std::string_view(reply->str, reply->len).substr(0, 3) == "ERR"))
    {
        set_loaded(*call->script, call->client, true);
    }
    if (reply == nullptr) {
        forget_scripts(call->client);
    }
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR
        && log_allowed(&log_slot_script))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fly_cache: Redis answered the %s script with \"%*s\"",
                      call->script->name, (int) reply->len, reply->str);
    }
    if (call->done != nullptr) {
        call->done(call->data, reply);
    }
    delete call;
}

void forget_scripts(RedisClient *client) noexcept
{
    set_loaded(fill_script, client, false);
    set_loaded(invalidate_script, client, false);
    set_loaded(unlock_script, client, false);
}

void scripts_init()
{
    compute_sha(fill_script);
    compute_sha(invalidate_script);
    compute_sha(unlock_script);
}

ScriptCall *run_script(RedisClient *client, Script &script,
                       size_t nkeys, std::vector<std::string> &&words,
                       ScriptDone done, void *data) noexcept
{
    if (client == nullptr) {
        return nullptr;
    }
    auto *call = new (std::nothrow) ScriptCall{client, &script, {}, nkeys,
                                               done, data};
    if (call == nullptr) {
        return nullptr;
    }
    call->words = std::move(words);
    if (!call->send(!loaded(script, client))) {
        forget_scripts(client);
        delete call;
        return nullptr;
    }
    return call;
}

void detach_script(ScriptCall *call) noexcept
{
    call->done = nullptr;
    call->data = nullptr;
}

}  // namespace fly
