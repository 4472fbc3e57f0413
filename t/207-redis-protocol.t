# The Redis client's own RESP reader against a fake Redis
# (t/app/fake_redis.py) that splits its replies into chunks of 1, 7, 4096
# or 70000 bytes, sends several pipelined replies in one write, answers GET
# with the wrong type, with malformed replies, or closes mid-reply.  The
# atl region's nginx uses the fake (AUTH and SELECT 3 go through the reader
# too); the other regions are not involved.
#
# Every answer must be the app's bytes (sha256 against X-Body-Sha256): a
# HIT byte-identical to what the MISS stored, without reaching the app; a
# wrong-type reply is a MISS (an error other than WRONGTYPE: ERROR); a
# malformed reply or a close fails the connection at once (ERROR, well
# before fly_redis_timeout), no worker crashes, and once the fake behaves
# again the cache works again (MISS/HIT) after the reconnect backoff.
#
# "At once" is $PROMPT seconds (scaled: 3 s, 12 s in the sanitizer pass) and
# fly_redis_timeout is 5 times that, so an answer within $PROMPT means the
# reply was rejected, not waited for, however slow the machine; no reply
# that behaves (200 KiB in 1-byte chunks included) comes near that timeout.
use FlyEdge::Test;
use FlyEdge::FakeServers;
use FlyEdge::CacheCheck;       # get, app_count, from_app, from_cache, fill, poll_until, par_get, bin, $CACHE
use Digest::SHA qw(sha256_hex);

our $HOST = 'resp.test';       # keys are fly:http$HOST$uri
our $PROMPT = scaled(3);       # seconds: a bad reply is rejected within this
our $TIMEOUT = 5 * $PROMPT;    # fly_redis_timeout, seconds: far beyond $PROMPT
our %SEEN;                     # highest X-Origin-Count seen from the atl app
our @SPLITS = (1, 7, 4096, 70000);
our @SIZES = (0, 1, 1024, 32 * 1024, 200 * 1024);

# ---- the fake Redis, for the whole file -----------------------------------

our $FAKE = FlyEdge::FakeServers::fake_redis(timeout => scaled(5));

# ---- nginx -----------------------------------------------------------------

our $HTTP_CONFIG = sprintf <<"EOF", $FAKE->port, $TIMEOUT * 1000, scaled(5) * 1000;
fly_redis "redis://x:fake-password\@127.0.0.1:%d/3";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
EOF

# Bodies are checked by size and sha256; a fill must reach the fake
# through SET.  (The client's timeout, scaled by the harness, is past
# fly_redis_timeout: a module that waited for it shows as slow, not as a
# client timeout.)
FlyEdge::CacheCheck::configure(host => $HOST, seen => \%SEEN, hit_sha => 1,
                               timeout => $TIMEOUT / time_scale() + 10,
                               stored => sub { $FAKE->has($_[0]) });

# No worker crashed, and the workers are the ones that were there.
sub no_crash {
    my ($pids, $label) = @_;
    my $t = topology();
    unlike($t->error_log('atl'), qr/exited on signal/, "$label: no worker crashed");
    is_deeply([sort $t->nginx_worker_pids('atl')], $pids, "$label: the same worker processes");
}

run_tests(pg => 0);

__DATA__

=== TEST 1: replies split into 1, 7, 4096 and 70000-byte chunks: MISS fills through SET, HIT is byte-identical, for bodies of 0 B to 200 KiB
--- http_config_atl eval: $main::HTTP_CONFIG
--- config_atl eval: $main::CACHE
--- test
my @pids = sort $t->nginx_worker_pids('atl');
for my $split (@main::SPLITS) {
    $main::FAKE->set_mode(split => $split);
    for my $size (@main::SIZES) {
        my $label = "split $split, body $size";
        my $path = main::bin($size, "t1s$split");
        my $m = main::fill($path, $size, $label);
        my $before = main::app_count();
        main::from_cache(main::get($path), $m, "$label: HIT", $before);
    }
}
$main::FAKE->set_mode();
my $st = $main::FAKE->stats;
ok($st->{auth} >= 1 && $st->{select} >= 1, "the client sent AUTH and SELECT (auth=$st->{auth}, select=$st->{select})");
main::no_crash(\@pids, 'split replies');


