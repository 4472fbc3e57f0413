# Found by make faults (t/bench/faults, redis-maxmemory): a fill or an
# invalidation that Redis refuses (-OOM at maxmemory with noeviction,
# READONLY, ...) is logged, naming what Redis said, at most once a second
# per worker; the requests are answered by the app as ever, and once Redis
# has room the cache fills again.  Two lines say it, depending on how the
# command went: a plain command nobody waits for is logged by the Redis
# client ("[warn] ... fly redis regional <endpoint>: command refused: ..."),
# a cache script (the fill and invalidation scripts of purge, issue 8) by
# the script runner ("[error] ... fly_cache: Redis answered the fill script
# with ...").
use FlyEdge::Test;

our $HTTP = sprintf(<<'EOF', (scaled(2) * 1000) x 2);
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
EOF

run_tests(pg => 0);

__DATA__

=== TEST 1: fills and invalidations refused with -OOM are logged, rate-limited; the app answers
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
--- test
my %orig = map { my @kv = $t->redis_cli('scl', 'CONFIG', 'GET', $_); ($_ => $kv[1]) } qw(maxmemory maxmemory-policy);
my ($used) = $t->redis_cli('scl', 'INFO', 'memory') =~ /^used_memory:(\d+)/m;
ok($used, "Redis uses $used bytes");
my $ok = eval {
    $t->redis_cli('scl', 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    $t->redis_cli('scl', 'CONFIG', 'SET', 'maxmemory', int($used / 2));
    like(scalar $t->redis_cli('scl', 'SET', 'fly-test-probe', 'x'), qr/^OOM/, 'Redis refuses writes now');
    for my $i (1 .. 4) {
        my $p = "/hdr?body=b$i&Cache-Control=max-age%3D60&oom=$i";
        for my $try (1, 2) {
            my $r = send_request(path => $p, region => 'scl', direct => 1);
            is($r->{status}, 200, "$p ($try): 200");
            is($r->{content}, "b$i", "$p ($try): the app's body");
            is($r->{headers}{'x-cache'}, 'MISS', "$p ($try): a MISS (the fill was refused)");
        }
    }
    my $w = send_request(method => 'POST', path => '/hdr?body=w&oom=1', region => 'scl', direct => 1);
    is($w->{status}, 200, 'a write (its invalidation refused): 200');
    my $refused = qr/command refused: OOM|Redis answered the \w+ script with "OOM/;
    my $log = $t->wait_until(sub { my $l = block_error_log('scl'); $l =~ $refused ? $l : undef }, scaled(5));
    ok($log, 'the refusal is logged');
    my @lines = grep { /command refused|Redis answered the \w+ script with/ } split /\n/, $log // '';
    my $client = qr/\[warn\] .*fly redis regional 127\.0\.0\.1:\d+: command refused: OOM command not allowed/;
    my $script = qr/\[error\] .*fly_cache: Redis answered the (?:fill|invalidate) script with "OOM command not allowed/;
    like($lines[0] // '', qr/$client|$script/,
         'at warn by the client naming the endpoint, or at error by the script runner, with what Redis said');
    my %seen;
    my @twice = grep { my ($ts, $lvl, $pid) = /^(\S+ \S+) \[(\w+)\] (\d+)#/; $seen{"$ts $lvl $pid"}++ } @lines;
    is(scalar @twice, 0, 'at most once a second per worker (' . scalar(@lines) . ' lines)');
    1;
};
my $err = $@;
$t->redis_cli('scl', 'CONFIG', 'SET', 'maxmemory', $orig{maxmemory});
$t->redis_cli('scl', 'CONFIG', 'SET', 'maxmemory-policy', $orig{'maxmemory-policy'});
$t->redis_cli('scl', 'DEL', 'fly-test-probe');
ok($ok, 'ran to the end') or diag($err);
# room again: the cache fills
my $p = '/hdr?body=again&Cache-Control=max-age%3D60&oom=again';
is(send_request(path => $p, region => 'scl', direct => 1)->{headers}{'x-cache'}, 'MISS', 'room again: a MISS');
is(send_request(path => $p, region => 'scl', direct => 1)->{headers}{'x-cache'}, 'HIT', 'then a HIT');
