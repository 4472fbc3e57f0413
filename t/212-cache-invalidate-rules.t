# Invalidation on write beyond the write's own URI: the same-origin URIs of
# its Location and Content-Location (RFC 9111 4.4), and what the
# location's fly_cache_purge_on_write rules name (regex of the full
# request URI, arguments included, with captures; URIs and tags), as
# MediaWiki's edits need: POST /index.php?title=T&action=submit changes
# /wiki/T.
use FlyEdge::Test;
use FlyEdge::CacheTest;

our $HOST = 'inv.test';
$FlyEdge::CacheTest::HOST = $HOST;

our $HTTP = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT_SCL}/0";
fly_cache_fence 0;                 # the fence is t/214's: refills at once here
EOF

our $CACHE = <<'EOF';
fly_cache_status_header X-Cache;
location / {
    fly_cache on;
    fly_cache_valid any 60s;       # the app's 404s too: a cached "no such page"
    fly_cache_purge PURGE;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
# the edit form's target: the edit itself is answered here, the views of
# the page are the app's (GET)
location = /index.php {
    fly_cache on;
    fly_cache_valid any 60s;
    fly_cache_purge_on_write ~^/index\.php\?title=([^&]+)&action=submit
        /wiki/$1 /index.php?title=$1&action=history tag:page-$1;
    fly_cache_purge_on_write ~*^/INDEX\.PHP\?title=([^&]+)&action=delete$ /wiki/$1;
    if ($request_method = POST) {
        return 200 "saved\n";
    }
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub uri_escape { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s }

sub post {
    my ($path, %o) = @_;
    return send_request(method => 'POST', path => $path, region => 'scl', direct => 1, body => 'x',
                        headers => { Host => $HOST });
}

run_tests();

__DATA__

=== TEST 1: a rule's captures name the page, its history and its tag; other pages stay
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @gone = ('/wiki/Foo', '/index.php?title=Foo&action=history', '/hdr?t=1&Cache-Control=max-age%3D300&Cache-Tag=page-Foo');
my @stay = ('/wiki/Bar', '/hdr?t=1b&Cache-Control=max-age%3D300&Cache-Tag=page-Bar');
ok(main::cached_in($_, 'scl'), "$_ cached") for @gone, @stay;
is(main::get('/wiki/Foo', 'scl')->{status}, 404, "/wiki/Foo is a cached 404 (the page does not exist yet)");
my $w = main::post('/index.php?title=Foo&action=submit');
is($w->{status}, 200, 'the edit is saved');
is($w->{content}, "saved\n", 'by the edit location');
is(main::xc($_, 'scl'), 'MISS', "$_ is gone") for @gone;
is(main::xc($_, 'scl'), 'HIT', "$_ stays") for @stay;
--- no_error_log
[warn]


=== TEST 2: a case-insensitive rule (~*), anchored: matches only what it says
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
ok(main::cached_in('/wiki/Baz', 'scl'), 'cached');
ok(main::cached_in('/wiki/Qux', 'scl'), 'cached');
main::post('/index.php?title=Qux&action=preview');
is(main::xc('/wiki/Qux', 'scl'), 'HIT', 'action=preview matches no rule: /wiki/Qux stays');
main::post('/index.php?title=Baz&action=delete');
is(main::xc('/wiki/Baz', 'scl'), 'MISS', 'action=delete (rule ~*^/INDEX\.PHP...): /wiki/Baz is gone');


=== TEST 3: Location and Content-Location of a successful write, on this host only
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @gone = ('/wiki/Loc', '/wiki/CL');
ok(main::cached_in($_, 'scl'), "$_ cached") for @gone, '/wiki/Other';
ok(main::cached_in('/wiki/Other', 'scl', host => 'other.test'), '/wiki/Other cached for other.test');
my $w = main::post('/hdr?status=201&Location=' . main::uri_escape('/wiki/Loc')
                   . '&Content-Location=' . main::uri_escape('https://INV.test/wiki/CL#top'));
is($w->{status}, 201, 'the write succeeds');
is(main::xc($_, 'scl'), 'MISS', "$_ is gone") for @gone;
main::post('/hdr?status=201&Location=' . main::uri_escape('http://other.test/wiki/Other'));
is(main::xc('/wiki/Other', 'scl', host => 'other.test'), 'HIT', "another host's URI stays");
is(main::xc('/wiki/Other', 'scl'), 'HIT', 'and so does ours of that path');


=== TEST 4: a failed write invalidates none of them
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
ok(main::cached_in('/wiki/Kept', 'scl'), 'cached');
my $w = main::post('/hdr?status=409&Location=' . main::uri_escape('/wiki/Kept'));
is($w->{status}, 409, 'the write fails');
is(main::xc('/wiki/Kept', 'scl'), 'HIT', 'its Location stays');


=== TEST 5: a rule's regex that does not compile fails nginx -t naming the line
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_purge_on_write ~^/(unclosed /x;
}
--- must_die
--- error_log eval
[qr/pcre2?_compile\(\) failed: .* in "\^\/\(unclosed" in \S+server\.conf:3/]


=== TEST 6: the first argument must be ~REGEX or ~*REGEX
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge_on_write ^/edit /x;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge_on_write": the first argument must be ~REGEX or ~\*REGEX, not "\^\/edit" in \S+server\.conf:2/]


=== TEST 7: a target is a URI starting with / or tag:NAME
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge_on_write ~^/edit wiki/$1;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge_on_write": invalid target "wiki\/\$1", expected a URI starting with "\/" or "tag:NAME" in \S+server\.conf:2/]


=== TEST 8: a constant tag target must be a valid tag
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge_on_write ~^/edit "tag:a b";
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge_on_write": invalid tag in "tag:a b" in \S+server\.conf:2/]
