// fly-edge nginx shell: sending a stored response (a HIT, a REVALIDATED
// or STALE answer): the stored headers with the request's preconditions
// evaluated in RFC 9110 order (304 / 412), the body from the reply's own
// bytes.  The lookup (ngx_fly_cache_lookup.cpp) and the expired-entry
// paths (ngx_fly_cache_stale.cpp) call it.
#include "ngx_fly_cache.hpp"
#include "core/cache_entry.hpp"
#include "core/conditional.hpp"

#include <optional>
#include <string_view>

namespace fly {

namespace {

time_t log_slot_precondition;   // rate limit of its log line

// What the entry's preconditions compare with: its first ETag,
// Last-Modified and Date (the core parses them if it needs them).
core::StoredValidators stored_validators(const core::EntryView &e)
{
    core::StoredValidators v;
    v.status = e.meta.status;
    v.stored = e.meta.stored;
    for (size_t i = 0; i < e.nheaders; i++) {
        std::string_view name = e.headers[i].name;
        std::string_view value = e.headers[i].value;
        if (!v.etag && core::iequals(name, "ETag")) {
            v.etag = value;
        } else if (!v.last_modified && core::iequals(name, "Last-Modified")) {
            v.last_modified = value;
        } else if (!v.date && core::iequals(name, "Date")) {
            v.date = value;
        }
    }
    return v;
}

std::optional<std::string_view> value_of(const ngx_table_elt_t *h)
{
    if (h == nullptr) {
        return std::nullopt;
    }
    return view(h->value);
}

// RFC 9110 13.2.2 against the entry, for a request with a precondition
// or a Range (nginx has parsed those headers already).
core::CondDecision evaluate_preconditions(ngx_http_request_t *r,
                                          const core::EntryView &e)
{
    ngx_http_headers_in_t &in = r->headers_in;
    core::Preconditions p;
    p.if_match = value_of(in.if_match);
    p.if_none_match = value_of(in.if_none_match);
    p.if_modified_since = value_of(in.if_modified_since);
    p.if_unmodified_since = value_of(in.if_unmodified_since);
    p.if_range = value_of(in.if_range);
    p.range = in.range != nullptr;
    p.get = r->method == NGX_HTTP_GET;
    p.head = r->method == NGX_HTTP_HEAD;
    core::CondDecision d = core::evaluate_conditions(p, stored_validators(e));
    if (!d.ignored.empty() && log_allowed(&log_slot_precondition)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache: ignoring malformed %*s",
                      (int) d.ignored.size(), d.ignored.data());
    }
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: preconditions: outcome %d, range %d",
                   static_cast<int>(d.outcome), d.use_range ? 1 : 0);
    return d;
}

// The stored fields that sending a response treats apart (one switch on
// the length, not a comparison with each name: this runs for every
// stored field of every HIT).
enum class Field : uint8_t {
    other, content_length, accept_ranges, content_type, content_encoding,
    content_language, etag, last_modified, date,
};

Field field_of(std::string_view n)
{
    switch (n.size()) {
    case 4:
        return core::iequals(n, "ETag") ? Field::etag
               : core::iequals(n, "Date") ? Field::date : Field::other;
    case 12:
        return core::iequals(n, "Content-Type") ? Field::content_type
                                                 : Field::other;
    case 13:
        return core::iequals(n, "Accept-Ranges") ? Field::accept_ranges
               : core::iequals(n, "Last-Modified") ? Field::last_modified
                                                   : Field::other;
    case 14:
        return core::iequals(n, "Content-Length") ? Field::content_length
                                                   : Field::other;
    case 16:
        return core::iequals(n, "Content-Encoding") ? Field::content_encoding
               : core::iequals(n, "Content-Language") ? Field::content_language
                                                      : Field::other;
    default:
        return Field::other;
    }
}

// Representation metadata a 304 leaves out (RFC 9110 15.4.5): the client
// has the representation they describe.
bool representation_metadata(Field f)
{
    return f == Field::content_type || f == Field::content_encoding
           || f == Field::content_language;
}

}  // namespace

