# The fill lock (issue 10): fly_cache_lock on | off, fly_cache_lock_timeout.
# While one request fills a key, the other requests for it in the region
# (every worker, every nginx on the region's Redis) wait for that fill and
# are answered from it (HIT); after the lock timeout they go to the app and
# do not store.  The lock is `SET fly:<key>\x1fl <token> NX PX <2 x timeout>`
# in the regional Redis: a SIGKILLed holder wedges its key for two timeouts
# at most.  Redis down: no lock, the app answers.
#
# In this file every region's nginx uses the scl Redis as its regional one
# (and as the primary): the scl and ord nginx are two machines of one
# region.  The app counts its requests (X-Origin-Count, /__count, per
# region's app): "exactly one app request" is the sum over the apps.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use HTTP::Tiny;
use JSON::PP ();
use POSIX ();

sub ms { int(scaled($_[0]) * 1000) }

# The apps' request counts, summed.
sub apps_total { my $n = 0; $n += app_count($_) for qw(scl ord atl); $n }

sub lock_key { 'fly:httplocalhost' . $_[0] . "\x1fl" }

# parallel_get in a child process for region $r (its results come back
# through a file): call, then reap() for them, while the parent runs its own.
sub parallel_in_child {
    my ($paths, %o) = @_;
    my $file = main::topology()->dir . "/parallel-$$-" . int(rand(1e9)) . '.json';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my @r = eval { FlyEdge::Test::parallel_get($paths, %o) };
        if (open my $fh, '>', $file) { print $fh JSON::PP->new->encode(\@r); close $fh }
        POSIX::_exit(0);
    }
    return sub {
        waitpid($pid, 0);
        open my $fh, '<', $file or return ();
        local $/;
        my $r = JSON::PP->new->decode(<$fh>);
        unlink $file;
        return @$r;
    };
}

