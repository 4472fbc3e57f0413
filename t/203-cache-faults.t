# The regional cache fails open: a Redis that is stopped, paused, a black
# hole, refusing, guarded by another password, or holding garbage under the
# key never turns into an error the client sees.  Every request below is
# answered by the region's app (status 200, its body, X-Origin-Count moved
# on) with X-Cache ERROR or MISS, within a bound far above the configured
# timeouts ($LIVENESS = scaled(2) s, 5 times the Redis timeouts of
# $LIVENESS / 5 = 400 ms, which a healthy Redis on a busy machine does not
# reach; where a block must tell "waited for a timeout" from "did not wait"
# the timeouts are 5 x $LIVENESS instead; a liveness check, not a speed
# test); the error log is rate
# limited and garbage is logged at warn at most; once Redis is back the
# cache works again.  Also: a fill in a replica region stays in that region,
# a fill in the primary region reaches every replica.
use FlyEdge::Test;
use FlyEdge::CacheCheck;       # get, from_app, from_cache, fill, poll_until, par_get, key_of, $CACHE
use FlyEdge::FakeServers;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

our $HOST = 'faults.test';     # the Host of every request: keys are fly:http$HOST$uri
our $LIVENESS = scaled(2);     # seconds; the Redis timeouts are a fifth of that
our $REDIS_TIMEOUT = int(1000 * $LIVENESS / 5) . 'ms';
our %SEEN;                     # highest X-Origin-Count seen per region

# Answers are checked by their body and the region whose app made them,
# each within $LIVENESS; a fill is seen in the atl replica's real Redis.
FlyEdge::CacheCheck::configure(host => $HOST, seen => \%SEEN, match => 'body', region_header => 1,
                               within => $LIVENESS,
                               stored => sub { defined topology()->redis('atl')->get($_[0]) });

# A listener that accepts and never answers, for the whole file.
our $BH_PORT = FlyEdge::FakeServers::black_hole()->port;

# A port nothing listens on: below the ephemeral range (no port-0 listener
# of any process gets it) and locked like the harness's own ports (no other
# test file takes it) while this file runs.
our $CLOSED_PORT = FlyEdge::Topology::reserve_port();

# The cache configuration of a block.  `tag` makes every block's
# configuration different, so each block starts with new workers (no
# backoff, no log rate-limit state left over from the previous block).
sub http_config {
    my ($tag, %o) = @_;
    my $url = $o{url} // 'redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0';
    my $timeout = $o{timeout} // $REDIS_TIMEOUT;
    my $connect = $o{connect_timeout} // $REDIS_TIMEOUT;
    return <<"EOF";
# block: $tag
fly_redis "$url";
fly_redis_timeout $timeout;
fly_redis_connect_timeout $connect;
EOF
}

# Every worker of region $r has its Redis connection up ("fly redis
# connected" in its log; a worker connects at its first lookup):
# parallel requests until each one logged it.  A healthy lookup then meets
# a connected client, not a connection being set up on a busy machine,
# which may take longer than a lookup's timeout.
sub connect_workers {
    my ($r) = @_;
    $r //= 'atl';
    my $t = topology();
    my @pids = $t->nginx_worker_pids($r);
    my $left;
    my $ok = $t->wait_until(sub {
        my $log = $t->error_log($r);    # the workers may predate the block
        $left = grep { $log !~ /\] $_#\d+: fly redis connected regional / } @pids;
        return 1 unless $left;
        par_get(4, '/hdr?body=connect', region => $r);
        return 0;
    }, scaled(10));
    ok($ok, "$r: every worker is connected to its Redis") or diag("$left of " . scalar(@pids) . " workers are not");
}

# MISS then (once the fill landed) HIT for a path in atl.
sub warm {
    my ($path, $body, $label) = @_;
    connect_workers('atl');
    fill($path, $body, $label);
    from_cache(get($path), $body, "$label: second request");
}