ngx_int_t stored_response_headers(ngx_http_request_t *r,
                                  const core::EntryView &e, CacheStatus s,
                                  bool with_age, bool &not_modified)
{
    LocConf *lcf = loc_conf(r);
    ngx_http_headers_in_t &in = r->headers_in;
    not_modified = false;
    if (in.if_match || in.if_none_match || in.if_modified_since
        || in.if_unmodified_since || in.range)
    {
        core::CondDecision d = evaluate_preconditions(r, e);
        if (d.outcome == core::CondOutcome::precondition_failed) {
            if (!add_status_header(r, lcf, s)) {
                return NGX_ERROR;
            }
            return NGX_HTTP_PRECONDITION_FAILED;
        }
        not_modified = d.outcome == core::CondOutcome::not_modified;
        // Decided here for the range filter, which would otherwise test
        // If-Range again by its own rules (a weak ETag would match).
        if (!d.use_range) {
            in.range = nullptr;      // the whole body
        }
        in.if_range = nullptr;
    }

    // The preconditions are answered above, in RFC 9110's order, which
    // nginx's not_modified filter does not follow: it must leave them be.
    // The range filter serves a Range from the stored body.
    r->disable_not_modified = 1;
    r->allow_ranges = 1;
    r->headers_out.status = not_modified ? NGX_HTTP_NOT_MODIFIED
                                         : e.meta.status;
    r->headers_out.content_length_n =
        not_modified ? -1 : static_cast<off_t>(e.body.size());
    r->headers_out.last_modified_time = -1;

    for (size_t i = 0; i < e.nheaders; i++) {
        std::string_view name = e.headers[i].name;
        std::string_view value = e.headers[i].value;
        Field f = field_of(name);
        if (f == Field::content_length
            || f == Field::accept_ranges              // the range filter's
            || (not_modified && representation_metadata(f)))
        {
            continue;
        }
        if (f == Field::content_type) {
            // As the upstream module sets it on the MISS: the filters
            // that match types (gzip, ssi, sub_filter, charset) compare
            // the type without the charset, which goes to its own field.
            core::ContentType ct = core::split_content_type(value);
            r->headers_out.content_type.len = value.size();
            r->headers_out.content_type.data = (u_char *) value.data();
            r->headers_out.content_type_len = ct.type_len;
            r->headers_out.content_type_lowcase = nullptr;
            r->headers_out.charset.len = ct.charset.size();
            r->headers_out.charset.data = (u_char *) ct.charset.data();
            continue;
        }
        ngx_table_elt_t *h = push_header(r, name, value);
        if (h == nullptr) {
            return NGX_ERROR;
        }
        // nginx's own filters (gzip, range, header) look at these; the
        // stored Date keeps the header filter from writing the time now.
        switch (f) {
        case Field::content_encoding:
            r->headers_out.content_encoding = h;
            break;
        case Field::etag:
            if (r->headers_out.etag == nullptr) {
                r->headers_out.etag = h;
            }
            break;
        case Field::last_modified:
            r->headers_out.last_modified = h;
            r->headers_out.last_modified_time =
                ngx_parse_http_time(h->value.data, h->value.len);
            break;
        case Field::date:
            r->headers_out.date = h;
            break;
        default:
            break;
        }
        // Location stays a plain header, as on the MISS: setting
        // headers_out.location would make nginx rewrite a relative one.
    }

    if (with_age) {
        // RFC 9111 5.1: a response from a cache carries Age.
        u_char *age = static_cast<u_char *>(ngx_pnalloc(r->pool, NGX_TIME_T_LEN));
        if (age == nullptr) {
            return NGX_ERROR;
        }
        size_t agelen = ngx_sprintf(age, "%L",
                                    static_cast<int64_t>(core::entry_age(
                                        e.meta, ngx_time()))) - age;
        if (push_header(r, "Age", {reinterpret_cast<char *>(age), agelen})
            == nullptr)
        {
            return NGX_ERROR;
        }
    }
    return add_status_header(r, lcf, s) ? NGX_OK : NGX_ERROR;
}

ngx_int_t send_hit(ngx_http_request_t *r, RequestCtx *ctx,
                   const core::EntryView &e, CacheStatus s)
{
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->cache_status = s;

    bool not_modified;
    ngx_int_t rc = stored_response_headers(r, e, s, true, not_modified);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    if (e.body.empty()) {
        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }
    ngx_buf_t *b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
    if (b == nullptr) {
        return NGX_ERROR;
    }
    b->pos = (u_char *) e.body.data();
    b->last = b->pos + e.body.size();
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;
    ngx_chain_t out = {b, nullptr};
    return ngx_http_output_filter(r, &out);
}

}  // namespace fly
