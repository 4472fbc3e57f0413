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
use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IPC::Open2 qw(open2);
use Time::HiRes qw(time sleep);

our $HOST = 'resp.test';       # keys are fly:http$HOST$uri
our $PROMPT = scaled(3);       # seconds: a bad reply is rejected within this
our $TIMEOUT = 5 * $PROMPT;    # fly_redis_timeout, seconds: far beyond $PROMPT
our %SEEN;                     # highest X-Origin-Count seen from the atl app
our @SPLITS = (1, 7, 4096, 70000);
our @SIZES = (0, 1, 1024, 32 * 1024, 200 * 1024);

# ---- the fake Redis, for the whole file -----------------------------------

our $CTL_DIR = tempdir('fake-redis-XXXXXX', TMPDIR => 1, CLEANUP => 1);
our $CTL = "$CTL_DIR/mode";
our ($FAKE_PID, $FAKE_PORT, $FAKE_OUT, $FAKE_IN);
{
    my $script = File::Spec->rel2abs(dirname(__FILE__) . '/app/fake_redis.py');
    $FAKE_PID = open2($FAKE_OUT, $FAKE_IN, '/usr/bin/python3', $script, '--control', $CTL);
    $FAKE_PORT = readline $FAKE_OUT;
    die "fake_redis.py did not start\n" unless defined $FAKE_PORT && $FAKE_PORT =~ /^(\d+)\s*$/;
    $FAKE_PORT = $1;
}
my $MAIN_PID = $$;
END {
    local $?;
    if ($FAKE_PID && $$ == $MAIN_PID) { kill 'TERM', $FAKE_PID; close $FAKE_IN; waitpid $FAKE_PID, 0 }
}

# How the fake answers from now on (see fake_redis.py): key => value.
sub set_mode {
    my (%m) = @_;
    open my $fh, '>', "$CTL.tmp" or die "$CTL.tmp: $!";
    print $fh map { "$_=$m{$_}\n" } sort keys %m;
    close $fh or die "$CTL.tmp: $!";
    rename "$CTL.tmp", $CTL or die "rename $CTL: $!";
}

# A FAKE command on a connection of our own (answered in one piece in
# every mode): the reply's value (integer or bulk string).
sub fake {
    my (@args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $FAKE_PORT, Proto => 'tcp', Timeout => scaled(5))
        or die "connect to the fake Redis: $!";
    print $s '*' . (@args + 1) . "\r\n\$4\r\nFAKE\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    my $line = <$s> // die "the fake Redis closed\n";
    $line =~ s/\r\n$//;
    my $v;
    if ($line =~ /^\$(\d+)$/) { read($s, $v, $1 + 2) == $1 + 2 or die "short read\n"; substr($v, -2) = '' }
    elsif ($line =~ /^[:+](.*)$/) { $v = $1 }
    else { die "FAKE @args: $line\n" }
    close $s;
    return $v;
}
sub fake_stats { my %s = map { split /=/, $_, 2 } split /\n/, fake('STATS'); \%s }

# ---- nginx -----------------------------------------------------------------

our $HTTP_CONFIG = sprintf <<"EOF", $TIMEOUT * 1000, scaled(5) * 1000;
fly_redis "redis://x:fake-password\@127.0.0.1:$FAKE_PORT/3";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_valid 200 60s;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub key_of { "fly:http$HOST$_[0]" }
sub bin { my ($size, $tag) = @_; "/bin?size=$size&k=$tag&Cache-Control=max-age%3D60" }

# (the client's timeout, scaled by the harness, is past fly_redis_timeout:
# a module that waited for it shows as slow, not as a client timeout)
sub get {
    my ($path) = @_;
    return send_request(method => 'GET', path => $path, region => 'atl', direct => 1,
                        headers => { Host => $HOST }, timeout => $TIMEOUT / time_scale() + 10);
}

sub app_count {
    my $res = HTTP::Tiny->new(timeout => scaled(5))->get(topology()->app_url('atl') . '/__count');
    return json_decode($res->{content})->{count};
}