# All answered 200 with the same body and the same stored response
# (X-Origin-Count); returns the X-Cache values counted.
sub same_answers {
    my ($name, $body, @res) = @_;
    my @bad = grep { $_->{status} != 200 || $_->{content} ne $body } @res;
    ok(!@bad, "$name: all " . scalar(@res) . " answered 200 with the body")
        or diag(join "\n", map { "$_->{status} [$_->{headers}{'x-cache'}] " . substr($_->{content}, 0, 80) } @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    my %oc = map { ($_->{headers}{'x-origin-count'} // '') => 1 } @res;
    is(scalar(keys %oc), 1, "$name: all from one app response") or diag(join ' ', sort keys %oc);
    my %xc;
    $xc{ $_->{headers}{'x-cache'} // '' }++ for @res;
    return \%xc;
}

our $HTTP = qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";\n}
          . qq{fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";\n}
          . qq{fly_redis_timeout 5s;\n};

# /: the lock with a timeout far above any wait here; /short/: a lock
# timeout of 1 s (scaled) and an app slower than 8 times that with X-Slow;
# /off/: no lock.
our $CACHE = 'fly_cache on;
fly_cache_status_header X-Cache;
location / {
    fly_cache_lock on;
    fly_cache_lock_timeout ' . ms(60) . 'ms;
    proxy_pass http://app;
}
location /short/ {
    fly_cache_lock on;
    fly_cache_lock_timeout ' . ms(1) . 'ms;
    if ($http_x_slow) {
        rewrite ^ /slow?ms=' . ms(8) . ' break;
    }
    proxy_pass http://app/;
}
location /off/ {
    proxy_pass http://app/;
}
';

run_tests(pg => 0);

__DATA__

=== TEST 1: 200 concurrent requests for a cold key in one nginx (2 workers): one app request, 200 answers from it
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = '/slow?ms=' . main::ms(1) . '&t=1&Cache-Control=max-age%3D300';
my $before = main::apps_total();
my @res = parallel_get([($p) x 200], timeout => 60);
my $xc = main::same_answers('one nginx', "slept " . main::ms(1) . " ms\n", @res);
is(main::apps_total() - $before, 1, 'exactly one app request');
is($xc->{MISS} // 0, 1, 'one MISS (the filler)');
is($xc->{HIT} // 0, 199, 'the others are HITs') or diag(explain($xc));
is(xc($p), 'HIT', 'stored');
ok(!$t->redis('scl')->exists(main::lock_key($p)), 'the lock is released');


=== TEST 2: the same across two nginx sharing the region's Redis (100 + 100 concurrent)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = '/slow?ms=' . main::ms(1) . '&t=2&Cache-Control=max-age%3D300';
my $before = main::apps_total();
my $reap = main::parallel_in_child([($p) x 100], region => 'ord', timeout => 60);
my @scl = parallel_get([($p) x 100], timeout => 60);
my @ord = $reap->();
is(scalar(@ord), 100, 'the ord answers came back');
my $xc = main::same_answers('two nginx', "slept " . main::ms(1) . " ms\n", @scl, @ord);
is(main::apps_total() - $before, 1, 'exactly one app request in the region');
is($xc->{MISS} // 0, 1, 'one MISS');
is($xc->{HIT} // 0, 199, 'the others are HITs') or diag(explain($xc));


=== TEST 3: without fly_cache_lock, concurrent cold requests each reach the app (the lock makes the difference)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = '/off/slow?ms=' . main::ms(1) . '&t=3&Cache-Control=max-age%3D300';
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], timeout => 60);
is(scalar(grep { $_->{status} == 200 } @res), 20, 'all answered');
cmp_ok(main::apps_total() - $before, '>', 1, 'more than one app request');


=== TEST 4: lock timeout: an app slower than fly_cache_lock_timeout; the waiters go to the app and store nothing
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 200
--- test
# 5 slow requests (X-Slow) at once, each on its own connection
my @socks;
for (1 .. 5) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('scl'), Proto => 'tcp')
        or die "connect: $!";
    push @socks, $s;
}
my $q = '/short/hdr?t=4&Cache-Control=max-age%3D300&body=b4';
syswrite($_, "GET $q HTTP/1.0\r\nHost: localhost\r\nX-Slow: 1\r\n\r\n") for @socks;
my @answers;
for my $s (@socks) {
    local $/;
    $s->timeout(main::scaled(60));
    my $a = <$s> // '';
    push @answers, $a;
}
my @oc = map { /^X-Origin-Count:\s*(\d+)/mi ? $1 : -1 } @answers;
is(scalar(grep { m{^HTTP/1\.\d 200} } @answers), 5, 'all five answered 200');
is(scalar(grep { /^X-Cache: MISS/mi } @answers), 5, 'all MISS');
my $hit = get($q);
is($hit->{headers}{'x-cache'}, 'HIT', 'then stored');
my ($min) = sort { $a <=> $b } @oc;
is($hit->{headers}{'x-origin-count'}, $min, "the stored response is the holder's (the first app request), "
   . 'none of the waiters stored theirs') or diag("origin counts: @oc");
cmp_ok(scalar(keys %{{ map { $_ => 1 } @oc }}), '==', 5, 'each of the five went to the app');


=== TEST 5: an uncacheable answer releases the lock: every waiter goes to the app
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = '/slow?ms=' . main::ms(1) . '&t=5&Cache-Control=no-store';
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], timeout => 20);
is(scalar(grep { $_->{status} == 200 } @res), 20, 'all 20 answered 200 (long before the lock timeout)');
is(main::apps_total() - $before, 20, 'each from the app');
ok(!$t->redis('scl')->exists(main::lock_key($p)), 'no lock left');


=== TEST 6: a lock left by a SIGKILLed worker expires (its TTL); the next request fills
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- allow_alerts
--- timeout: 120
--- test
my $q = '/short/hdr?t=6&Cache-Control=max-age%3D300&body=b6';
my $lk = main::lock_key($q);
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('scl'), Proto => 'tcp')
    or die "connect: $!";
syswrite($s, "GET $q HTTP/1.0\r\nHost: localhost\r\nX-Slow: 1\r\n\r\n");
ok($t->wait_until(sub { $t->redis('scl')->exists($lk) }, main::scaled(10)), 'the holder took the lock');
my @workers = $t->nginx_worker_pids('scl');
kill 'KILL', @workers;
close $s;
my $pttl = $t->redis('scl')->pttl($lk);
cmp_ok($pttl, '>', 0, 'the lock has a TTL') if $t->redis('scl')->exists($lk);
ok($t->wait_until(sub { !$t->redis('scl')->exists($lk) }, main::scaled(10)), 'the lock expired');
ok($t->wait_until(sub { my @w = $t->nginx_worker_pids('scl'); @w >= 2 && !grep { my $x = $_; grep { $_ == $x } @workers } @w },
                  main::scaled(10)), 'new workers');
my $m = get($q);
is($m->{status}, 200, 'answered');
is($m->{headers}{'x-cache'}, 'MISS', 'a MISS that takes the lock and fills');
is(get($q)->{headers}{'x-cache'}, 'HIT', 'then a HIT');


=== TEST 7: Redis down: no lock, every request is answered by the app
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
$t->stop_redis('scl');
my $p = '/slow?ms=' . main::ms(0.2) . '&t=7&Cache-Control=max-age%3D300';
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], timeout => 20);
is(scalar(grep { $_->{status} == 200 } @res), 20, 'all 20 answered 200');
is(main::apps_total() - $before, 20, 'from the app');
$t->start_redis('scl');
