# Tombstones and the fill fence (core/tombstone.hpp).  An invalidation
# writes a tombstone under the key on the primary Redis; replication puts
# it over every region's copy, region-local fills included.  For
# fly_cache_fence after it no fill of the key is stored (a replica
# region's app may still answer from a database replica that has not
# replayed the write), and a response whose lookup came before the
# invalidation is never stored, however long it took.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use IO::Select;
use IO::Socket::INET;

our $HOST = 'fence.test';
$FlyEdge::CacheTest::HOST = $HOST;
our $FENCE = scaled(4);          # seconds; every check inside it takes far less

our $HTTP = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT_SCL}/0";
EOF
our $HTTP_FENCE = $HTTP . "fly_cache_fence ${FENCE}s;\n";
our $HTTP_NO_FENCE = $HTTP . "fly_cache_fence 0;\n";

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub write_to {
    my ($path, $r) = @_;
    return send_request(method => 'POST', path => $path, region => $r // 'scl', direct => 1, body => 'x',
                        headers => { Host => $HOST });
}
sub key_of { "fly:http$HOST$_[0]" }

# A GET that stays in flight: returns the socket, once the app has it.
sub start_slow_get {
    my ($path, $r) = @_;
    my $t = topology();
    my $count = app_count($r);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port($r), Proto => 'tcp',
                                  Timeout => 5) or die "connect: $!";
    print $s "GET $path HTTP/1.1\r\nHost: $HOST\r\nConnection: close\r\n\r\n";
    $t->wait_until(sub { app_count($r) > $count }, scaled(5)) or die "the app never got $path\n";
    return $s;
}
sub finish_slow_get { my ($s) = @_; local $/; my $a = <$s>; close $s; return $a // '' }

run_tests();

__DATA__

=== TEST 1: after a write the key is a tombstone, and no fill is stored for fly_cache_fence; then fills again
--- http_config eval: $main::HTTP_FENCE
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=1&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached');
is(main::write_to($p, 'scl')->{status}, 200, 'a write');
my $tomb = $t->redis('scl')->get(main::key_of($p)) // '';
like($tomb, qr/^FLYT1[01][0-9a-f]{32}$/, 'the key holds a tombstone');
my $pttl = $t->redis('scl')->pttl(main::key_of($p));
cmp_ok($pttl, '>', $main::FENCE * 1000, 'living longer than the fence');
cmp_ok($pttl, '<=', $main::FENCE * 1000 + 60000, 'by at most the 60 s grace');
is($t->redis('scl')->get(main::key_of($p) . "\x1fi"), $tomb, 'so does its fence record');
my $c0 = main::app_count('scl');
my @inside = map { main::xc($p, 'scl') } 1 .. 3;
# the tombstone lives fence + 60 s: more than 60 s left means still inside
cmp_ok($t->redis('scl')->pttl(main::key_of($p)), '>', 60000, 'still inside the fence (else this proves nothing)');
is_deeply(\@inside, [qw(MISS MISS MISS)], 'inside the fence: MISS, MISS, MISS');
is(main::app_count('scl') - $c0, 3, 'each one answered by the app: nothing was stored');
is_deeply([$t->redis('scl')->keys(main::key_of($p) . "\x1fs*")], [], 'and nothing is left staged for them');
ok($t->wait_until(sub { main::xc($p, 'scl') eq 'HIT' }, $main::FENCE * 4), 'after the fence a fill is stored again');
my $ttl = $t->redis('scl')->ttl(main::key_of($p));
ok($ttl > 250 && $ttl <= 300, "the fill's entry lives max-age (300 s): $ttl");
is_deeply([$t->redis('scl')->keys(main::key_of($p) . "\x1fs*")], [], 'no staged entry is left');
--- error_log
fly cache: tombstone, fill fenced
--- no_error_log
[warn]


=== TEST 2: a response rendered across an invalidation is not stored, even without a fence
--- http_config eval: $main::HTTP_NO_FENCE
--- config eval: $main::CACHE
--- test
my $ms = int(scaled(3) * 1000);
my $p = "/slow?ms=$ms&t=2&Cache-Control=max-age%3D300";
my $s = main::start_slow_get($p, 'scl');
# (a POST to the slow URI itself would sleep too: a write whose Location it is)
my $loc = $p =~ s/([^A-Za-z0-9\-._~\/])/sprintf('%%%02X', ord $1)/ger;
is(main::write_to("/hdr?t=2w&status=201&Location=$loc", 'scl')->{status}, 201,
   'a write that invalidates it, while the app renders it');
ok(!IO::Select->new($s)->can_read(0), 'before the app has answered');
like(main::finish_slow_get($s), qr{^HTTP/1\.1 200.*X-Cache: MISS}s, 'the slow response: a MISS');
my $c0 = main::app_count('scl');
is(main::xc($p, 'scl', timeout => scaled(13)), 'MISS', 'it was not stored: the next GET misses');
is(main::app_count('scl') - $c0, 1, 'and is answered by the app');
is_deeply([$t->redis('scl')->keys(main::key_of($p) . "\x1fs*")], [], 'the refused fill left nothing staged');
--- error_log eval
[qr/fly cache: fill of "fly:httpfence\.test\/slow\?ms=\d+&t=2[^"]*" refused: fenced by an invalidation/]


=== TEST 3: the tombstone replaces region-local fills in replica regions
--- http_config eval: $main::HTTP_FENCE
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=3&Cache-Control=max-age%3D300';
ok(main::cached_in($p, $_), "a region-local fill in $_") for qw(ord atl);
ok(!$t->redis('scl')->exists(main::key_of($p)), 'which the primary never had');
is(main::write_to($p, 'scl')->{status}, 200, 'a write in the primary region');
for my $r (qw(ord atl)) {
    ok($t->wait_until(sub { ($t->redis($r)->get(main::key_of($p)) // '') =~ /^FLYT1/ }, scaled(5)),
       "${r}'s Redis: the tombstone over the local fill");
    is(main::xc($p, $r), 'MISS', "$r misses");
}


=== TEST 4: in a replica region right after a write: answered by the region's app, not stored during the fence
--- http_config eval: $main::HTTP_FENCE
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&Cache-Control=max-age%3D300';
ok(main::cached_in($p, 'scl'), 'cached (everywhere)');
is(main::write_to($p, 'scl')->{status}, 200, 'a write');
ok($t->wait_until(sub { ($t->redis('atl')->get(main::key_of($p)) // '') =~ /^FLYT1/ }, scaled(2)), 'atl has the tombstone');
my $c0 = main::app_count('atl');
my @inside = map { main::xc($p, 'atl') } 1 .. 2;
cmp_ok($t->redis('atl')->pttl(main::key_of($p)), '>', 60000, 'still inside the fence');
is_deeply(\@inside, [qw(MISS MISS)], 'atl: MISS, MISS');
is(main::app_count('atl') - $c0, 2, "both answered by atl's app (it could be reading a lagging replica)");
ok($t->wait_until(sub { main::xc($p, 'atl') eq 'HIT' }, $main::FENCE * 4), 'after the fence atl fills again');


=== TEST 5: every Vary variant goes, and none is refilled inside the fence
--- http_config eval: $main::HTTP_FENCE
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=5&Cache-Control=max-age%3D300&Vary=Accept-Language&echo=Accept-Language';
ok(main::cached_in($p, 'scl', headers => { 'Accept-Language' => $_ }), "$_ variant") for qw(en fr);
main::write_to($p, 'scl');
for my $l (qw(en fr)) {
    my @x = map { main::xc($p, 'scl', headers => { 'Accept-Language' => $l }) } 1 .. 2;
    is_deeply(\@x, [qw(MISS MISS)], "$l: MISS, MISS");
}


=== TEST 6: a broken tombstone is a MISS (logged once), and the fill replaces it
--- http_config eval: $main::HTTP_NO_FENCE
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=6&Cache-Control=max-age%3D300';
$t->redis('scl')->set(main::key_of($p), 'FLYT1garbage', 'EX', 60);
is(main::xc($p, 'scl'), 'MISS', 'a MISS');
is(main::xc($p, 'scl'), 'HIT', 'then a HIT: replaced');
--- error_log eval
[qr/fly_cache: ignoring an unreadable tombstone \(12 bytes\) for key "fly:httpfence\.test\/hdr\?t=6/]


=== TEST 7: fly_cache_fence takes a time
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_fence soon;
}
--- must_die
--- error_log eval
[qr/"fly_cache_fence" directive invalid value in \S+server\.conf:2/]
