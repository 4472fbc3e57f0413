// fly-edge nginx shell: a response held by one of the module's header
// filters until what it waits for has come (a header filter cannot
// wait).  Used for a write's answer: until the primary's WAL position
// (ngx_fly_write_lsn.cpp), and until the primary Redis has its
// invalidation (ngx_fly_cache_fill.cpp), so that the client that wrote
// cannot read the old page from the cache with its next request.
//
// The holding header filter calls start() and returns NGX_OK without
// calling the next header filter; its body filter hands what it is given
// to keep(), which keeps the chain links without consuming their buffers
// (so the upstream treats them as busy, as for a slow client, and reads
// on only into free ones) and returns NGX_AGAIN; r->buffered keeps the
// request from ending meanwhile.  release() runs the next header filter,
// then the next body filter with what was kept, and posts the request's
// write event so that its owner (the upstream, or ngx_http_writer) moves
// on.  Holds nest (the consistency filters run above the cache's): the
// request stays buffered until the last one is released.
#pragma once

#include "ngx_fly.hpp"

namespace fly {

class ResponseHold {
public:
    ResponseHold() = default;
    ResponseHold(const ResponseHold &) = delete;
    ResponseHold &operator=(const ResponseHold &) = delete;

    // From now on the response is held; `next_header` and `next_body` are
    // the filters after the holding one.
    void start(ngx_http_request_t *r, RequestCtx *ctx,
               ngx_http_output_header_filter_pt next_header,
               ngx_http_output_body_filter_pt next_body) noexcept;
    bool holding() const noexcept { return r_ != nullptr && !released_; }
    ngx_http_request_t *request() const noexcept { return r_; }
    // The body filter while holding(): NGX_AGAIN, or NGX_ERROR.
    ngx_int_t keep(ngx_chain_t *in) noexcept;
    // The header and what was kept go on; with `rc` NGX_ERROR nothing
    // goes and the request fails (as for a client gone).
    void release(ngx_int_t rc = NGX_OK) noexcept;

private:
    ngx_http_request_t *r_ = nullptr;
    RequestCtx *ctx_ = nullptr;
    ngx_http_output_header_filter_pt next_header_ = nullptr;
    ngx_http_output_body_filter_pt next_body_ = nullptr;
    ngx_chain_t *held_ = nullptr;        // links to the buffers given so far
    ngx_chain_t **last_ = &held_;
    bool released_ = false;
};

}  // namespace fly
