# The near cache (issue 11): the regional cache's entries kept in nginx
# shared memory (fly_cache_near_zone) and served from there with no Redis
# command at all, while Redis tracks them for this nginx.
#
# - A Redis HIT read under tracking enters the zone; the next HIT comes
#   from the zone ($fly_cache_tier "near", $fly_cache_status "HIT"), with
#   the same status, headers and bytes, Age still growing, and Redis runs
#   no command for it.  A HEAD too.
# - Both workers serve what either stored (one zone).
# - Freshness is the entry's: once it is stale the zone does not serve it.
# - Vary variants are in the zone each under its own key.
# - An entry over max_entry stays Redis-only; a zone too small for every
#   entry evicts the least recently used, and every request is still
#   answered right.
# - fly_cache_near off in a location; nginx -t errors name file:line.
#
# Everything runs in atl (a replica region, its Redis a writable replica).
# Timing: only events (tiers, statuses, Redis command counts, log lines).
use FlyEdge::Test;
use FlyEdge::Near;
use Digest::SHA qw(sha256_hex);

# Redis's timeouts only guard against a hang here: generous and scaled.
our $REDIS = sprintf(<<'EOF', (scaled(2) * 1000) x 2);
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
EOF

sub http_config {
    my ($zone) = @_;
    return $REDIS . ($zone // "fly_cache_near_zone 8m;\n");
}

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    add_header X-Tier "$fly_cache_tier" always;
    add_header X-Status-Var "[$fly_cache_status]" always;
    add_header X-Worker $pid always;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
location /off/ {
    fly_cache on;
    fly_cache_near off;
    fly_cache_status_header X-Cache;
    add_header X-Tier "$fly_cache_tier" always;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
EOF

sub cc { "Cache-Control=max-age%3D$_[0]" }

run_tests(pg => 0);

__DATA__

=== TEST 1: MISS, then a Redis HIT that enters the zone, then HITs from the zone: same answer, no Redis command, Age grows
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $p = '/bin?size=5000&t=1&' . main::cc(300);
my $m = near_get($p);
is(cache_of($m), 'MISS', 'first: MISS');
is(tier($m), '', '$fly_cache_tier empty on a MISS');
ok($t->wait_until(sub { defined $t->redis('atl')->get("fly:http$FlyEdge::Near::HOST$p") }, scaled(5)), 'stored in Redis');
my ($first, $near) = until_near($p);
is(tier($first), 'redis', 'the first HIT comes from Redis');
is(cache_of($first), 'HIT', '... a HIT');
for my $h ($first, $near) {
    my $what = tier($h);
    is($h->{status}, 200, "$what: status 200");
    ok($h->{content} eq $m->{content}, "$what: the stored bytes");
    is(sha256_hex($h->{content}), $m->{headers}{'x-body-sha256'}, "$what: the app's body");
    is($h->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$what: the app was not reached");
    for my $n (qw(content-type cache-control x-body-sha256 content-length)) {
        is($h->{headers}{$n}, $m->{headers}{$n}, "$what: $n preserved");
    }
    like($h->{headers}{age} // '', qr/^\d+$/, "$what: Age");
    is($h->{headers}{'x-status-var'}, '[HIT]', "$what: \$fly_cache_status HIT");
}

# no Redis command for HITs from the zone (the subscriber's PINGs aside)
my $before = redis_commands($t, 'atl');
my $app = app_count('atl');
my %tiers;
for (1 .. 20) {
    my $h = near_get($p);
    $tiers{tier($h)}++;
}
my $after = redis_commands($t, 'atl');
is($tiers{near}, 20, '20 more HITs, all from the zone') or diag(join " ", map { "$_=$tiers{$_}" } sort keys %tiers);
is($after - $before, 0, 'Redis ran no command for them');
is(app_count('atl'), $app, 'the app was not asked');

# Age keeps growing from the stored time
ok($t->wait_until(sub { (near_get($p)->{headers}{age} // 0) >= 1 }, scaled(5)), 'Age grows on HITs from the zone');

my $head = near_get($p, method => 'HEAD');
is(tier($head), 'near', 'a HEAD from the zone');
is($head->{headers}{'content-length'}, 5000, '... with the GET Content-Length');
is($head->{content}, '', '... and no body');
--- no_error_log_atl
[crit]


=== TEST 2: both workers serve from the one zone what one of them stored
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $p = '/bin?size=3000&t=2&' . main::cc(300);
near_get($p);
until_near($p);
my %near_by;
my $before = redis_commands($t, 'atl');
ok($t->wait_until(sub {
    for my $r (FlyEdge::Test::parallel_get([($p) x 8], region => 'atl', host => $FlyEdge::Near::HOST)) {
        $near_by{$r->{headers}{'x-worker'}}++ if ($r->{headers}{'x-tier'} // '') eq 'near' && $r->{status} == 200;
    }
    return keys(%near_by) >= 2;
}, scaled(10)), 'HITs from the zone came from both workers') or diag(join " ", map { "$_=$near_by{$_}" } sort keys %near_by);
my @w = $t->nginx_worker_pids('atl');
is(scalar(@w), 2, 'atl runs two workers');
is(redis_commands($t, 'atl') - $before, 0, 'no Redis command for any of them');


=== TEST 3: the zone keeps the entry's freshness: once stale it is not served from there
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
# max-age 3 s (more on a slow machine)
my $life = 2 + int(scaled(1) + 0.999);
my $p = '/bin?size=200&t=3&' . main::cc($life);
near_get($p);
my ($first, $near) = until_near($p);
my @seen;
my $stale = $t->wait_until(sub {
    my $r = near_get($p);
    push @seen, tier($r) . '/' . cache_of($r) . ' Age ' . ($r->{headers}{age} // '-');
    return 0 if cache_of($r) eq 'HIT' && ($r->{headers}{age} // 0) < $life;
    return $r;
}, scaled(10) + $life);
ok($stale, 'the answers change once the entry is stale') or diag("@seen");
ok(!grep({ m{^near/HIT Age (\d+)} && $1 >= $life } @seen), "no HIT from the zone with Age >= max-age ($life)")
    or diag("@seen");
isnt(tier($stale // {}), 'near', 'the stale entry is not served from the zone') or diag("@seen");


=== TEST 4: Vary variants: each in the zone under its own key, each with its own body
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&' . main::cc(300) . '&Vary=Accept-Language&echo=Accept-Language';
my %body;
for my $l (qw(en fr)) {
    my $m = near_get($p, headers => { 'Accept-Language' => $l });
    like($m->{content}, qr/Accept-Language: $l/, "$l: the app's variant");
    $body{$l} = $m->{content};
}
for my $l (qw(en fr)) {
    my ($first, $near) = until_near($p, headers => { 'Accept-Language' => $l });
    is($near->{content}, $body{$l}, "$l: the zone serves the $l variant");
}
my $before = redis_commands($t, 'atl');
for my $l (qw(fr en fr en)) {
    my $h = near_get($p, headers => { 'Accept-Language' => $l });
    is(tier($h) . ' ' . $h->{content}, "near $body{$l}", "$l again from the zone");
}
is(redis_commands($t, 'atl') - $before, 0, 'no Redis command for variants in the zone');
my $de = near_get($p, headers => { 'Accept-Language' => 'de' });
is(cache_of($de), 'MISS', 'a third variant is a MISS');


=== TEST 5: an entry over max_entry stays Redis-only; one under it enters the zone
--- http_config eval: main::http_config("fly_cache_near_zone 1m max_entry=8k;\n")
--- config eval: $main::CACHE
--- test
my $big = '/bin?size=12000&t=5&' . main::cc(300);
my $small = '/bin?size=4000&t=5&' . main::cc(300);
until_near($small);
near_get($big);
ok($t->wait_until(sub { cache_of(near_get($big)) eq 'HIT' }, scaled(5)), 'the big one HITs');
my %tiers;
my $before = redis_commands($t, 'atl');
for (1 .. 6) {
    my $h = near_get($big);
    is($h->{status}, 200, 'big: 200');
    is(length $h->{content}, 12000, 'big: its bytes');
    $tiers{tier($h)}++;
}
is($tiers{redis}, 6, 'the big one is always a Redis HIT') or diag(join " ", map { "$_=$tiers{$_}" } sort keys %tiers);
cmp_ok(redis_commands($t, 'atl') - $before, '>=', 6, 'each of them asked Redis');
--- error_log_atl
qr/fly near: not stored "fly:http[^"]*size=12000[^"]*" \(\d+ bytes\): over max_entry/


=== TEST 6: a zone too small for every entry evicts the least recently used; every request is answered right
--- http_config eval: main::http_config("fly_cache_near_zone 256k;\n")
--- config eval: $main::CACHE
--- test
# 40 entries of 10 KiB (each takes three 4 KiB pages of the slab): three
# times what the zone holds
my @p = map { "/bin?size=10000&t=6&k=$_&" . main::cc(300) } 1 .. 40;
my $bad = 0;
for my $p (@p) {
    my $m = near_get($p);
    $bad++ unless $m->{status} == 200 && length($m->{content}) == 10000;
}
for my $p (@p) {
    for (1 .. 2) {
        my $h = near_get($p);
        $bad++ unless $h->{status} == 200 && length($h->{content}) == 10000
                      && sha256_hex($h->{content}) eq ($h->{headers}{'x-body-sha256'} // '');
    }
}
is($bad, 0, 'all 120 answers are 200 with the right body');
my ($first, $near) = until_near($p[-1]);
is(tier($near), 'near', 'the most recent entry is in the zone');
my $old = near_get($p[0]);
is(cache_of($old) . ' ' . tier($old), 'HIT redis', 'the oldest one was evicted: a Redis HIT');
--- error_log_atl
qr/fly near: stored "fly:http[^"]*k=40&/
--- no_error_log_atl
[crit]
[alert]
no room


=== TEST 7: fly_cache_near off in a location: the zone is not used there
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $p = '/off/bin?size=100&t=7&' . main::cc(300);
near_get($p);
my %tiers;
for (1 .. 8) {
    my $h = near_get($p);
    $tiers{tier($h) . '/' . cache_of($h)}++;
}
is($tiers{'redis/HIT'}, 8, 'always a Redis HIT') or diag(join " ", map { "$_=$tiers{$_}" } sort keys %tiers);
--- no_error_log_atl
fly near: stored "fly:httpnear.test/off/


=== TEST 8: nginx -t: fly_cache_near_zone too small
--- http_config
fly_cache_near_zone 16k;
--- must_die
--- error_log
qr/"fly_cache_near_zone": zone of 16384 bytes is too small.*http\.conf:1/


=== TEST 9: nginx -t: max_entry over a quarter of the zone
--- http_config
fly_cache_near_zone 1m max_entry=300k;
--- must_die
--- error_log
qr/"fly_cache_near_zone": max_entry=300k is more than a quarter of the zone.*http\.conf:1/


=== TEST 10: nginx -t: max_entry=0
--- http_config
fly_cache_near_zone 1m max_entry=0;
--- must_die
--- error_log
qr/"fly_cache_near_zone": invalid max_entry "0".*http\.conf:1/


=== TEST 11: nginx -t: an unknown parameter
--- http_config
fly_cache_near_zone 1m size=2;
--- must_die
--- error_log
qr/"fly_cache_near_zone": invalid parameter "size=2".*http\.conf:1/


=== TEST 12: nginx -t: a size that is no size
--- http_config
fly_cache_near_zone big;
--- must_die
--- error_log
qr/"fly_cache_near_zone": invalid size "big".*http\.conf:1/


=== TEST 13: nginx -t: two zones
--- http_config
fly_cache_near_zone 1m;
fly_cache_near_zone 2m;
--- must_die
--- error_log
qr/"fly_cache_near_zone" directive is duplicate.*http\.conf:2/


=== TEST 14: nginx -t: fly_cache_near_zone in a server
--- config
fly_cache_near_zone 1m;
--- must_die
--- error_log
qr/"fly_cache_near_zone" directive is not allowed here.*server\.conf:1/


=== TEST 15: nginx -t: fly_cache_near on without a zone names where it was set
--- http_config eval: $main::REDIS
--- config
location / {
    fly_cache on;
    fly_cache_near on;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/"fly_cache_near on" needs "fly_cache_near_zone" \(fly_cache_near in \S*server\.conf:3\)/


=== TEST 16: nginx -t: without a zone, fly_cache_near off is fine, and so is fly_cache without it
--- http_config eval: $main::REDIS
--- config
location / {
    fly_cache on;
    fly_cache_near off;
    proxy_pass http://app;
}
--- test
my ($rc, $out) = $t->nginx_t({ http_config => $main::REDIS, config => "location / { fly_cache on; fly_cache_near off; proxy_pass http://app; }" },
                             region => 'atl');
is($rc, 0, 'nginx -t accepts it') or diag($out);
