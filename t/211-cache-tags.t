# Cache tags: the app names what a response depends on (Cache-Tag, or
# Surrogate-Key with fly_cache_tags_header); `PURGE /?tag=NAME` invalidates
# every entry carrying it, in every region, in O(1): the entries are not
# touched, a tag epoch and the tag's record are (core/cache_tags.hpp), and
# a HIT of an entry older than the last tag purge checks its tags' records.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

our $HOST = 'tags.test';
$FlyEdge::CacheTest::HOST = $HOST;

our $HTTP = <<'EOF';
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT_SCL}/0";
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_purge PURGE;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
location /sk/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_tags_header Surrogate-Key;
    fly_cache_tags_pass on;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
EOF

sub key_of { "fly:http$HOST$_[0]" }

# FNV-1a 32, and a version 1 entry as the module wrote them before tags
# (src/core/cache_entry.hpp), made here independently of the module.
sub fnv1a { my $h = 2166136261; for my $c (unpack 'C*', $_[0]) { $h = (($h ^ $c) * 16777619) % 4294967296 } $h }
sub v1_entry {
    my ($body, @headers) = @_;
    my $s = 'FLYC' . pack('CCnQ>NNNNn', 1, 0, 200, time, 300, 0, 0, 0, scalar(@headers) / 2);
    while (my ($n, $v) = splice @headers, 0, 2) { $s .= pack('n', length $n) . $n . pack('N', length $v) . $v }
    $s .= pack('N', fnv1a($s));
    return $s . pack('N', length $body) . $body;
}

run_tests();

__DATA__

=== TEST 1: tagged entries go with their tag in every region (region-local fills too), others stay; the header never reaches the client
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $a  = '/hdr?t=1a&Cache-Control=max-age%3D300&Cache-Tag=post-1,list';
my $b  = '/hdr?t=1b&Cache-Control=max-age%3D300&Cache-Tag=post-2%2C%20list';
my $c  = '/hdr?t=1c&Cache-Control=max-age%3D300&Cache-Tag=post-3';
my $l  = '/hdr?t=1l&Cache-Control=max-age%3D300&Cache-Tag=list';
my $m = main::get($a, 'scl');
ok(!defined $m->{headers}{'cache-tag'}, 'Cache-Tag is not sent on the MISS');
ok(main::xc($a, 'scl') eq 'HIT', 'a cached');
ok(!defined main::get($a, 'scl')->{headers}{'cache-tag'}, 'nor on the HIT');
ok(main::cached_in($_, 'scl'), "$_ cached") for $b, $c;
ok(main::cached_in($l, 'atl'), 'a region-local fill in atl');
my $before = main::app_count('scl');
my $pr = main::purge('/?tag=list', 'ord');     # from a replica region
is($pr->{status}, 200, 'PURGE /?tag=list answered');
my $j = json_decode($pr->{content});
is_deeply([@$j{qw(purged mode tags)}], ['tags', 'hard', ['list']], 'saying what');
cmp_ok($j->{epoch}, '>', 0, 'with the new epoch');
is(main::app_count('scl'), $before, 'the app never saw it');
ok($t->wait_until(sub { main::xc($a, 'scl') eq 'MISS' }, scaled(5)), 'a (post-1, list) misses');
is(main::xc($b, 'scl'), 'MISS', 'b (post-2, list) misses');
ok($t->wait_until(sub { main::xc($l, 'atl') eq 'MISS' }, scaled(5)), "atl's local fill tagged list misses");
is(main::xc($c, 'scl'), 'HIT', 'c (post-3) is still a HIT');
--- error_log eval
[qr/fly cache: entry of epoch \d+, checking 2 tags/, 'fly cache: tag records say valid', 'fly cache: tag records say purged']
--- no_error_log
[warn]


