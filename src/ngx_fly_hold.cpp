// fly-edge nginx shell: a held response (see ngx_fly_hold.hpp).
#include "ngx_fly_hold.hpp"

namespace fly {

namespace {

// r->buffered bit while any hold of the module is on (r->buffered has 4
// bits: SSI, sub and copy use 0x01, 0x02, 0x04).
constexpr unsigned kHoldBuffered = 0x08;

}  // namespace

void ResponseHold::start(ngx_http_request_t *r, RequestCtx *ctx,
                         ngx_http_output_header_filter_pt next_header,
                         ngx_http_output_body_filter_pt next_body) noexcept
{
    r_ = r;
    ctx_ = ctx;
    next_header_ = next_header;
    next_body_ = next_body;
    ctx->holds++;
    r->buffered |= kHoldBuffered;
}

ngx_int_t ResponseHold::keep(ngx_chain_t *in) noexcept
{
    for (ngx_chain_t *cl = in; cl; cl = cl->next) {
        ngx_chain_t *ln = ngx_alloc_chain_link(r_->pool);
        if (ln == nullptr) {
            return NGX_ERROR;
        }
        ln->buf = cl->buf;
        ln->next = nullptr;
        *last_ = ln;
        last_ = &ln->next;
    }
    return NGX_AGAIN;
}

void ResponseHold::release(ngx_int_t rc) noexcept
{
    if (!holding()) {
        return;
    }
    released_ = true;
    ngx_http_request_t *r = r_;
    ngx_connection_t *c = r->connection;
    if (--ctx_->holds == 0) {
        r->buffered &= ~kHoldBuffered;
    }

    if (rc == NGX_OK) {
        rc = next_header_(r);
    }
    ngx_chain_t *out = held_;
    held_ = nullptr;
    last_ = &held_;
    if (rc != NGX_ERROR && r->header_only) {
        // HEAD, 204, 304: the header was the whole answer.
        for (ngx_chain_t *cl = out; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            if (cl->buf->in_file) {
                cl->buf->file_pos = cl->buf->file_last;
            }
        }
        out = nullptr;
    }
    if (rc != NGX_ERROR && out != nullptr) {
        rc = next_body_(r, out);
    }
    if (rc == NGX_ERROR) {
        c->error = 1;            // its owner finalizes it, as for a client gone
    }
    // The upstream (or ngx_http_writer) goes on: the buffers held are
    // sent, or in the write filter's hands.
    ngx_post_event(c->write, &ngx_posted_events);
}

}  // namespace fly
