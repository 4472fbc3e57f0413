// fly-edge nginx shell: the event glue the asynchronous clients share (see
// ngx_fly_event.hpp).
#include "ngx_fly_event.hpp"

#include <sys/stat.h>

#include <cstdarg>
#include <cstdlib>

namespace fly {

bool log_allowed(time_t *slot)
{
    time_t now = ngx_time();
    if (*slot == now) {
        return false;
    }
    *slot = now;
    return true;
}

// ---- Event ---------------------------------------------------------------

Event::Event() noexcept
{
    ngx_memzero(&ev_, sizeof(ngx_event_t));
}

Event::~Event()
{
    disarm();
    unpost();
}

void Event::init(EventHandler h, void *data, ngx_log_t *log,
                 bool cancelable) noexcept
{
    handler_ = h;
    data_ = data;
    ev_.data = this;
    ev_.handler = on_event;
    ev_.log = log;
    ev_.cancelable = cancelable ? 1 : 0;
}

void Event::on_event(ngx_event_t *ev) noexcept
{
    auto *self = static_cast<Event *>(ev->data);
    self->handler_(self->data_);
}

void Event::arm(ngx_msec_t ms) noexcept
{
    // Not ngx_add_timer's "close enough" shortcut: exactly `ms`.
    if (ev_.timer_set) {
        ngx_del_timer(&ev_);
    }
    ngx_add_timer(&ev_, ms);
}

void Event::arm_by(ngx_msec_t when) noexcept
{
    if (ev_.timer_set
        && static_cast<ngx_msec_int_t>(ev_.timer.key - when) <= 0)
    {
        return;
    }
    auto left = static_cast<ngx_msec_int_t>(when - ngx_current_msec);
    arm(left > 0 ? static_cast<ngx_msec_t>(left) : 0);
}

void Event::disarm() noexcept
{
    if (ev_.timer_set) {
        ngx_del_timer(&ev_);
    }
}

void Event::post() noexcept
{
    if (!ev_.posted) {
        ngx_post_event(&ev_, &ngx_posted_events);
    }
}

void Event::unpost() noexcept
{
    if (ev_.posted) {
        ngx_delete_posted_event(&ev_);
    }
}

// ---- Backoff -------------------------------------------------------------

void Backoff::init(EventHandler when_over, void *data, ngx_log_t *log) noexcept
{
    timer_.init(when_over, data, log);
}

ngx_msec_t Backoff::start() noexcept
{
    ngx_msec_t delay = next_;
    next_ = delay * 2 > kMax ? kMax : delay * 2;
    timer_.arm(delay);
    return delay;
}

// ---- Peer ----------------------------------------------------------------

Peer::~Peer()
{
    cancel_lookup();
    std::free(host_.data);
}

bool Peer::init(const char *kind, const char *name, const ngx_str_t &host,
                in_port_t port, ngx_resolver_t *resolver,
                ngx_msec_t resolver_timeout, ngx_addr_t *addrs,
                ngx_uint_t naddrs, ngx_log_t *log) noexcept
{
    kind_ = kind;
    name_ = name;
    log_ = log;
    port_ = port;
    resolver_ = resolver;
    resolver_timeout_ = resolver_timeout;
    addrs_ = addrs;
    naddrs_ = naddrs;

    host_.data = static_cast<u_char *>(std::malloc(host.len + 1));
    if (host_.data == nullptr) {
        return false;
    }
    ngx_memcpy(host_.data, host.data, host.len);
    host_.data[host.len] = '\0';
    host_.len = host.len;

    bool v6 = false;
    in_addr_t a4 = ngx_inet_addr(host_.data, host_.len);
    if (a4 != INADDR_NONE) {
        struct sockaddr_in sin;
        ngx_memzero(&sin, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = a4;
        set_address(reinterpret_cast<struct sockaddr *>(&sin), sizeof(sin),
                    &literal_addr_);
        literal_ = true;
    }
#if (NGX_HAVE_INET6)
    u_char a6[16];
    if (!literal_ && ngx_inet6_addr(host_.data, host_.len, a6) == NGX_OK) {
        struct sockaddr_in6 sin6;
        ngx_memzero(&sin6, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        ngx_memcpy(sin6.sin6_addr.s6_addr, a6, 16);
        set_address(reinterpret_cast<struct sockaddr *>(&sin6), sizeof(sin6),
                    &literal_addr_);
        literal_ = true;
        v6 = true;
    }
#endif
    u_char *e = ngx_snprintf(reinterpret_cast<u_char *>(endpoint_buf_),
                             sizeof(endpoint_buf_) - 1,
                             v6 ? "[%V]:%d" : "%V:%d", &host_, (int) port_);
    endpoint_.data = reinterpret_cast<u_char *>(endpoint_buf_);
    endpoint_.len = e - endpoint_.data;
    return true;
}

void Peer::set_address(const struct sockaddr *sa, socklen_t len,
                       PeerAddress *out) const noexcept
{
    if (len > sizeof(ngx_sockaddr_t)) {
        len = sizeof(ngx_sockaddr_t);
    }
    ngx_memcpy(&out->sockaddr, sa, len);
    out->socklen = len;
    ngx_inet_set_port(&out->sockaddr.sockaddr, port_);
    size_t n = ngx_sock_ntop(&out->sockaddr.sockaddr, len,
                             reinterpret_cast<u_char *>(out->text),
                             NGX_SOCKADDR_STRLEN, 0);
    out->text[n] = '\0';
}

Peer::Lookup Peer::lookup(PeerAddress *out, Found found, void *data) noexcept
{
    if (literal_) {
        *out = literal_addr_;
        return Lookup::ready;
    }
    if (resolver_ == nullptr) {
        if (naddrs_ == 0) {
            error(0, "host not resolved and no \"resolver\" configured");
            return Lookup::failed;
        }
        ngx_addr_t &a = addrs_[rr_ % naddrs_];
        set_address(a.sockaddr, a.socklen, out);
        return Lookup::ready;
    }

    cancel_lookup();
    ngx_resolver_ctx_t *ctx = ngx_resolve_start(resolver_, nullptr);
    if (ctx == nullptr || ctx == NGX_NO_RESOLVER) {
        error(0, ctx ? "no resolver defined" : "cannot start resolving");
        return Lookup::failed;
    }
    ctx->name = host_;
    ctx->handler = on_resolved;
    ctx->data = this;
    ctx->timeout = resolver_timeout_;
    ctx->cancelable = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly %s resolving \"%V\"",
                   kind_, &host_);

    found_ = found;
    found_data_ = data;
    ctx_ = ctx;
    // An answer from the resolver's cache comes from inside
    // ngx_resolve_name(): on_resolved() leaves it in *out then.
    sync_out_ = out;
    sync_answered_ = false;
    ngx_int_t rc = ngx_resolve_name(ctx);
    sync_out_ = nullptr;
    if (rc != NGX_OK) {
        ctx_ = nullptr;              // freed by nginx
        error(0, "cannot resolve");
        return Lookup::failed;
    }
    if (sync_answered_) {
        return sync_ok_ ? Lookup::ready : Lookup::failed;
    }
    return Lookup::pending;
}

void Peer::cancel_lookup() noexcept
{
    if (ctx_ != nullptr) {
        ngx_resolve_name_done(ctx_);
        ctx_ = nullptr;
    }
}

void Peer::on_resolved(ngx_resolver_ctx_t *ctx) noexcept
{
    auto *self = static_cast<Peer *>(ctx->data);
    self->ctx_ = nullptr;

    PeerAddress a;
    bool ok = ctx->state == NGX_OK && ctx->naddrs > 0;
    if (ok) {
        ngx_resolver_addr_t &ra = ctx->addrs[self->rr_ % ctx->naddrs];
        self->set_address(ra.sockaddr, ra.socklen, &a);
    } else {
        self->error(0, "could not resolve \"%V\": %s", &ctx->name,
                    ctx->state ? ngx_resolver_strerror(ctx->state)
                               : "no addresses");
    }
    ngx_resolve_name_done(ctx);

    if (self->sync_out_ != nullptr) {
        self->sync_answered_ = true;
        self->sync_ok_ = ok;
        if (ok) {
            *self->sync_out_ = a;
        }
        return;
    }
    self->found_(self->found_data_, ok ? &a : nullptr);
}

void Peer::say(ngx_uint_t level, ngx_err_t err, time_t *slot, const char *fmt,
               va_list args) noexcept
{
    if (log_ == nullptr || log_->log_level < level || !log_allowed(slot)) {
        return;
    }
    u_char msg[512];
    u_char *e = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    ngx_log_error(level, log_, err, "fly %s %s %V: %*s", kind_, name_,
                  &endpoint_, static_cast<size_t>(e - msg), msg);
}

void Peer::error(ngx_err_t err, const char *fmt, ...) noexcept
{
    failed_ = true;
    va_list args;
    va_start(args, fmt);
    say(NGX_LOG_ERR, err, &err_slot_, fmt, args);
    va_end(args);
}

void Peer::warn(const char *fmt, ...) noexcept
{
    va_list args;
    va_start(args, fmt);
    say(NGX_LOG_WARN, 0, &warn_slot_, fmt, args);
    va_end(args);
}

void Peer::notice(const char *fmt, ...) noexcept
{
    va_list args;
    va_start(args, fmt);
    say(NGX_LOG_NOTICE, 0, &notice_slot_, fmt, args);
    va_end(args);
}

// ---- Link ----------------------------------------------------------------

void Link::init(Driver *driver, Peer *peer, ngx_msec_t connect_timeout,
                ngx_log_t *log) noexcept
{
    driver_ = driver;
    peer_ = peer;
    connect_timeout_ = connect_timeout;
    log_ = log;
    connect_timer_.init(call<&Link::on_connect_timeout>, this, log);
    backoff_.init(call<&Link::on_backoff_over>, this, log);
}

void Link::connect(bool probe) noexcept
{
    probing_ = probe;
    PeerAddress a;
    switch (peer_->lookup(&a, on_found, this)) {
    case Peer::Lookup::ready:
        open(a);
        return;
    case Peer::Lookup::pending:
        state_ = State::resolving;
        return;
    case Peer::Lookup::failed:
        break;
    }
    state_ = State::closing;
    finish();
}

void Link::on_found(void *data, const PeerAddress *a) noexcept
{
    auto *self = static_cast<Link *>(data);
    if (a != nullptr) {
        self->open(*a);
        return;
    }
    self->state_ = State::closing;
    self->finish();
}

void Link::open(const PeerAddress &a) noexcept
{
    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly %s connecting to %s port %d%s", peer_->kind(), a.text,
                   (int) peer_->port(), probing_ ? " (after a failure)" : "");
    state_ = State::connecting;
    if (!driver_->link_open(a)) {
        state_ = State::closing;
        finish();
        return;
    }
    if (state_ == State::connecting) {
        connect_timer_.arm(connect_timeout_);
    }
}

void Link::ready() noexcept
{
    if (state_ != State::connecting) {
        return;
    }
    state_ = State::ready;
    backoff_.reset();
    connect_timer_.disarm();
    if (probing_ || peer_->failed()) {
        peer_->notice("connected");
    }
    probing_ = false;
    peer_->clear_failed();
    // Stable wording: tests wait for this line.
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, peer_->log(), 0,
                   "fly %s connected %s %V", peer_->kind(), peer_->name(),
                   &peer_->endpoint());
    driver_->link_up();
}

