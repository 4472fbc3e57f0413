# Purge as real apps send it: `PURGE /uri` or, as MediaWiki and Varnish-
# style purgers do, `PURGE http://host/uri HTTP/1.1`, to the same-location
# form (fly_cache_purge METHOD [from ...]) or to a purge endpoint
# (fly_cache_purge;).  A purge never reaches the app, is written to the
# primary Redis (replication carries it everywhere, over region-local
# fills too), removes every Vary variant, and is answered with JSON.
use FlyEdge::Test;
use FlyEdge::CacheTest;

our $HOST = 'purge.test';
$FlyEdge::CacheTest::HOST = $HOST;

our $HTTP = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT_SCL}/0";
fly_replay on;
EOF

# The endpoint form on a listener of its own (a unix socket: no port to find).
our $ENDPOINT = $HTTP . <<'EOF';
server {
    listen unix:%%PREFIX%%/purge.sock;
    location / {
        fly_cache_purge;
    }
}
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_purge PURGE;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
location /soft/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_purge PURGE soft;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
location /far/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_purge PURGE from 10.0.0.0/8 192.0.2.1 2001:db8::/32;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
# the endpoint form with a key of its own: PURGE /_purge/X purges /X
location ~ ^/_purge(?<target>/.*)$ {
    fly_cache_purge;
    fly_cache_key $scheme$host$target$is_args$args;
}
location /_denied/ {
    deny all;
    fly_cache_purge;
}
EOF


sub key_of { "fly:http$HOST$_[0]" }

run_tests();

__DATA__

=== TEST 1: PURGE in the caching location removes the entry in every region, region-local fills too, and never reaches the app
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=1&Cache-Control=max-age%3D300';
# fills made in ord and atl stay there (region-local): the primary never held them
ok(main::cached_in($p, $_), "cached in $_") for qw(ord atl);
ok(!$t->redis('scl')->exists(main::key_of($p)), 'the primary Redis never held it');
my $before = main::app_count('scl');
my $pr = main::purge($p, 'scl');
is($pr->{status}, 200, 'PURGE answered 200');
like($pr->{headers}{'content-type'}, qr{^application/json}, 'as JSON');
my $j = json_decode($pr->{content});
is_deeply($j, { purged => 'url', mode => 'hard', key => "httppurge.test$p" }, 'saying what was invalidated');
ok(!defined $pr->{headers}{'x-origin-count'}, 'not answered by the app');
is(main::app_count('scl'), $before, 'the app never saw it');
for my $r (qw(ord atl)) {
    ok($t->wait_until(sub { main::xc($p, $r) eq 'MISS' }, scaled(5)), "$r misses once the purge has replicated");
}
like($t->redis('scl')->get(main::key_of($p)), qr/^FLYT1/, 'a tombstone on the primary');
--- no_error_log
[warn]
[error]


=== TEST 2: MediaWiki's form: an absolute URI in the request line, whatever the Host header says
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=2&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached');
my $port = $t->nginx_port('scl');
my $pr = main::raw_request('scl', "PURGE http://purge.test$p HTTP/1.1\nHost: 127.0.0.1:$port\nConnection: close\n\n");
is($pr->{status}, 200, 'PURGE http://purge.test/... answered 200');
is(json_decode($pr->{content})->{key}, "httppurge.test$p", 'the key of the URI in the request line');
is(main::xc($p, 'scl'), 'MISS', 'the GET of that URI misses');