=== TEST 2: 20 parallel HITs of different keys, pipelined, several replies per write, split into 1, 7, 4096, 70000-byte chunks: each gets its own body
--- http_config_atl eval: $main::HTTP_CONFIG
--- config_atl eval: $main::CACHE
--- test
my @pids = sort $t->nginx_worker_pids('atl');
my @sizes = (0, 1, 2, 10, 100, 1000, 1023, 1024, 1025, 4095, 4096, 4097,
             16383, 16384, 16385, 32768, 32769, 65535, 65536, 70001);
$main::FAKE->set_mode();
my %miss;
for my $size (@sizes) {
    my $path = main::bin($size, 't2');
    $miss{$path} = main::fill($path, $size, "parallel, fill $size");
}
my @paths = sort keys %miss;
my $max_batch_before = $main::FAKE->stats->{max_batch};
for my $split (@main::SPLITS) {
    $main::FAKE->set_mode(split => $split, coalesce => int(scaled(30)));    # ms: the window to batch replies in
    my $before = main::app_count();
    my @res = main::par_get(\@paths);
    my @bad;
    for my $r (@res) {
        my $m = $miss{$r->{path}};
        push @bad, $r unless $r->{status} == 200 && ($r->{headers}{'x-cache'} // '') eq 'HIT'
            && $r->{content} eq $m->{content}
            && sha256_hex($r->{content}) eq $m->{headers}{'x-body-sha256'}
            && ($r->{headers}{'x-origin-count'} // '') eq $m->{headers}{'x-origin-count'};
    }
    ok(!@bad, "split $split: all " . scalar(@res) . " parallel HITs got their own body")
        or diag(join '', map { sprintf "  %s: %s X-Cache %s, %d bytes, X-Origin-Count %s (stored %s)\n",
                                   $_->{path}, $_->{status}, $_->{headers}{'x-cache'} // '-', length $_->{content},
                                   $_->{headers}{'x-origin-count'} // '-', $miss{$_->{path}}{headers}{'x-origin-count'} } @bad);
    is(main::app_count(), $before, "split $split: the app was not reached");
}
$main::FAKE->set_mode();
my $st = $main::FAKE->stats;
cmp_ok($st->{max_batch}, '>=', 4, "replies were pipelined: up to $st->{max_batch} sent in one write");
main::no_crash(\@pids, 'parallel HITs');


=== TEST 3: GET answered with the wrong type (integer, arrays, status, WRONGTYPE, other error), whole and in 7-byte chunks: the app answers, then HIT again
--- http_config_atl eval: $main::HTTP_CONFIG
--- config_atl eval: $main::CACHE
--- test
my @pids = sort $t->nginx_worker_pids('atl');
my @cases = ([integer => 'MISS'], [array => 'MISS'], [nested => 'MISS'], [empty => 'MISS'],
             [nilarray => 'MISS'], [nilbulk => 'MISS'], [status => 'MISS'], [wrongtype => 'MISS'],
             [error => 'ERROR']);
my $size = 5000;
for my $split (0, 7) {
    for my $c (@cases) {
        my ($mode, $want) = @$c;
        my $label = "GET answered $mode" . ($split ? ", split $split" : '');
        my $path = main::bin($size, "t3$mode$split");
        $main::FAKE->set_mode();
        my $m = main::fill($path, $size, "$label: before");
        $main::FAKE->set_mode(get => $mode, split => $split);
        my $res = main::get($path);
        main::from_app($res, $size, $want, $label);
        cmp_ok($res->{elapsed}, '<', $main::PROMPT, "$label: answered at once (within $main::PROMPT s; fly_redis_timeout is $main::TIMEOUT s)");
        $main::FAKE->set_mode(split => $split);
        my $hit = main::poll_until($path, $size, 'HIT', ['MISS'], 3, "$label: back to normal");
        ok($hit, "$label: back to normal, a HIT") and
            ok($hit->{content} eq $m->{content}, "$label: the HIT is byte-identical");
    }
}
$main::FAKE->set_mode();
main::no_crash(\@pids, 'wrong types');


=== TEST 4: malformed replies and closes mid-reply, whole and in 1-byte chunks: the app answers at once, the client reconnects, then MISS/HIT again
--- http_config_atl eval: $main::HTTP_CONFIG
--- config_atl eval: $main::CACHE
--- test
my @pids = sort $t->nginx_worker_pids('atl');
my $from = $t->error_log_size('atl');
my @modes = qw(badlen negarray huge hugearray badint garbage nocrlf longline deep badelem
               unsolicited closehead closemid close);
for my $split (0, 1) {
    for my $mode (@modes) {
        for my $size (100, 200 * 1024) {
            next if $size > 100 && $mode ne 'closemid' && $mode ne 'unsolicited';
            my $label = "GET answered $mode" . ($split ? ", split $split" : '') . ", body $size";
            my $path = main::bin($size, "t4$mode$split");
            $main::FAKE->set_mode();
            my $m = main::fill($path, $size, "$label: before");
            my $st0 = $main::FAKE->stats;
            $main::FAKE->set_mode(get => $mode, split => $split);
            my $res = main::get($path);
            # "unsolicited" sends the right reply first: a HIT is correct
            main::from_app($res, $size, qr/^(?:MISS|ERROR)$/, $label) if $mode ne 'unsolicited';
            if ($mode eq 'unsolicited') {
                is($res->{status}, 200, "$label: status 200");
                ok($res->{content} eq $m->{content}, "$label: the right body");
                like($res->{headers}{'x-cache'} // '', qr/^(?:HIT|MISS|ERROR)$/, "$label: X-Cache HIT, MISS or ERROR");
            }
            # the fake's own time to dribble the reply out (seconds of a
            # Python loop on a busy machine) is not the module's waiting
            my $sent = (($main::FAKE->stats->{split_send_ms} // 0) - ($st0->{split_send_ms} // 0)) / 1000;
            cmp_ok($res->{elapsed} - $sent, '<', $main::PROMPT,
                   "$label: answered within $main::PROMPT s of the fake's last byte (it wrote for "
                   . sprintf('%.2f', $sent) . " s), long before fly_redis_timeout ($main::TIMEOUT s): "
                   . "the reply was rejected, not waited for");
            $main::FAKE->set_mode();
            my $hit = main::poll_until($path, $size, 'HIT', ['MISS', 'ERROR'], 8, "$label: back to normal");
            ok($hit, "$label: back to normal, a HIT again") and
                ok($hit->{content} eq $m->{content}, "$label: the HIT is byte-identical");
            # arrays nested 9 deep are well-formed RESP that the reader
            # refuses (its limit is 7, as hiredis's): either is fine there
            unless ($mode eq 'deep') {
                my $st = $main::FAKE->stats;
                is($st->{after_bad} // 0, $st0->{after_bad} // 0,
                   "$label: the client sent nothing more on that connection");
                cmp_ok($st->{connections}, '>', $st0->{connections},
                       "$label: the client dropped the connection and connected again");
            }
        }
    }
}
my $log = $t->error_log_since('atl', $from);
like($log, qr/fly redis .*protocol error/, 'malformed replies are logged as protocol errors');
unlike($log, qr/fly redis .*timed out/, 'no command timed out: every bad reply was rejected when it came');
main::no_crash(\@pids, 'malformed replies');