void Link::on_connect_timeout() noexcept
{
    fail(0, "connect timed out");
}

void Link::fail(ngx_err_t err, const char *what) noexcept
{
    if (state_ != State::resolving && state_ != State::connecting
        && state_ != State::ready)
    {
        return;
    }
    peer_->error(err, "%s", what);
    drop();
}

void Link::shut_down() noexcept
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly %s closing: worker exiting", peer_->kind());
    shutting_down_ = true;
    backoff_.cancel();
    if (state_ == State::resolving || state_ == State::connecting
        || state_ == State::ready)
    {
        drop();
    } else if (state_ != State::closing) {
        state_ = State::closed;
    }
}

// Drops the connection; finish() runs once the library has let it go.
void Link::drop() noexcept
{
    peer_->cancel_lookup();
    connect_timer_.disarm();
    bool had = state_ != State::resolving;
    state_ = State::closing;
    if (!had || driver_->link_close()) {
        finish();
    }
}

void Link::closed(const char *why) noexcept
{
    if (state_ != State::connecting && state_ != State::ready
        && state_ != State::closing)
    {
        return;         // no connection to lose
    }
    if (state_ != State::closing) {
        // The library lost it by itself.
        if (!exiting()) {
            peer_->error(0, "%s", why);
        }
        connect_timer_.disarm();
        state_ = State::closing;
    }
    finish();
}