sub show {
    my ($res) = @_;
    my $h = join '', map { "  $_: $res->{headers}{$_}\n" } grep { !ref $res->{headers}{$_} } sort keys %{$res->{headers} || {}};
    my $c = $res->{content} // '';
    diag("-> $res->{status} " . sprintf("in %.3fs, %d body bytes\n", $res->{elapsed} // -1, length $c) . $h
         . (length $c < 200 ? "  body: $c\n" : ''));
}

# The app's answer: 200, $size bytes whose sha256 is the app's, the app
# reached (X-Origin-Count moved on), X-Cache like $cache.
sub from_app {
    my ($res, $size, $cache, $label) = @_;
    my $ok = is($res->{status}, 200, "$label: status 200");
    $ok &= is(length $res->{content}, $size, "$label: $size body bytes");
    $ok &= is(sha256_hex($res->{content}), $res->{headers}{'x-body-sha256'} // '-', "$label: the app's bytes (sha256)");
    my $n = $res->{headers}{'x-origin-count'} // -1;
    $ok &= ok($n > ($SEEN{atl} // 0), "$label: the app was reached (X-Origin-Count $n)");
    $SEEN{atl} = $n if $n > ($SEEN{atl} // 0);
    $ok &= ref $cache ? like($res->{headers}{'x-cache'} // '', $cache, "$label: X-Cache like $cache")
                      : is($res->{headers}{'x-cache'}, $cache, "$label: X-Cache $cache");
    show($res) unless $ok;
    return $ok;
}

# A HIT: byte-identical to the MISS $m that stored it, the app not reached.
sub from_cache {
    my ($res, $m, $label, $before) = @_;
    my $ok = is($res->{status}, 200, "$label: status 200");
    $ok &= is($res->{headers}{'x-cache'}, 'HIT', "$label: X-Cache HIT");
    $ok &= ok($res->{content} eq $m->{content}, "$label: byte-identical body (" . length($res->{content}) . ' bytes)');
    $ok &= is(sha256_hex($res->{content}), $m->{headers}{'x-body-sha256'}, "$label: sha256 of the app's bytes");
    $ok &= is($res->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$label: the stored X-Origin-Count");
    $ok &= is(app_count(), $before, "$label: the app was not reached") if defined $before;
    show($res) unless $ok;
    return $ok;
}

# A MISS whose fill lands in the fake; returns the MISS.
sub fill {
    my ($path, $size, $label) = @_;
    my $m = get($path);
    from_app($m, $size, 'MISS', "$label: MISS");
    my $t = topology();
    ok($t->wait_until(sub { fake('HAS', key_of($path)) }, scaled(3)), "$label: the fill reached the fake Redis through SET");
    return $m;
}

# GETs until one has X-Cache $want, each a correct answer with X-Cache in
# $allowed or $want, for at most scaled($secs); returns it or undef.
sub poll_until {
    my ($path, $size, $want, $allowed, $secs, $label) = @_;
    $secs = scaled($secs);
    my $deadline = time + $secs;
    my %seen;
    while (time < $deadline) {
        my $res = get($path);
        my $x = $res->{headers}{'x-cache'} // '';
        $seen{$x}++;
        unless ($res->{status} == 200 && length($res->{content}) == $size
                && sha256_hex($res->{content}) eq ($res->{headers}{'x-body-sha256'} // '')
                && grep { $_ eq $x } @$allowed, $want) {
            fail("$label: unexpected answer while waiting for $want");
            show($res);
            return undef;
        }
        return $res if $x eq $want;
        sleep 0.05;
    }
    fail("$label: no $want within $secs s (saw " . join(', ', map { "$_ x$seen{$_}" } sort keys %seen) . ')');
    return undef;
}

# GETs of @paths in parallel, each on its own connection straight to atl's
# nginx (the harness's parallel_get); returns
# { path, status, headers, content, elapsed } in order.
sub par_get {
    my (@paths) = @_;
    return parallel_get(\@paths, region => 'atl', host => $HOST);
}

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
    main::set_mode(split => $split);
    for my $size (@main::SIZES) {
        my $label = "split $split, body $size";
        my $path = main::bin($size, "t1s$split");
        my $m = main::fill($path, $size, $label);
        my $before = main::app_count();
        main::from_cache(main::get($path), $m, "$label: HIT", $before);
    }
}
main::set_mode();
my $st = main::fake_stats();
ok($st->{auth} >= 1 && $st->{select} >= 1, "the client sent AUTH and SELECT (auth=$st->{auth}, select=$st->{select})");
main::no_crash(\@pids, 'split replies');


=== TEST 2: 20 parallel HITs of different keys, pipelined, several replies per write, split into 1, 7, 4096, 70000-byte chunks: each gets its own body
--- http_config_atl eval: $main::HTTP_CONFIG
--- config_atl eval: $main::CACHE
--- test
my @pids = sort $t->nginx_worker_pids('atl');
my @sizes = (0, 1, 2, 10, 100, 1000, 1023, 1024, 1025, 4095, 4096, 4097,
             16383, 16384, 16385, 32768, 32769, 65535, 65536, 70001);
main::set_mode();
my %miss;
for my $size (@sizes) {
    my $path = main::bin($size, 't2');
    $miss{$path} = main::fill($path, $size, "parallel, fill $size");
}
my @paths = sort keys %miss;
my $max_batch_before = main::fake_stats()->{max_batch};
for my $split (@main::SPLITS) {
    main::set_mode(split => $split, coalesce => int(scaled(30)));    # ms: the window to batch replies in
    my $before = main::app_count();
    my @res = main::par_get(@paths);
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
main::set_mode();
my $st = main::fake_stats();
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
        main::set_mode();
        my $m = main::fill($path, $size, "$label: before");
        main::set_mode(get => $mode, split => $split);
        my $res = main::get($path);
        main::from_app($res, $size, $want, $label);
        cmp_ok($res->{elapsed}, '<', $main::PROMPT, "$label: answered at once (within $main::PROMPT s; fly_redis_timeout is $main::TIMEOUT s)");
        main::set_mode(split => $split);
        my $hit = main::poll_until($path, $size, 'HIT', ['MISS'], 3, "$label: back to normal");
        ok($hit, "$label: back to normal, a HIT") and
            ok($hit->{content} eq $m->{content}, "$label: the HIT is byte-identical");
    }
}
main::set_mode();
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
            main::set_mode();
            my $m = main::fill($path, $size, "$label: before");
            my $st0 = main::fake_stats();
            main::set_mode(get => $mode, split => $split);
            my $res = main::get($path);
            # "unsolicited" sends the right reply first: a HIT is correct
            main::from_app($res, $size, qr/^(?:MISS|ERROR)$/, $label) if $mode ne 'unsolicited';
            if ($mode eq 'unsolicited') {
                is($res->{status}, 200, "$label: status 200");
                ok($res->{content} eq $m->{content}, "$label: the right body");
                like($res->{headers}{'x-cache'} // '', qr/^(?:HIT|MISS|ERROR)$/, "$label: X-Cache HIT, MISS or ERROR");
            }
            cmp_ok($res->{elapsed}, '<', $main::PROMPT,
                   "$label: answered within $main::PROMPT s, long before fly_redis_timeout ($main::TIMEOUT s): "
                   . "the reply was rejected, not waited for");
            main::set_mode();
            my $hit = main::poll_until($path, $size, 'HIT', ['MISS', 'ERROR'], 8, "$label: back to normal");
            ok($hit, "$label: back to normal, a HIT again") and
                ok($hit->{content} eq $m->{content}, "$label: the HIT is byte-identical");
            # arrays nested 9 deep are well-formed RESP that the reader
            # refuses (its limit is 7, as hiredis's): either is fine there
            unless ($mode eq 'deep') {
                my $st = main::fake_stats();
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
