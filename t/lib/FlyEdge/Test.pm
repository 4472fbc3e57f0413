package FlyEdge::Test;

# Data-driven integration tests for fly-edge, in the spirit of OpenResty's
# Test::Nginx (written from scratch on Test::Base, Test::More and HTTP::Tiny).
# The block format is documented in the POD at the end of this file.

use strict;
use warnings;

use Test::Base ();
use Test::More ();
use FlyEdge::Topology;
use HTTP::Tiny;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use Carp qw(croak);
use IO::Socket::INET;

my @EXPORTS = qw(run_tests topology send_request parallel_get block_error_log json_decode
                 json_encode current_block cookie_jar time_scale scaled);

our $T;                 # the topology of this test file
our $BLOCK;             # the block being run
our %BLOCK_STATE;       # per-block: ua, jar, log offsets
our @EXEMPT;            # [region, from, to, block name, exempt?] ranges of the error logs
our $DEFAULT_LOG_WAIT = 3;     # seconds, scaled()
our $LIVE;              # the topology runs (run_tests(start => 0) only renders and runs nginx -t)

my @BAD_LOG_PATTERNS = ('[alert]', '[emerg]', 'AddressSanitizer', 'runtime error:');

sub import {
    my $caller = caller;
    no strict 'refs';
    *{"${caller}::$_"} = \&{"FlyEdge::Test::$_"} for @EXPORTS;
    @_ = ('Test::Base');
    goto &Test::Base::import;    # Test::More functions, blocks(), filters, strict
}

sub topology      { $T }

# How much slower this run may be than a plain one: FLY_TEST_TIME_SCALE (the
# Makefile sets it for the sanitizer pass), at least 1.  Every bound a test
# puts on how long something may take is scaled($seconds), and so is every
# deadline of a poll and every client timeout (the harness scales its own:
# --- timeout, --- max_elapsed, --- log_wait, send_request's and
# parallel_get's timeout).
sub time_scale    { FlyEdge::Topology::time_scale() }
sub scaled        { FlyEdge::Topology::scaled($_[0]) }
sub current_block { $BLOCK }
sub cookie_jar    { $BLOCK_STATE{jar} }
sub json_decode   { JSON::PP->new->allow_nonref->decode($_[0]) }
sub json_encode   { JSON::PP->new->canonical->allow_nonref->encode($_[0]) }

# ------------------------------------------------------------------ the runner

# run_tests(%topology_options): start the topology (unless every block is a
# must_die block), run every block, check the error logs, done_testing.
sub run_tests {
    my (%opt) = @_;
    Test::More::plan('no_plan');    # counted automatically; also tells Test::Base a plan exists
    my @blocks = Test::Base::blocks();
    my $start = delete $opt{start} // 1;
    my $live = $start && grep { !exists $_->{must_die} } @blocks;
    $LIVE = $live;
    my $ok = eval {
        $T = FlyEdge::Topology->new(%opt);
        if ($live) {
            my ($first) = grep { !exists $_->{must_die} } @blocks;
            $T->start(block_spec($first));
        }
        1;
    };
    unless ($ok) {
        Test::More::fail('topology started');
        Test::More::diag($@);
        Test::More::done_testing();
        return;
    }
    for my $block (@blocks) {
        local $BLOCK = $block;
        local %BLOCK_STATE;
        my $name = $block->name;
        eval { run_block($block); 1 } or do {
            Test::More::fail("$name - ran to the end");
            Test::More::diag("died: $@");
        };
    }
    if ($live) {
        $T->stop_nginx;    # gracefully: what workers log while exiting is checked too
        check_error_logs();
    }
    Test::More::done_testing();
    $T->stop;
}

sub _section {
    my ($block, $name) = @_;
    return exists $block->{$name} ? scalar $block->$name : undef;
}

# The configuration spec of every region for a block (Topology::configure's argument).
sub block_spec {
    my ($block) = @_;
    my %spec;
    for my $r ($T ? $T->regions : @FlyEdge::Topology::REGIONS) {
        my %s;
        for my $k (qw(main_config http_config config)) {
            my $v = _section($block, "${k}_$r") // _section($block, $k);
            $s{$k} = $v if defined $v;
        }
        my $env = _section($block, "env_$r") // _section($block, 'env');
        $s{env} = parse_env($env) if defined $env;
        $spec{$r} = \%s;
    }
    return %spec;
}