=== TEST 3: a purge received in a replica region is written to the primary Redis
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=3&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached in scl (and replicated)');
is(main::xc($p, $_), 'HIT', "a HIT in $_ from the replicated entry") for qw(ord atl);
# through the emulator, as Fly's proxy would bring it to atl: PURGE is not a
# write fly_replay replays
my $pr = send_request(method => 'PURGE', path => $p, region => 'atl', headers => { Host => $main::HOST });
is($pr->{status}, 200, 'PURGE answered 200');
is($pr->{headers}{'fly-emulator-region'}, 'atl', 'by atl');
ok($t->wait_until(sub { ($t->redis('scl')->get(main::key_of($p)) // '') =~ /^FLYT1/ }, scaled(5)),
   "the tombstone is in the primary's Redis");
for my $r (qw(atl ord scl)) {
    ok($t->wait_until(sub { main::xc($p, $r) eq 'MISS' }, scaled(5)), "$r misses");
}


=== TEST 4: every Vary variant goes
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&Cache-Control=max-age%3D300&Vary=Accept-Language&echo=Accept-Language';
for my $l (qw(en fr de)) {
    ok(main::cached_in($p, 'scl', headers => { 'Accept-Language' => $l }), "$l variant cached");
}
is(main::purge($p, 'scl')->{status}, 200, 'PURGE of the URI');
for my $l (qw(en fr de)) {
    is(main::xc($p, 'scl', headers => { 'Accept-Language' => $l }), 'MISS', "$l variant misses");
}


=== TEST 5: from other addresses the same-location form answers 403 and the entry stays
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/far/hdr?t=5&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached');
my $before = main::app_count('scl');
my $pr = main::purge($p, 'scl');
is($pr->{status}, 403, '127.0.0.1 is not in "from": 403');
is(main::app_count('scl'), $before, 'the app never saw it');
is(main::xc($p, 'scl'), 'HIT', 'still cached');
--- error_log
fly_cache_purge: PURGE from 127.0.0.1 refused


=== TEST 6: purging what is not cached is fine, and so is purging twice
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=6&Cache-Control=max-age%3D300';
for my $n (1, 2) {
    my $pr = main::purge($p, 'scl');
    is($pr->{status}, 200, "PURGE $n answered 200");
    is(json_decode($pr->{content})->{mode}, 'hard', "PURGE $n: JSON");
}
is(main::xc($p, 'scl'), 'MISS', 'a GET misses');


=== TEST 7: soft=1 and the soft parameter mark the entries stale instead (served only under use_stale rules: EXPIRED)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=7&Cache-Control=max-age%3D300&Vary=Accept-Language';
ok(main::cached_in($p, 'scl', headers => { 'Accept-Language' => $_ }), "$_ variant cached") for qw(en fr);
my $pr = main::purge("$p&soft=1", 'scl');
is($pr->{status}, 200, 'PURGE ...&soft=1 answered 200');
my $j = json_decode($pr->{content});
is($j->{mode}, 'soft', 'a soft purge');
is($j->{key}, "httppurge.test$p", 'of the URI without its soft argument');
cmp_ok($j->{epoch}, '>', 0, 'which moved the tag epoch');
ok(defined $t->redis('scl')->get(main::key_of($p)), 'the entry itself is still in Redis');
for my $l (qw(en fr)) {
    my $g = main::get($p, 'scl', headers => { 'Accept-Language' => $l });
    is($g->{headers}{'x-cache'}, 'EXPIRED', "$l variant: EXPIRED (stale), from the app");
}
is(main::xc($p, 'scl', headers => { 'Accept-Language' => 'en' }), 'HIT', 'refilled: a HIT again');
# the location's own soft parameter
my $q = '/soft/hdr?t=7b&Cache-Control=max-age%3D300';
ok(main::cached_in($q, 'scl'), 'cached under /soft/');
is(json_decode(main::purge($q, 'scl')->{content})->{mode}, 'soft', '"fly_cache_purge PURGE soft": soft');
is(main::xc($q, 'scl'), 'EXPIRED', 'EXPIRED');
my $bad = main::purge("$p&soft=yes", 'scl');
is($bad->{status}, 400, 'soft=yes: 400');
is(json_decode($bad->{content})->{error}, 'soft must be 1 or 0', 'saying why');


=== TEST 8: the primary Redis unreachable: 502 to the purger, logged
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=8&Cache-Control=max-age%3D300';
$t->stop_redis('scl');
my $pr = main::purge($p, 'ord');
is($pr->{status}, 502, 'PURGE answered 502');
like(json_decode($pr->{content})->{error}, qr/primary Redis/, 'saying why');
my $g = main::get($p, 'ord');
is($g->{status}, 200, 'reads are still answered');
--- error_log_ord eval
[qr/fly_cache(_purge)?: the primary Redis (is unavailable|did not answer)/]


=== TEST 9: the endpoint form on a listener of its own: absolute URI or path + Host; GET gets 405
--- http_config eval: $main::ENDPOINT
--- config eval: $main::CACHE
--- test
my $sock = $t->nginx_prefix('scl') . '/purge.sock';
my $p = '/hdr?t=9&Cache-Control=max-age%3D300';
my $q = '/hdr?t=9b&Cache-Control=max-age%3D300';
ok(main::cached_in($_, 'scl'), "$_ cached") for $p, $q;
my $before = main::app_count('scl');
my $a = main::raw_request($sock, "PURGE http://purge.test$p HTTP/1.1\nHost: whatever\nConnection: close\n\n");
is($a->{status}, 200, 'PURGE http://purge.test/... 200');
is(json_decode($a->{content})->{key}, "httppurge.test$p", 'its key');
my $b = main::raw_request($sock, "PURGE $q HTTP/1.1\nHost: purge.test\nConnection: close\n\n");
is($b->{status}, 200, 'PURGE /... with Host 200');
is(json_decode($b->{content})->{key}, "httppurge.test$q", 'its key');
is(main::app_count('scl'), $before, 'the app never saw them');
is(main::xc($_, 'scl'), 'MISS', "$_ misses") for $p, $q;
my $c = main::raw_request($sock, "GET $q HTTP/1.1\nHost: purge.test\nConnection: close\n\n");
is($c->{status}, 405, 'GET to the endpoint: 405');
is($c->{headers}{allow}, 'PURGE', 'Allow: PURGE');


=== TEST 10: the endpoint's own fly_cache_key, and allow/deny in front of it
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=10&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached');
my $pr = main::purge("/_purge$p", 'scl');
is($pr->{status}, 200, 'PURGE /_purge/... answered');
is(json_decode($pr->{content})->{key}, "httppurge.test$p", 'the key computed with the endpoint location\'s fly_cache_key');
is(main::xc($p, 'scl'), 'MISS', 'the entry is gone');
is(main::purge("/_denied$p", 'scl')->{status}, 403, 'deny all: 403');


=== TEST 11: the endpoint form outside a location fails nginx -t naming the line
--- http_config eval: $main::HTTP
--- config
fly_cache_purge;
--- must_die
--- error_log eval
[qr/"fly_cache_purge" without a METHOD \(a purge endpoint\) is only allowed in a location in \S+server\.conf:1/]


=== TEST 12: bad addresses, a bad method, "from" misused, duplicates
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_purge PURGE from 300.1.2.3;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge": invalid address "300\.1\.2\.3" in \S+server\.conf:3/]


=== TEST 13: from needs addresses
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge PURGE from;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge": "from" needs "all" or addresses in \S+server\.conf:2/]


=== TEST 14: a method must be a token
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge "PUR GE";
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge": invalid parameter "PUR GE" in \S+server\.conf:2/]


=== TEST 14b: GET and HEAD are reads, not purge methods
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge GET from all;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge": invalid parameter "GET" in \S+server\.conf:2/]


=== TEST 15: "all" alone
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge PURGE from all 10.0.0.1;
}
--- must_die
--- error_log eval
[qr/"all" cannot be combined with addresses in \S+server\.conf:2/]


=== TEST 16: from with the endpoint form
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge from 10.0.0.1;
}
--- must_die
--- error_log eval
[qr/"from" needs a METHOD; restrict a purge endpoint with allow and deny in \S+server\.conf:2/]


=== TEST 17: duplicate
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_purge PURGE;
    fly_cache_purge BAN;
}
--- must_die
--- error_log eval
[qr/"fly_cache_purge" directive is duplicate in \S+server\.conf:3/]


=== TEST 18: the same-location form is inherited, and off turns it off
--- http_config eval: $main::HTTP . "fly_cache_purge PURGE from all;\n"
--- config
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
location /off/ {
    fly_cache_purge off;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
--- test
my $p = '/hdr?t=18&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached');
is(main::purge($p, 'scl')->{status}, 200, 'inherited from http: purged');
is(main::xc($p, 'scl'), 'MISS', 'gone');
my $pr = main::purge('/off/hdr?t=18', 'scl');
is($pr->{status}, 200, 'under "off" the PURGE goes to the app');
like($pr->{headers}{'x-origin-count'} // '', qr/^\d+$/, 'answered by the app');