// The connection is gone: what waits fails, then the backoff.
void Link::finish() noexcept
{
    driver_->link_down();
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0, "fly %s closed", peer_->kind());
    if (exiting()) {
        state_ = State::closed;
        return;
    }
    state_ = State::backoff;
    peer_->next_address();        // the next attempt tries the next address
    ngx_msec_t delay = backoff_.start();
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly %s backoff %M",
                   peer_->kind(), delay);
}

void Link::on_backoff_over() noexcept
{
    if (exiting()) {
        state_ = State::closed;
        return;
    }
    state_ = State::idle;
    connect(true);     // in the background; commands fail until it is ready
}

// ---- LibSocket -----------------------------------------------------------

void LibSocket::init(void *data, EventHandler on_read, EventHandler on_write,
                     EventHandler on_close, ngx_log_t *log) noexcept
{
    data_ = data;
    on_read_ = on_read;
    on_write_ = on_write;
    on_close_ = on_close;
    log_ = log;
}

bool LibSocket::same_socket(ngx_socket_t fd) const noexcept
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
}

bool LibSocket::track(ngx_socket_t fd) noexcept
{
    if (c_ != nullptr) {
        if (c_->fd == fd && same_socket(fd)) {
            return true;
        }
        release();     // the library closed that one (it may reuse the number)
    }
    struct stat st;
    if (fstat(fd, &st) == -1) {
        return false;
    }
    ngx_connection_t *c = ngx_get_connection(fd, log_);
    if (c == nullptr) {
        return false;
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    c->data = this;
    c->read->handler = on_read_event;
    c->write->handler = on_write_event;
    c->read->log = log_;
    c->write->log = log_;
    c->idle = 1;            // ngx_close_idle_connections closes it on exit
    c->log_error = NGX_ERROR_INFO;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c_ = c;

    et_ = (ngx_event_flags & NGX_USE_CLEAR_EVENT) != 0;
    ngx_int_t rc;
    if (ngx_event_actions.add_conn != nullptr) {
        rc = ngx_add_conn(c);
    } else {
        // Level-triggered, the write event too: the first one tells that
        // a non-blocking connect completed.
        ngx_uint_t flag = et_ ? static_cast<ngx_uint_t>(NGX_CLEAR_EVENT)
                              : static_cast<ngx_uint_t>(NGX_LEVEL_EVENT);
        rc = ngx_add_event(c->read, NGX_READ_EVENT, flag);
        if (rc == NGX_OK) {
            rc = ngx_add_event(c->write, NGX_WRITE_EVENT, flag);
        }
    }
    if (rc != NGX_OK) {
        release();
        return false;
    }
    return true;
}

void LibSocket::release() noexcept
{
    ngx_connection_t *c = c_;
    if (c == nullptr) {
        return;
    }
    c_ = nullptr;
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }
    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    // The fd is closed by its library right after this (or was already):
    // the kernel drops it from epoll then, as with ngx_close_connection,
    // and nothing may touch the number, which may be reused.
    if (ngx_event_actions.del_conn != nullptr) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);
    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }
        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}