sub parse_env {
    my ($text) = @_;
    return $text if ref $text eq 'HASH';
    my %env;
    for my $line (split /\n/, $text) {
        next unless $line =~ /\S/;
        if ($line =~ /^\s*!\s*(\w+)\s*$/) { $env{$1} = undef }
        elsif ($line =~ /^\s*(\w+)=(.*)$/) { $env{$1} = $2 }
        else { croak "bad env line '$line' (NAME=value or !NAME)" }
    }
    return \%env;
}

sub block_region { my ($block) = @_; my $r = _section($block, 'region'); defined $r && length $r ? $r : 'scl' }

sub run_block {
    my ($block) = @_;
    my $name = $block->name;
    my $region = block_region($block);
    check_eval_errors($block);
    # `--- wait` used to sleep after the requests: a fixed sleep before a
    # check is a race on a slow machine.  Expected log lines are polled for
    # (--- error_log); anything else is polled for in --- test.
    croak "--- wait is not supported: poll for the condition (--- error_log waits for its lines; "
        . "in --- test use \$t->wait_until(sub { ... }, scaled(SECS)))" if exists $block->{wait};

    if (exists $block->{must_die}) {
        my %spec = block_spec($block);
        my ($rc, $out) = $T->nginx_t($spec{$region}, region => $region);
        Test::More::ok($rc != 0, "$name - nginx -t fails") or Test::More::diag($out);
        check_patterns($block, $out, 'error_log', 'no_error_log', "nginx -t output", 0);
        return;
    }

    if ($LIVE) {
        $T->heal;     # whatever an earlier block stopped or paused runs again
        $T->configure(block_spec($block));
    }
    my %offset = map { $_ => $T->error_log_size($_) } $T->regions;
    $BLOCK_STATE{offset} = \%offset;
    $BLOCK_STATE{jar} = FlyEdge::Test::CookieJar->new if exists $block->{cookie_jar};

    my @requests = block_requests($block);
    croak "requests need a running topology (run_tests(start => 0) was used)" if @requests && !$LIVE;
    my @responses;
    my $delay = _section($block, 'request_delay');
    for my $i (0 .. $#requests) {
        sleep $delay if $delay && $i > 0;
        my $req = $requests[$i];
        sleep $req->{sleep_before} if $req->{sleep_before};
        my $res = send_request(%$req);
        push @responses, $res;
        check_response($block, $res, $i, scalar @requests);
    }

    if (defined(my $code = _section($block, 'test'))) {
        my $sub = eval "package main; sub { my (\$t, \$block, \$responses) = \@_; my \$res = \$responses->[-1];\n#line 1 \"--- test of '$name'\"\n$code\n}"
            or croak "--- test of '$name' does not compile: $@";
        $sub->($T, $block, \@responses);
    }

    # error log expectations, per region
    for my $r ($T->regions) {
        my @suffixes = ("_$r");
        push @suffixes, '' if $r eq $region;
        for my $sfx (@suffixes) {
            my $want = _section($block, "error_log$sfx");
            my $dont = _section($block, "no_error_log$sfx");
            next unless defined $want || defined $dont;
            my $get = sub { $T->error_log_since($r, $offset{$r}) };
            check_patterns($block, $get, "error_log$sfx", "no_error_log$sfx", "error log of $r",
                           scaled(_section($block, 'log_wait') // $DEFAULT_LOG_WAIT));
        }
    }

    my $exempt = exists $block->{allow_alerts} || grep {
        my $v = _section($block, $_);
        defined $v && grep { my $p = $_; grep { index(ref $p ? "$p" : $p, $_) >= 0 } ('alert', 'emerg', 'AddressSanitizer', 'runtime error') }
                           (ref $v eq 'ARRAY' ? @$v : $v)
    } grep { /^error_log/ } keys %$block;
    for my $r ($T->regions) {
        push @EXEMPT, [$r, $offset{$r}, $T->error_log_size($r), $name, $exempt] if $LIVE;
    }
}

# Test::Base's eval filter turns a compile error into the section's value.
sub check_eval_errors {
    my ($block) = @_;
    my $map = $block->{_section_map}[0] || {};
    for my $sec (keys %$map) {
        next unless ($map->{$sec}{filters} // '') =~ /\beval\b/;
        my $v = $block->{$sec}[0];
        croak "--- $sec eval failed: $v" if defined $v && !ref $v && $v =~ /at \(eval \d+\) line \d+/;
    }
}

# ------------------------------------------------------------------ requests

# The requests of a block: `--- request` (or `--- requests`) is a string
# "METHOD /path\nbody", or (eval) an array of such strings and/or hashes
# { method, path, body, headers => {..}|[..]|"Name: v\n..", region, direct,
#   chunked, route, sleep_before }.
sub block_requests {
    my ($block) = @_;
    my $spec = _section($block, 'request') // _section($block, 'requests');
    return () unless defined $spec;
    my @list = ref $spec eq 'ARRAY' ? @$spec : ($spec);
    my $more = _section($block, 'more_headers');
    my @out;
    for my $i (0 .. $#list) {
        my $item = $list[$i];
        my %req = ref $item eq 'HASH' ? %$item : parse_request_text($item);
        my $mh = ref $more eq 'ARRAY' ? $more->[$i] : $more;
        $req{headers} = [ @{_headers_list($mh)}, @{_headers_list($req{headers})} ];
        $req{region} //= block_region($block);
        $req{direct} //= exists $block->{direct} ? 1 : 0;
        $req{chunked} //= exists $block->{chunked_body} ? 1 : 0;
        $req{route} //= _section($block, 'route');
        push @out, \%req;
    }
    return @out;
}

sub parse_request_text {
    my ($text) = @_;
    croak "empty --- request" unless defined $text && $text =~ /\S/;
    $text =~ s/\A\s*\n//;
    my ($line, $body) = split /\r?\n/, $text, 2;
    my ($method, $path) = $line =~ /^\s*([A-Z][A-Z0-9_-]*)\s+(\S+)(?:\s+HTTP\/1\.[01])?\s*$/
        or croak "bad request line '$line' (want: METHOD /path)";
    if (defined $body) { $body =~ s/\r?\n\z// } else { $body = '' }
    return (method => $method, path => $path, body => $body);
}

sub _headers_list {
    my ($h) = @_;
    return [] unless defined $h;
    return [map { @$_ } map { [$_, $h->{$_}] } sort keys %$h] if ref $h eq 'HASH';
    return [@$h] if ref $h eq 'ARRAY';
    my @out;
    for my $line (split /\n/, $h) {
        next unless $line =~ /\S/;
        my ($n, $v) = $line =~ /^\s*([^:\s]+)\s*:\s?(.*?)\s*$/ or croak "bad header line '$line'";
        push @out, $n, $v;
    }
    return \@out;
}

# send_request(method => 'GET', path => '/x', region => 'atl', headers => {...} (Host allowed),
#              body => '...', direct => 0, chunked => 0, route => 'port'|'header', timeout => 10)
# (timeout: seconds, scaled)
# Sends through the replay emulator (the port "near" region, or with
# route => 'header' the main port plus `fly-prefer-region: <region>`), or
# straight to the region's nginx with direct => 1.  %%PLACEHOLDERS%% are
# substituted.  Returns HTTP::Tiny's response plus {elapsed} (seconds).

# parallel_get(\@paths, region => R, host => H, timeout => S): one HTTP/1.0
# GET per path, each on its own connection straight to R's nginx, all
# connected first and then sent at once (so they are in flight together).
# Returns, in the order of @paths, { path, status, headers (lower-case
# names), content, elapsed }; status 0 and elapsed undef when the answer did
# not end before the timeout (S seconds, default 15, scaled: a guard against
# a hang, not a bound to assert).
sub parallel_get {
    my ($paths, %o) = @_;
    require IO::Select;
    my $port = $T->nginx_port($o{region} // 'scl');
    my $host = $o{host} // 'localhost';
    my $sel = IO::Select->new;
    my (@c, %by_fd);
    for my $p (@$paths) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => scaled(5))
            or die "connect to nginx: $!";
        my $c = { sock => $s, buf => '', t0 => time, path => $p };
        push @c, $c;
        $by_fd{fileno $s} = $c;
    }
    for my $c (@c) {
        syswrite($c->{sock}, "GET $c->{path} HTTP/1.0\r\nHost: $host\r\n\r\n") or die "write: $!";
        $c->{sock}->blocking(0);
        $sel->add($c->{sock});
    }
    my $deadline = time + scaled($o{timeout} // 15);
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(0.05)) {
            my $c = $by_fd{fileno $s};
            my $got = sysread($s, my $chunk, 262144);
            next if !defined $got && ($!{EAGAIN} || $!{EWOULDBLOCK});
            if ($got) { $c->{buf} .= $chunk; next }
            $c->{elapsed} = time - $c->{t0};
            $sel->remove($s);
            close $s;
        }
    }
    close $_ for $sel->handles;
    my @out;
    for my $c (@c) {
        my ($head, $body) = split /\r\n\r\n/, $c->{buf}, 2;
        my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d{3})};
        my %h;
        for my $line (split /\r\n/, $head // '') {
            $h{lc $1} = $2 if $line =~ /^([^:]+):\s*(.*)$/;
        }
        push @out, { path => $c->{path}, status => $status // 0, headers => \%h, content => $body // '',
                     elapsed => $c->{elapsed} };
    }
    return @out;
}