=== TEST 2: O(1): a purge of a tag that 40 entries carry writes two keys and touches none of the entries
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @p = map { "/hdr?t=2-$_&Cache-Control=max-age%3D300&Cache-Tag=many" } 1 .. 40;
ok(main::cached_in($_, 'scl'), 'cached') || diag($_) for @p;
my %before = map { $_ => $t->redis('scl')->get(main::key_of($_)) } @p;
my $keys0 = $t->redis('scl')->dbsize;
is(main::purge('/?tag=many', 'scl')->{status}, 200, 'PURGE /?tag=many');
is($t->redis('scl')->dbsize - $keys0, 1, 'one key more in Redis (the tag record; the epoch existed)');
is(scalar(grep { ($t->redis('scl')->get(main::key_of($_)) // '') eq $before{$_} } @p), 40,
   'all 40 entries are untouched');
is(scalar(grep { main::xc($_, 'scl') eq 'MISS' } @p), 40, 'and all 40 miss');


=== TEST 3: Surrogate-Key (space-separated) with fly_cache_tags_pass on reaches the client, on the MISS and the HIT
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/sk/hdr?t=3&Cache-Control=max-age%3D300&Surrogate-Key=node-7%20user-3';
my $m = main::get($p, 'scl');
is($m->{headers}{'surrogate-key'}, 'node-7 user-3', 'MISS: Surrogate-Key passed');
my $h = main::get($p, 'scl');
is($h->{headers}{'x-cache'}, 'HIT', 'HIT');
is($h->{headers}{'surrogate-key'}, 'node-7 user-3', 'HIT: Surrogate-Key passed');
is(main::purge('/?tag=user-3', 'scl')->{status}, 200, 'PURGE /?tag=user-3');
is(main::xc($p, 'scl'), 'MISS', 'gone');


=== TEST 4: a soft tag purge: stale, not absent (served only under use_stale rules: EXPIRED), then refilled
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&Cache-Control=max-age%3D300&Cache-Tag=soft-me';
ok(main::cached_in($p, 'scl'), 'cached');
my $j = json_decode(main::purge('/?tag=soft-me&soft=1', 'scl')->{content});
is($j->{mode}, 'soft', 'a soft purge');
is(main::xc($p, 'scl'), 'EXPIRED', 'EXPIRED');
is(main::xc($p, 'scl'), 'HIT', 'refilled');
# a soft purge after a hard one does not bring back what the hard one purged
my $q = '/hdr?t=4b&Cache-Control=max-age%3D300&Cache-Tag=both';
ok(main::cached_in($q, 'scl'), 'cached');
main::purge('/?tag=both', 'scl');
main::purge('/?tag=both&soft=1', 'scl');
is(main::xc($q, 'scl'), 'MISS', 'hard, then soft: still absent (MISS, not EXPIRED)');


=== TEST 5: a fill racing a tag purge is refused
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $ms = int(scaled(3) * 1000);
my $p = "/slow?ms=$ms&t=5&Cache-Control=max-age%3D300&Cache-Tag=racer";
my $count = main::app_count('scl');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('scl'), Proto => 'tcp', Timeout => 5)
    or die "connect: $!";
print $s "GET $p HTTP/1.1\r\nHost: $main::HOST\r\nConnection: close\r\n\r\n";
ok($t->wait_until(sub { main::app_count('scl') > $count }, scaled(5)), 'the app is rendering it (the lookup is done)');
is(main::purge('/?tag=unrelated', 'scl')->{status}, 200, 'meanwhile a purge of another tag moves the epoch');
ok(!IO::Select->new($s)->can_read(0), 'before the app has answered');
local $/;
my $answer = <$s>;
like($answer, qr{^HTTP/1\.1 200.*X-Cache: MISS}s, 'the slow response is a MISS');
is(main::xc($p, 'scl', timeout => scaled(13)), 'MISS', 'and was not stored');
--- error_log eval
[qr/fly cache: fill of "fly:httptags\.test\/slow\?ms=\d+&t=5[^"]*" refused: tag epoch changed since the lookup/]


=== TEST 6: a malformed tags header: not stored, still hidden
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=6&Cache-Control=max-age%3D300&Cache-Tag=caf%C3%A9';
my $m = main::get($p, 'scl');
is($m->{headers}{'x-cache'}, 'MISS', 'MISS');
ok(!defined $m->{headers}{'cache-tag'}, 'Cache-Tag not sent');
is(main::xc($p, 'scl'), 'MISS', 'not stored (a purge of its tags could not reach it)');
--- error_log
not storing a response with an invalid or too long "Cache-Tag" header


=== TEST 7: an entry in the format before tags (version 1) is still served, and tag purges leave it alone
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $v1 = main::v1_entry("old format\n", 'Content-Type', 'text/plain', 'X-Old', 'yes');
$t->redis('scl')->set(main::key_of('/v1'), $v1, 'EX', 300);
ok($t->wait_until(sub { defined $t->redis('atl')->get(main::key_of('/v1')) }, scaled(5)), 'replicated');
my $h = main::get('/v1', 'scl');
is($h->{headers}{'x-cache'}, 'HIT', 'a HIT');
is($h->{content}, "old format\n", 'its body');
is($h->{headers}{'x-old'}, 'yes', 'its headers');
main::purge('/?tag=whatever', 'scl');
is(main::xc('/v1', 'scl'), 'HIT', 'after a tag purge (its epoch 0 is older): the check finds nothing, a HIT');
is(json_decode(main::purge('/v1?soft=1', 'scl')->{content})->{mode}, 'soft', 'a soft purge of its URL');
is(main::xc('/v1', 'scl'), 'EXPIRED', 'reaches it: EXPIRED');
--- no_error_log
[warn]


=== TEST 8: bad tag purges get 400
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $q ('/?tag=', '/?tag=%ZZ', '/?tag=caf%C3%A9') {
    my $pr = main::purge($q, 'scl');
    is($pr->{status}, 400, "$q: 400");
    like(json_decode($pr->{content})->{error}, qr/tag/, "$q: saying why");
}


=== TEST 9: the tags header name is checked
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_tags_header "Cache Tag";
}
--- must_die
--- error_log eval
[qr/"fly_cache_tags_header": invalid header name "Cache Tag" in \S+server\.conf:2/]