# Every one of the parallel answers came from the app, with X-Cache $cache,
# within the liveness bound; the app counted exactly that many requests.
sub parallel_from_app {
    my ($n, $path, $body, $cache, $label) = @_;
    my $before = app_count('atl');
    my $t0 = time;
    my @res = par_get($n, $path);
    my $took = time - $t0;
    my @bad = grep { $_->{status} != 200 || $_->{content} ne $body
                     || ($_->{headers}{'x-cache'} // '') ne $cache
                     || ($_->{headers}{'x-app-region'} // '') ne 'atl'
                     || !defined $_->{elapsed} || $_->{elapsed} >= $LIVENESS } @res;
    ok(!@bad, "$label: all $n parallel requests got the app's answer with X-Cache $cache within $LIVENESS s")
        or diag(join '', map { sprintf "  %s X-Cache %s in %s: %s\n", $_->{status}, $_->{headers}{'x-cache'} // '-',
                                       defined $_->{elapsed} ? sprintf('%.3fs', $_->{elapsed}) : 'timeout',
                                       substr($_->{content}, 0, 80) } @bad);
    my %counts = map { ($_->{headers}{'x-origin-count'} // '') => 1 } @res;
    is(scalar(keys %counts), $n, "$label: $n distinct X-Origin-Count values");
    is(app_count('atl') - $before, $n, "$label: the app served all $n");
    my $batch = $LIVENESS + scaled(1);
    cmp_ok($took, '<', $batch, sprintf("$label: the whole batch took %.2f s (less than $batch s)", $took));
    my ($max) = sort { $b <=> $a } grep { /^\d+$/ } keys %counts;
    $SEEN{atl} = $max if defined $max && $max > ($SEEN{atl} // 0);
}

# The block's error-log lines of the module at error level or above.
sub fly_errors {
    my ($log) = @_;
    return grep { /\[(?:error|crit|alert|emerg)\]/ && /fly/ } split /\n/, $log;
}

# Plant garbage under the key of a real entry and check the request is
# still answered by the app, nothing crashes, the garbage is logged at warn
# at most (with the reason), and a string value is replaced by a good entry.
sub garbage_case {
    my (%o) = @_;
    my $t = topology();
    my $name = $o{name};
    (my $tag = $name) =~ s/\W+/-/g;
    my $body = "garbage-$tag";
    my $path = "/hdr?body=$body";
    my $key = key_of($path);
    warm($path, $body, "$name: a real entry");
    my $real = $t->redis('atl')->get($key);
    like($real, qr/^FLYC/, "$name: the stored entry starts with its magic");
    my @pids = sort $t->nginx_worker_pids('atl');
    my $from = $t->error_log_size('atl');
    my $case_log = sub { $t->error_log_since('atl', $from) };

    my $planted = $o{plant}->($t, $key, $real, $body);
    my $res = get($path);
    from_app($res, $body, $o{want} // 'MISS', "$name: with the garbage");

    is_deeply([sort $t->nginx_worker_pids('atl')], \@pids, "$name: the workers are still the same processes");
    my $log;
    if ($o{reason}) {
        $log = $t->wait_until(sub { my $l = $case_log->(); $l =~ $o{reason} ? $l : undef }, scaled(3)) // $case_log->();
        my ($line) = grep { $_ =~ $o{reason} } split /\n/, $log;
        ok($line, "$name: the garbage is logged with the reason ($o{reason})") or diag($log);
        like($line // '', qr/\[(?:warn|notice|info)\]/, "$name: logged at warn at most") if $line;
    }
    $log = $case_log->();
    unlike($log, qr/exited on signal/, "$name: no worker crashed");
    my @err = fly_errors($log);
    ok(!@err, "$name: nothing logged above warn") or diag(join "\n", @err);

    if ($o{replaced}) {
        # another type under the key: the MISS's fill replaced it
        ok($t->wait_until(sub { scalar($t->redis_cli('atl', 'TYPE', $key)) eq 'string' }, scaled(3)),
           "$name: the fill replaced it with a string");
        from_cache(get($path), $body, "$name: repaired, the next request");
    } elsif (defined $planted) {
        # a string value: the MISS stored a good entry over it
        my $now = $t->wait_until(sub { my $v = $t->redis('atl')->get($key); defined $v && $v ne $planted ? $v : undef }, scaled(3));
        like($now // '', qr/^FLYC/, "$name: the garbage was replaced by a new entry");
        from_cache(get($path), $body, "$name: repaired, the next request");
    } else {
        # another type stays; the app keeps answering
        from_app(get($path), $body, $o{want} // 'MISS', "$name: again");
    }
}

run_tests(pg => 0);

__DATA__

=== TEST 1: healthy Redis: MISS, then HIT from the atl replica under fly:$scheme$host$request_uri
--- http_config eval: main::http_config('healthy')
--- config eval: $main::CACHE
--- test
main::warm('/hdr?body=healthy', 'healthy', 'healthy');
is(scalar $t->redis_cli('atl', 'TYPE', main::key_of('/hdr?body=healthy')), 'string', 'the entry is a string');
my $ttl = $t->redis_cli('atl', 'TTL', main::key_of('/hdr?body=healthy'));
ok($ttl > 50 && $ttl <= 60, "it expires with fly_cache_valid's 60 s (TTL $ttl)");


=== TEST 2: Redis stopped: every request is answered by the app with ERROR; back: MISS, then HIT
--- http_config eval: main::http_config('stopped')
--- config eval: $main::CACHE
--- test
my ($p, $b) = ('/hdr?body=stopped', 'stopped');
main::warm($p, $b, 'before the stop');
$t->stop_redis('atl');
for my $i (1 .. 5) {
    main::from_app(main::get($p), $b, 'ERROR', "Redis stopped, cached URL, request $i");
}
main::from_app(main::get('/hdr?body=stopped-other'), 'stopped-other', 'ERROR', 'Redis stopped, another URL');
main::from_app(main::get($p, via_emulator => 1), $b, 'ERROR', 'Redis stopped, through the Fly proxy emulator');
main::parallel_from_app(20, $p, $b, 'ERROR', 'Redis stopped');
$t->start_redis('atl');    # a fresh replica: the atl-only entry is gone after the resync
# the workers reconnect after their backoff (at most 5 s); until then ERROR
my $miss = main::poll_until($p, $b, 'MISS', ['ERROR'], 8, 'Redis back');
ok($miss, 'Redis back: a MISS once the backoff is over') and
    main::from_app($miss, $b, 'MISS', 'Redis back, the first lookup');
my $hit = main::poll_until($p, $b, 'HIT', ['ERROR'], 8, 'Redis back');
ok($hit, 'Redis back: then a HIT') and main::from_cache($hit, $b, 'Redis back, the refilled entry');


=== TEST 3: Redis paused (SIGSTOP): ERROR without hanging, also for 20 requests at once; resumed: HIT
--- http_config eval: main::http_config('sigstop')
--- config eval: $main::CACHE
--- test
my ($p, $b) = ('/hdr?body=sigstop', 'sigstop');
main::warm($p, $b, 'before the pause');
$t->pause_redis('atl');
for my $i (1 .. 5) {
    main::from_app(main::get($p), $b, 'ERROR', "Redis paused, request $i");
}
main::parallel_from_app(20, $p, $b, 'ERROR', 'Redis paused');
main::parallel_from_app(20, '/hdr?body=sigstop-2', 'sigstop-2', 'ERROR', 'Redis paused, another URL');
$t->resume_redis('atl');
my $hit = main::poll_until($p, $b, 'HIT', ['ERROR'], 8, 'Redis resumed');
ok($hit, 'Redis resumed: the entry is served again') and main::from_cache($hit, $b, 'Redis resumed');


=== TEST 4: Redis busy in DEBUG SLEEP: ERROR without hanging, also for 20 requests at once; awake: HIT
--- http_config eval: main::http_config('debug-sleep', timeout => int(100 * $main::LIVENESS) . 'ms', connect_timeout => int(100 * $main::LIVENESS) . 'ms')
--- config eval: $main::CACHE
--- test
my ($p, $b) = ('/hdr?body=debug-sleep', 'debug-sleep');
main::warm($p, $b, 'before the sleep');
# Redis's timeouts are $LIVENESS / 10 here, so the requests below take about
# 4 of them; the sleep lasts 5 times that (and returns once Redis sleeps)
my $secs = scaled(4);
$t->redis_debug_sleep('atl', $secs);
for my $i (1 .. 3) {
    main::from_app(main::get($p), $b, 'ERROR', "Redis asleep, request $i");
}
main::parallel_from_app(20, $p, $b, 'ERROR', 'Redis asleep');
ok($t->redis_asleep('atl'), 'those requests were all made while Redis slept (it still sleeps)');
ok($t->wait_until(sub { eval { $t->redis('atl')->ping } }, $secs + scaled(10)), 'Redis wakes up');
my $hit = main::poll_until($p, $b, 'HIT', ['ERROR'], 8, 'Redis awake');
ok($hit, 'Redis awake: the entry is served again') and main::from_cache($hit, $b, 'Redis awake');


=== TEST 5: a black hole as Redis (accepts, never answers): the app answers with ERROR, nothing hangs
--- http_config_atl eval: main::http_config('black-hole', url => "redis://x:secret\@127.0.0.1:$main::BH_PORT/0")
--- http_config eval: main::http_config('black-hole')
--- config eval: $main::CACHE
--- test
for my $i (1 .. 5) {
    main::from_app(main::get("/hdr?body=bh$i"), "bh$i", 'ERROR', "black hole, request $i");
}
main::parallel_from_app(20, '/hdr?body=bh-par', 'bh-par', 'ERROR', 'black hole');
# past the backoff (at most 5 s): a worker tries the black hole again
my $off = $t->error_log_size('atl');
ok($t->wait_until(sub { $t->error_log_since('atl', $off) =~ /fly redis connecting to 127\.0\.0\.1 port $main::BH_PORT \(after a failure\)/ },
                  scaled(10)), 'after its backoff a worker connects to the black hole again');
main::parallel_from_app(20, '/hdr?body=bh-par2', 'bh-par2', 'ERROR', 'black hole, after a backoff');
like(block_error_log('atl'), qr/\[error\].*fly redis.*$main::BH_PORT/, 'the failure is logged, naming the endpoint');


=== TEST 6: a port nothing listens on: ERROR at once (no wait for the timeouts, 5 times the bound)
--- http_config_atl eval: main::http_config('closed', url => "redis://x:secret\@127.0.0.1:$main::CLOSED_PORT/0", timeout => int(5000 * $main::LIVENESS) . 'ms', connect_timeout => int(5000 * $main::LIVENESS) . 'ms')
--- http_config eval: main::http_config('closed')
--- config eval: $main::CACHE
--- test
for my $i (1 .. 5) {
    main::from_app(main::get("/hdr?body=closed$i"), "closed$i", 'ERROR', "closed port, request $i");
}
main::parallel_from_app(20, '/hdr?body=closed-par', 'closed-par', 'ERROR', 'closed port');
like(block_error_log('atl'), qr/\[error\].*fly redis.*(?:refused|$main::CLOSED_PORT)/, 'the refusal is logged');


=== TEST 7: garbage under the key: random bytes
--- http_config eval: main::http_config('garbage-random')
--- config eval: $main::CACHE
--- test
srand(20351);
my $junk = join '', map { chr(int rand 256) } 1 .. 300;
substr($junk, 0, 4) = "JUNK";
main::garbage_case(name => 'random bytes', reason => qr/fly_cache.*(?i:magic)/,
    plant => sub { my ($t, $k) = @_; $t->redis('atl')->set($k, $junk); $junk });


=== TEST 8: garbage under the key: an empty string
--- http_config eval: main::http_config('garbage-empty')
--- config eval: $main::CACHE
--- test
main::garbage_case(name => 'empty string', reason => qr/fly_cache.*(?i:short|empty)/,
    plant => sub { my ($t, $k) = @_; $t->redis_cli('atl', 'SET', $k, ''); '' });


=== TEST 9: garbage under the key: a real entry cut short (in its headers, then in its body)
--- http_config eval: main::http_config('garbage-truncated')
--- config eval: $main::CACHE
--- test
main::garbage_case(name => 'truncated in the headers', reason => qr/fly_cache.*(?i:truncat|short)/,
    plant => sub { my ($t, $k, $real) = @_; my $v = substr($real, 0, 40); $t->redis('atl')->set($k, $v); $v });
main::garbage_case(name => 'truncated in the body',
    plant => sub { my ($t, $k, $real) = @_; my $v = substr($real, 0, length($real) - 3); $t->redis('atl')->set($k, $v); $v });


=== TEST 10: garbage under the key: a real entry with one header byte flipped
--- http_config eval: main::http_config('garbage-flipped')
--- config eval: $main::CACHE
--- test
# byte 10 is inside `stored` (magic 4, version 1, flags 1, status 2, stored 8)
main::garbage_case(name => 'header byte flipped', reason => qr/fly_cache.*(?i:checksum|header|corrupt)/,
    plant => sub { my ($t, $k, $real) = @_; my $v = $real; substr($v, 10, 1) ^= "\xff"; $t->redis('atl')->set($k, $v); $v });


=== TEST 11: garbage under the key: another format version (byte 4)
--- http_config eval: main::http_config('garbage-version')
--- config eval: $main::CACHE
--- test
main::garbage_case(name => 'version byte changed', reason => qr/fly_cache.*(?i:version)/,
    plant => sub { my ($t, $k, $real) = @_; my $v = $real; substr($v, 4, 1) = chr(ord(substr($v, 4, 1)) + 1); $t->redis('atl')->set($k, $v); $v });


=== TEST 12: garbage under the key: a list and a hash (WRONGTYPE) is a MISS that the fill replaces
--- http_config eval: main::http_config('garbage-wrongtype')
--- config eval: $main::CACHE
--- test
# Another type under the key is treated like an unreadable entry: a MISS
# whose fill replaces it (SET overwrites any type).
main::garbage_case(name => 'a list', want => 'MISS', reason => qr/fly_cache.*not a string.*WRONGTYPE/, replaced => 1,
    plant => sub { my ($t, $k) = @_; $t->redis_cli('atl', 'DEL', $k); $t->redis_cli('atl', 'LPUSH', $k, 'x'); undef });
# the next second: past the once-a-second log limit of the first case's line
my $sec = int(time);
$t->wait_until(sub { int(time) > $sec }, scaled(2));
main::garbage_case(name => 'a hash', want => 'MISS', reason => qr/fly_cache.*not a string.*WRONGTYPE/, replaced => 1,
    plant => sub { my ($t, $k) = @_; $t->redis_cli('atl', 'DEL', $k); $t->redis_cli('atl', 'HSET', $k, 'f', 'v'); undef });


=== TEST 13: every single-bit flip before the body and every truncation of a real entry is a MISS
--- http_config eval: main::http_config('garbage-sweep')
--- config eval: $main::CACHE
--- test
# The entry format holds no key: a damaged copy of one real entry is planted
# under a key of its own per variant, and all are requested in parallel.
my ($p, $body) = ('/hdr?body=sweep', 'sweep');
main::warm($p, $body, 'sweep');
my $real = $t->redis('atl')->get(main::key_of($p));
my $prefix = length($real) - length($body);
ok($prefix > 40 && substr($real, $prefix) eq $body, "the entry is $prefix bytes of headers, then the body");
my @variants = ((map { my $v = $real; substr($v, $_, 1) ^= "\x01"; ["bit 0 of byte $_ flipped", $v] } 0 .. $prefix - 1),
                (map { ["cut to $_ bytes", substr($real, 0, $_)] } 0 .. length($real) - 1),
                ["one byte too many", $real . 'x']);
my %what;
my $redis = $t->redis('atl');
for my $i (0 .. $#variants) {
    my $path = "$p&v=$i";
    $what{$path} = $variants[$i];
    $redis->set(main::key_of($path), $variants[$i][1]);
}
my @pids = sort $t->nginx_worker_pids('atl');
my @paths = sort keys %what;
my (@bad, @res);
while (my @batch = splice @paths, 0, 25) {
    push @res, main::par_get(0, \@batch);
}
for my $r (@res) {
    my $x = $r->{headers}{'x-cache'} // '';
    push @bad, "$what{$r->{path}}[0]: $r->{status} X-Cache $x body '" . substr($r->{content}, 0, 40) . "'"
        unless $r->{status} == 200 && $r->{content} eq $body && $x eq 'MISS'
               && ($r->{headers}{'x-origin-count'} // 0) > ($main::SEEN{atl} // 0);
}
ok(!@bad, scalar(@variants) . " damaged entries: every one a MISS answered by the app")
    or diag(join "\n", @bad[0 .. ($#bad < 19 ? $#bad : 19)]);
my ($max) = sort { $b <=> $a } map { $_->{headers}{'x-origin-count'} // 0 } @res;
$main::SEEN{atl} = $max if $max > ($main::SEEN{atl} // 0);
is_deeply([sort $t->nginx_worker_pids('atl')], \@pids, 'the workers are still the same processes');
unlike(block_error_log('atl'), qr/exited on signal/, 'no worker crashed');
my @err = main::fly_errors(block_error_log('atl'));
ok(!@err, 'nothing logged above warn') or diag(join "\n", @err);
my @all = sort keys %what;
my @keys = map { main::key_of($_) } @all;
my $left = 0;
$t->wait_until(sub {
    my @now = $redis->mget(@keys);
    $left = grep { !defined $now[$_] || $now[$_] !~ /^FLYC/ || $now[$_] eq $what{$all[$_]}[1] } 0 .. $#now;
    $left == 0;
}, scaled(5));
is($left, 0, 'every damaged entry was replaced by a new one');
main::from_cache(main::get("$p&v=0"), $body, 'a repaired variant');


=== TEST 14: Redis down under 200 requests: at most one error line per worker per second
--- http_config eval: main::http_config('flood')
--- config eval: $main::CACHE
--- test
$t->stop_redis('atl');
my $t0 = time;
my $ok = 0;
for my $i (1 .. 10) {
    my @res = main::par_get(20, "/hdr?body=flood$i");
    $ok += grep { $_->{status} == 200 && $_->{content} eq "flood$i" && ($_->{headers}{'x-cache'} // '') eq 'ERROR' } @res;
    sleep 0.1;    # spread the batches over more than a second (the limit is per second)
}
my $secs = time - $t0;
is($ok, 200, sprintf('all 200 requests answered by the app with ERROR (in %.1f s)', $secs));
my @lines = main::fly_errors(block_error_log('atl'));
ok(@lines >= 1, 'the outage is logged') or diag(block_error_log('atl'));
my %per;
for (@lines) {
    my ($when, $pid) = m{^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[\w+\] (\d+)#} or next;
    $per{"$pid $when"}++;
}
my @over = grep { $per{$_} > 1 } sort keys %per;
ok(!@over, 'no worker logged more than one error line in any second') or diag(join "\n", map { "$_: $per{$_}" } @over);
my $max = 2 * (int($secs) + 2);
cmp_ok(scalar @lines, '<=', $max, sprintf("at most $max error lines for 2 workers over %.1f s", $secs)) or diag(join "\n", @lines);


=== TEST 15: a wrong password: ERROR, the app answers, the log names AUTH and shows no password
--- http_config_atl eval: main::http_config('bad-auth', url => 'redis://x:not-the-password-7731@127.0.0.1:${REDIS_PORT}/0')
--- http_config eval: main::http_config('bad-auth')
--- config eval: $main::CACHE
--- test
for my $i (1 .. 3) {
    main::from_app(main::get('/hdr?body=bad-auth'), 'bad-auth', 'ERROR', "wrong password, request $i");
}
main::parallel_from_app(10, '/hdr?body=bad-auth', 'bad-auth', 'ERROR', 'wrong password');
my $log = $t->wait_until(sub { my $l = block_error_log('atl'); $l =~ /\[error\].*AUTH/ ? $l : undef }, scaled(3))
    // block_error_log('atl');
like($log, qr/\[error\].*fly redis.*AUTH/, 'the error line mentions AUTH');
unlike($log, qr/not-the-password-7731/, 'the configured password is not in the log');
my $real = $t->redis_password;
ok(index($log, $real) < 0, 'nor the real one');
is(scalar $t->redis_cli('atl', 'EXISTS', main::key_of('/hdr?body=bad-auth')), '0', 'nothing was stored');


=== TEST 16: a reload while Redis is paused is prompt; the old workers exit, requests keep being answered
--- http_config eval: main::http_config('reload-paused')
--- config eval: $main::CACHE
--- test
my ($p, $b) = ('/hdr?body=reload', 'reload');
main::warm($p, $b, 'before the pause');
my @old = $t->nginx_worker_pids('atl');
$t->pause_redis('atl');
main::parallel_from_app(10, $p, $b, 'ERROR', 'paused, before the reload');
my $t0 = time;
my $ok = eval { $t->reload_nginx('atl'); 1 };
my $took = time - $t0;
ok($ok, sprintf('nginx reloaded while Redis is paused (%.2f s)', $took)) or diag($@);
cmp_ok($took, '<', scaled(5), 'promptly');
my %old = map { $_ => 1 } @old;
my @left = grep { $old{$_} } $t->nginx_worker_pids('atl');
ok(!@left, 'the old workers have exited') or diag("still running: @left");
main::from_app(main::get($p), $b, 'ERROR', 'paused, after the reload');
$t->resume_redis('atl');
my $hit = main::poll_until($p, $b, 'HIT', ['ERROR'], 8, 'resumed after the reload');
ok($hit, 'resumed: the entry is served again') and main::from_cache($hit, $b, 'resumed after the reload');


=== TEST 17: a fill in atl stays on the atl replica; a fill in scl reaches every replica
--- http_config eval: main::http_config('locality')
--- config eval: $main::CACHE
--- test
my $atl = '/hdr?body=filled-in-atl';
my $k = main::key_of($atl);
main::warm($atl, 'filled-in-atl', 'atl fill');
# a marker written on the primary afterwards: once a replica has it, it is caught up
my $marker = 'marker-' . time;
$t->redis('scl')->set($marker, 1);
for my $r (qw(ord atl)) {
    ok($t->wait_until(sub { $t->redis($r)->get($marker) }, scaled(5)), "$r caught up with the primary");
}
is(scalar $t->redis_cli('atl', 'EXISTS', $k), '1', 'the atl fill is on the atl replica');
is(scalar $t->redis_cli('scl', 'EXISTS', $k), '0', 'not on the primary');
is(scalar $t->redis_cli('ord', 'EXISTS', $k), '0', 'not on ord');
main::connect_workers('ord');
main::from_app(main::get($atl, region => 'ord'), 'filled-in-atl', 'MISS', 'the same URL in ord', region => 'ord');

my $scl = '/hdr?body=filled-in-scl';
my $ks = main::key_of($scl);
main::connect_workers('scl');
main::from_app(main::get($scl, region => 'scl'), 'filled-in-scl', 'MISS', 'a MISS in scl', region => 'scl');
for my $r (qw(scl ord atl)) {
    ok($t->wait_until(sub { $t->redis_cli($r, 'EXISTS', $ks) eq '1' }, scaled(5)), "the scl fill reached $r");
}
main::from_cache(main::get($scl, region => 'ord'), 'filled-in-scl', 'the scl fill, read in ord', origin => 'scl');
main::from_cache(main::get($scl, region => 'atl'), 'filled-in-scl', 'the scl fill, read in atl', origin => 'scl');