sub send_request {
    my (%req) = @_;
    my $r = $req{region} // 'scl';
    my $method = $req{method} // 'GET';
    my $path = $T->substitute($r, $req{path} // '/');
    my $base = $req{direct}                      ? $T->nginx_url($r)
             : ($req{route} // '') eq 'header'   ? $T->emulator_url
             :                                     $T->emulator_url($r);
    my @h = @{_headers_list($req{headers})};
    push @h, 'fly-prefer-region', $r if !$req{direct} && ($req{route} // '') eq 'header';
    my %headers;
    while (my ($n, $v) = splice @h, 0, 2) {
        $v = $T->substitute($r, $v);
        if (exists $headers{$n}) { $headers{$n} = [ref $headers{$n} ? @{$headers{$n}} : $headers{$n}, $v] }
        else { $headers{$n} = $v }
    }
    my %args = (headers => \%headers);
    my $body = $req{body};
    $body = $T->substitute($r, $body) if defined $body && !$req{raw_body};
    if (defined $body && (length $body || $method =~ /^(POST|PUT|PATCH)$/)) {
        if ($req{chunked}) {
            my @pieces = $body =~ /(.{1,32768})/gs;
            $args{content} = sub { shift @pieces };
        } else {
            $args{content} = $body;
        }
    }
    # the client timeout only guards against a hang: generous, and scaled
    my $ua = $req{ua} || ($BLOCK_STATE{ua}{$req{timeout} // ''} //= FlyEdge::Test::UA->new(
        timeout => scaled($req{timeout} // ($BLOCK ? _section($BLOCK, 'timeout') : undef) // 10),
        max_redirect => 0, keep_alive => 1, agent => 'fly-edge-test/1',
        ($BLOCK_STATE{jar} ? (cookie_jar => $BLOCK_STATE{jar}) : ())));
    my $t0 = time;
    my $res = $ua->request($method, $base . $path, \%args);
    $res->{elapsed} = time - $t0;
    $res->{content} //= '';
    $res->{request} = { %req, url => $base . $path, method => $method };
    return $res;
}

sub _header_value {
    my ($res, $name) = @_;
    my $v = $res->{headers}{lc $name};
    return undef unless defined $v;
    return ref $v ? join(', ', @$v) : $v;
}

sub _pick {
    my ($v, $i) = @_;
    return ref $v eq 'ARRAY' ? $v->[$i] : $v;
}

sub check_response {
    my ($block, $res, $i, $n) = @_;
    my $name = $block->name . ($n > 1 ? " - request " . ($i + 1) : '');
    my $r = $res->{request}{region};
    my $sub = sub { $T->substitute($r, $_[0]) };
    my $shown;
    my $show = sub {
        return if $shown++;
        my $h = join '', map { my $k = $_; map { "  $k: $_\n" } ref $res->{headers}{$k} ? @{$res->{headers}{$k}} : $res->{headers}{$k} }
                sort keys %{$res->{headers}};
        my $c = $res->{content} // '';
        $c = substr($c, 0, 600) . '...' if length $c > 600;
        Test::More::diag("$res->{request}{method} $res->{request}{url} -> $res->{status} $res->{reason}\n${h}  body: $c");
    };

    if (defined(my $code = _pick(_section($block, 'error_code'), $i))) {
        Test::More::is($res->{status}, $sub->($code), "$name - status $code") or $show->();
    }
    if (defined(my $who = _pick(_section($block, 'answered_by'), $i))) {
        Test::More::is(_header_value($res, 'fly-emulator-region'), $who, "$name - answered by $who") or $show->();
    }
    for my $sec (qw(response_headers response_headers_like)) {
        my $spec = _pick(_section($block, $sec), $i);
        next unless defined $spec;
        for my $line (ref $spec eq 'ARRAY' ? @$spec : split /\n/, $spec) {
            next unless $line =~ /\S/;
            if ($line =~ /^\s*!\s*([^:\s]+)\s*$/) {
                Test::More::ok(!defined _header_value($res, $1), "$name - no $1 header") or $show->();
                next;
            }
            my ($h, $v) = $line =~ /^\s*([^:\s]+)\s*:\s?(.*?)\s*$/ or croak "bad --- $sec line '$line'";
            my $got = _header_value($res, $h);
            if ($sec eq 'response_headers') {
                Test::More::is($got, $sub->($v), "$name - header $h") or $show->();
            } else {
                my $re = $sub->($v);
                Test::More::like($got // '', qr/$re/, "$name - header $h like /$re/") or $show->();
            }
        }
    }
    if (defined(my $want = _pick(_section($block, 'response_body'), $i))) {
        Test::More::is($res->{content}, $sub->($want), "$name - body") or $show->();
    }
    if (defined(my $want = _pick(_section($block, 'response_body_like'), $i))) {
        my $re = ref $want eq 'Regexp' ? $want : do { (my $w = $sub->($want)) =~ s/\n\z//; qr/$w/s };
        Test::More::like($res->{content}, $re, "$name - body like") or $show->();
    }
    if (defined(my $max = _pick(_section($block, 'max_elapsed'), $i))) {
        my $bound = scaled($max);
        Test::More::cmp_ok($res->{elapsed}, '<=', $bound, "$name - answered within ${bound}s");
    }
}

# ------------------------------------------------------------------ logs

sub _patterns {
    my ($v) = @_;
    return () unless defined $v;
    my @items = ref $v eq 'ARRAY' ? @$v : ref $v eq 'Regexp' ? ($v) : split /\n/, $v;
    my @out;
    for my $p (@items) {
        next unless defined $p;
        if (!ref $p) {
            next unless $p =~ /\S/;
            if ($p =~ m{^\s*qr[^\w\s]}) {
                my $re = eval $p;
                croak "bad pattern $p: $@" unless ref $re eq 'Regexp';
                $p = $re;
            } else {
                $p =~ s/^\s+|\s+$//g;
            }
        }
        push @out, $p;
    }
    return @out;
}

sub _matches { my ($text, $p) = @_; ref $p ? $text =~ $p : index($text, $p) >= 0 }

# Check `want` patterns appear (polling up to $wait seconds when $text is a
# sub) and `dont` patterns do not.
sub check_patterns {
    my ($block, $text, $want_sec, $dont_sec, $what, $wait) = @_;
    my $name = $block->name;
    my $region = block_region($block);
    my @want = map { ref $_ ? $_ : $T->substitute($region, $_) } _patterns(_section($block, $want_sec));
    my @dont = map { ref $_ ? $_ : $T->substitute($region, $_) } _patterns(_section($block, $dont_sec));
    my $get = ref $text eq 'CODE' ? $text : sub { $text };
    my $content = $get->();
    if (@want && ref $text eq 'CODE') {
        my $deadline = time + $wait;
        while (grep { !_matches($content, $_) } @want) {
            last if time > $deadline;
            sleep 0.05;
            $content = $get->();
        }
    }
    my $failed;
    for my $p (@want) {
        Test::More::ok(_matches($content, $p), "$name - $what has " . (ref $p ? "/$p/" : "'$p'")) or $failed++;
    }
    for my $p (@dont) {
        my $ok = !_matches($content, $p);
        Test::More::ok($ok, "$name - $what lacks " . (ref $p ? "/$p/" : "'$p'")) or do {
            $failed++;
            my @l = grep { _matches($_, $p) } split /\n/, $content;
            Test::More::diag("  $_") for @l[0 .. ($#l < 4 ? $#l : 4)];
        };
    }
    Test::More::diag(_interesting($content)) if $failed;
}

# The lines of a debug log worth showing: everything above [debug], and the last debug lines.
sub _interesting {
    my ($log) = @_;
    my @lines = grep { m{^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[} } split /\n/, $log;
    my @top = grep { !/\[debug\]/ } @lines;
    @top = @top[-40 .. -1] if @top > 40;
    my @dbg = grep { /\[debug\]/ } @lines;
    @dbg = @dbg[-15 .. -1] if @dbg > 15;
    return join '', "  (log lines other than debug, then the last debug lines)\n",
        map { "  $_\n" } @top, (@dbg ? ('...') : ()), @dbg;
}

# block_error_log([$region]): what the region's error log got since this block began.
sub block_error_log {
    my ($r) = @_;
    $r //= block_region($BLOCK);
    return $T->error_log_since($r, $BLOCK_STATE{offset}{$r} // 0);
}

# At the end of a file: no region's error log (or nginx's stderr) holds an
# [alert], [emerg] or sanitizer report, except in blocks that expected one.
sub check_error_logs {
    for my $r ($T->regions) {
        my @bad;
        for my $file ($T->error_log_path($r), $T->nginx_stderr_path($r)) {
            open my $fh, '<', $file or next;
            my $pos = 0;
            while (my $line = <$fh>) {
                my $at = $pos;
                $pos = tell $fh;
                next unless grep { index($line, $_) >= 0 } @BAD_LOG_PATTERNS;
                my ($range) = grep { $_->[0] eq $r && $at >= $_->[1] && $at < $_->[2] } @EXEMPT;
                next if $file eq $T->error_log_path($r) && $range && $range->[4];
                chomp $line;
                push @bad, ($range ? "[$range->[3]] " : '') . $line;
            }
        }
        Test::More::ok(!@bad, "error log of $r has no [alert], [emerg], AddressSanitizer or runtime error: report")
            or Test::More::diag(join '', map { "  $_\n" } @bad[0 .. ($#bad < 19 ? $#bad : 19)]);
    }
}

# ------------------------------------------------------------------ the client

# HTTP::Tiny that lets a request set its own Host header (cache keys include it).
package FlyEdge::Test::UA;
our @ISA = ('HTTP::Tiny');

sub _prepare_headers_and_cb {
    my ($self, $request, $args, @rest) = @_;
    my $host;
    if ($args->{headers}) {
        my %h = %{$args->{headers}};
        for my $k (grep { lc $_ eq 'host' } keys %h) { $host = delete $h{$k} }
        $args = { %$args, headers => \%h };
    }
    my @r = $self->SUPER::_prepare_headers_and_cb($request, $args, @rest);
    $request->{headers}{host} = $host if defined $host;
    return @r;
}

# ------------------------------------------------------------------ cookies

package FlyEdge::Test::CookieJar;

use Time::Local qw(timegm);

my %MON = (jan => 0, feb => 1, mar => 2, apr => 3, may => 4, jun => 5,
           jul => 6, aug => 7, sep => 8, oct => 9, nov => 10, dec => 11);

sub new { bless { cookies => {} }, shift }

# HTTP::Tiny calls add($url, $set_cookie) for every Set-Cookie it receives.
sub add {
    my ($self, $url, $header) = @_;
    my ($pair, @attrs) = split /;\s*/, $header;
    my ($name, $value) = $pair =~ /^\s*([^=]+?)\s*=\s*(.*?)\s*$/ or return;
    my %c = (value => $value, path => '/');
    for my $a (@attrs) {
        my ($k, $v) = $a =~ /^\s*([^=]+?)\s*(?:=\s*(.*?))?\s*$/ or next;
        $k = lc $k;
        if ($k eq 'max-age' && defined $v && $v =~ /^-?\d+$/) { $c{expires} = time + $v; $c{max_age} = 1 }
        elsif ($k eq 'expires' && !$c{max_age} && defined $v) { my $e = _http_date($v); $c{expires} = $e if defined $e }
        elsif ($k eq 'path' && defined $v && $v =~ m{^/}) { $c{path} = $v }
        else { $c{lc $k} = $v // 1 }
    }
    if (defined $c{expires} && $c{expires} <= time) { delete $self->{cookies}{$name} }
    else { $self->{cookies}{$name} = \%c }
    return 1;
}

sub cookie_header {
    my ($self, $url) = @_;
    my ($path) = $url =~ m{^\w+://[^/]+(/[^?#]*)?} ;
    $path = '/' unless defined $path && length $path;
    my @out;
    for my $name (sort keys %{$self->{cookies}}) {
        my $c = $self->{cookies}{$name};
        next if defined $c->{expires} && $c->{expires} <= time;
        my $p = $c->{path};
        next unless $path eq $p || index($path, $p eq '/' ? '/' : "$p/") == 0 || $p eq '/';
        push @out, "$name=$c->{value}";
    }
    return join '; ', @out;
}

# cookie($name): the value of a live cookie; attrs($name): all it came with.
sub cookie { my ($s, $n) = @_; my $c = $s->{cookies}{$n}; return undef if !$c || (defined $c->{expires} && $c->{expires} <= time); $c->{value} }
sub attrs  { my ($s, $n) = @_; $s->{cookies}{$n} }
sub set    { my ($s, $n, $v, %a) = @_; $s->{cookies}{$n} = { value => $v, path => '/', %a } }
sub clear  { my ($s) = @_; $s->{cookies} = {} }

sub _http_date {
    my ($s) = @_;
    my ($d, $mon, $y, $H, $M, $S) = $s =~ /(\d{1,2})[ -]([A-Za-z]{3})[ -](\d{2,4}) (\d\d):(\d\d):(\d\d)/ or return undef;
    $y += 1900 if $y < 100;
    my $m = $MON{lc $mon} // return undef;
    return eval { timegm($S, $M, $H, $d, $m, $y) };
}

1;

__END__

=head1 NAME

FlyEdge::Test - data-driven integration tests for fly-edge

=head1 SYNOPSIS

    use FlyEdge::Test;
    run_tests();                 # or run_tests(pg => 0) to skip PostgreSQL
    __DATA__

    === TEST 1: POST in atl is replayed to scl
    --- http_config
    fly_replay on;
    --- request
    POST /posts
    {"title":"x"}
    --- more_headers
    Content-Type: application/json
    --- region: atl
    --- error_code: 201
    --- answered_by: scl
    --- response_headers
    X-App-Region: scl
    !fly-replay
    --- response_body_like: "region": "scl"
    --- error_log_atl
    qr/replay.*scl/

Run with C<prove -I t/lib t/NNN-name.t>.  C<FLY_TEST_KEEP=1> keeps the
temp directory (it is also kept, and named, when a test fails);
C<FLY_TEST_VERBOSE=1> shows the processes started.

=head1 HOW A FILE RUNS

run_tests(%options) builds a L<FlyEdge::Topology> (options go to its new():
C<pg =E<gt> 0> etc.), starts it (only when some block is not C<must_die>, and
not with C<start =E<gt> 0>, for files that only run C<nginx -t>),
then for each block: starts again whatever an earlier block stopped or paused
(Topology's heal()), renders each region's configuration from the block and
reloads the regions whose configuration changed (SIGHUP, waits until the new
generation is live with new workers only), sends the requests, checks the
answers, runs C<--- test> code, checks the error logs.  At the end it stops
nginx gracefully and asserts that no region's error log (nor nginx's stderr) contains C<[alert]>,
C<[emerg]>, C<AddressSanitizer> or C<runtime error:> outside blocks that
expected them, and calls done_testing (no plan to count).  A block that dies
fails with the reason and the file goes on.

=head1 TIMING

The suite runs on slow and busy machines too (2 cores shared with other
jobs; the sanitizer pass sets C<FLY_TEST_TIME_SCALE=4>).  C<time_scale()> is
that factor (at least 1), C<scaled($secs)> is C<$secs * time_scale()>.

=over

=item *

Prefer an event to the clock: the status, X-Cache, the app's X-Origin-Count
or C</__count>, a log line, a Redis key.

=item *

Where a test must tell "waited for a configured timeout" from "did not
wait", the bound is seconds and scaled (C<scaled(2)>), and the configured
timeout is at least 5 times the bound (derive it from the bound).

=item *

Never sleep and then assert: poll for the condition with a scaled deadline,
C<$t-E<gt>wait_until(sub { ... }, scaled(5))>; it returns as soon as the
condition holds.

=item *

Timeouts that only guard against a hang (client timeouts, the topology's
start/reload/stop waits) are generous and scaled.

=back

=head1 SECTIONS

Test::Base syntax: C<--- name> then lines, or C<--- name: value> on one line;
C<--- name eval> evaluates the section as Perl (arrays for several requests,
exact bytes); C<--- name chomp> drops the last newline.  C<--- ONLY>,
C<--- SKIP>, C<--- LAST> work as in Test::Base.

=head2 Configuration

=over

=item --- main_config, --- http_config, --- config

Snippets for nginx's main context, the C<http> block and the C<server> block,
for every region.  Default C<config>: C<location / { proxy_pass http://app; }>.
C<upstream app> (the region's demo app, keepalive) is always defined.  The
snippets are files of their own (F<conf/main.conf>, F<conf/http.conf>,
F<conf/server.conf>), so nginx names them with the line within the snippet.

=item --- config_scl, --- config_ord, --- config_atl (and main_/http_config_REGION)

Per-region replacement of the snippet.

=item --- env

C<NAME=value> lines and C<!NAME> (unset) for nginx's environment (and
C<env_REGION>).  For live blocks a change restarts that nginx.

=item Placeholders

C<%%NAME%%> anywhere in snippets, requests, headers and expectations, e.g.
C<%%APP_PORT%%>, C<%%REDIS_PORT%%>, C<%%REDIS_PRIMARY_PORT%%>,
C<%%REDIS_PASSWORD%%>, C<%%NGINX_PORT_SCL%%>, C<%%PG_PORT%%>,
C<%%REGION%%> (full list in L<FlyEdge::Topology/VARIABLES>).  Each is also an
environment variable of nginx, readable with the module's C<${NAME}>.  They
take the values of the block's region (of each region for snippets).

=back

=head2 Requests

=over

=item --- request

    POST /posts
    {"title":"x"}

First line C<METHOD /path>, the rest is the body (its last newline dropped).
With C<eval>: a string, or an array of strings and/or hashes
C<{ method, path, body, headers, region, direct, chunked, route, sleep_before }>
sent in order on one keep-alive connection (and one cookie jar).

=item --- more_headers

C<Name: value> lines (or, with eval, an array: one entry per request).
C<Host> may be set too.

=item --- region: atl

The region the client is near (default C<scl>): requests go to the
emulator's port for that region.  Also the region of C<--- error_log>.

=item --- route: header

Send to the emulator's main port with C<fly-prefer-region: REGION> instead.

=item --- direct

Straight to the region's nginx, bypassing the emulator (no replay).

=item --- chunked_body

Send the body with chunked transfer encoding (no Content-Length).

=item --- cookie_jar

The block's requests share a cookie jar (Max-Age/Expires honoured); in
C<--- test> code C<cookie_jar()-E<gt>cookie('name')>.

=item --- request_delay: 0.2, --- timeout: 10

Pause between requests (to space them, never to wait for a condition);
client timeout (seconds, default 10, multiplied by C<time_scale()>: it
guards against a hang and is never what a test asserts).

=back

=head2 Expectations

Scalars apply to every request; with C<eval>, an array holds one value per
request (C<undef> skips).

=over

=item --- error_code: 201

=item --- answered_by: scl

The emulator's C<fly-emulator-region> header: which region's nginx answered.

=item --- response_headers

C<Name: value> exact (repeated headers joined with C<, >), C<!Name> absent.

=item --- response_headers_like

C<Name: regex>, C<!Name> absent.

=item --- response_body, --- response_body_like

Exact body (use C<chomp> or C<eval> for bodies without a final newline) /
regex (C</s>).

=item --- max_elapsed: 5

The answer took at most C<scaled(5)> seconds.  Only for telling "did not
wait for a timeout" from "waited": the timeout in question must be at least
5 times C<scaled(N)>.  Prefer checking an event (a status, a log line, the
app's X-Origin-Count).

=item --- error_log, --- no_error_log

Lines that must (not) appear in the error log of the block's region during
the block (for C<must_die>: in nginx -t's output).  A plain line is a
substring, a line starting C<qr> (C<qr/.../>, C<qr{...}m>) a regex; C<eval> may give an array of strings and
qr//.  Expected lines are polled for up to C<scaled(--- log_wait: SECS)>
(default 3); C<no_error_log> lines are checked once after that.
C<--- error_log_scl> / C<_ord> / C<_atl> (and C<no_error_log_*>) name a
region.  A block whose error_log expects C<[alert]>/C<[emerg]>/sanitizer
text, or that has C<--- allow_alerts>, is exempt from the end-of-file check.

=item --- must_die

C<nginx -t> of the block's configuration (region of C<--- region>) must
fail; C<--- error_log> lines must be in its output, e.g.
C<qr/server\.conf:2/>.  Nothing is started for a file of must_die blocks only.

=item --- wait

Not supported (a block using it fails): a fixed sleep before a check is a
race on a slow machine.  Poll for the condition instead: C<--- error_log>
waits for its lines; in C<--- test>, C<$t-E<gt>wait_until(sub { ... },
scaled(5))> waits until the Redis key exists, the status changes, etc.

=item --- test

Perl run after the requests, in package main, with C<$t> (the topology),
C<$block>, C<$responses> (array of HTTP::Tiny responses, each with
C<elapsed> and C<request>) and C<$res> (the last).  Test::More functions and
C<send_request(%req)>, C<block_error_log($region)>, C<json_decode>,
C<cookie_jar()>, C<topology()> are available, e.g.

    --- test
    my $a = send_request(method => 'GET', path => '/posts', region => 'atl');
    is($a->{headers}{'x-cache'}, 'MISS');
    $t->stop_redis('atl');
    my $b = send_request(path => '/posts', region => 'atl');
    is($b->{status}, 200);
    $t->start_redis('atl');

=back

=cut