bool LibSocket::want_write(bool on) noexcept
{
    if (c_ == nullptr || et_) {
        return true;
    }
    ngx_event_t *wev = c_->write;
    if (on && !wev->active) {
        return ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) == NGX_OK;
    }
    if (!on && wev->active) {
        ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
    return true;
}

bool LibSocket::drained_by_short_read() const noexcept
{
    if (!(ngx_event_flags & NGX_USE_GREEDY_EVENT)) {
        return true;    // level-triggered, or kqueue: we get told again
    }
#if (NGX_HAVE_EPOLLRDHUP)
    // epoll reports EOF separately (as ngx_unix_recv relies on).
    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup
        && c_ != nullptr && !c_->read->pending_eof)
    {
        return true;
    }
#endif
    return false;
}

bool LibSocket::has_input() const noexcept
{
    if (c_ == nullptr) {
        return false;
    }
    char byte;
    for (;;) {
        ssize_t n = recv(c_->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n >= 0) {
            return true;            // a byte, or the end of the stream
        }
        ngx_err_t err = ngx_socket_errno;
        if (err == NGX_EINTR) {
            continue;
        }
        return err != NGX_EAGAIN;   // an error is for the library to see
    }
}

void LibSocket::on_read_event(ngx_event_t *ev) noexcept
{
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *self = static_cast<LibSocket *>(c->data);
    (c->close ? self->on_close_ : self->on_read_)(self->data_);
}

void LibSocket::on_write_event(ngx_event_t *ev) noexcept
{
    auto *c = static_cast<ngx_connection_t *>(ev->data);
    auto *self = static_cast<LibSocket *>(c->data);
    (c->close ? self->on_close_ : self->on_write_)(self->data_);
}

}  // namespace fly
