package FlyEdge::Load;

# A load generator for the benches that run against the three-region bed
# (t/bench/faults, t/bench/soak): client processes sending a mix of cache
# HITs, MISSes, reads and writes through the replay emulator, each answer
# classified as the app's own or not.  POD at the end of the file.

use strict;
use warnings;

use Carp qw(croak);
use HTTP::Tiny;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

# The mix: kind => weight.  hot: GET of one of a few cacheable URIs (HITs
# once warm); miss: GET of a cacheable URI never asked before (a MISS and a
# fill); read: GET /posts/<id> (cached 2 s, invalidated by writes); write:
# PUT /posts/<id> (replayed to the primary from a replica region).
our %MIX = (hot => 50, miss => 20, read => 15, write => 15);
our $HOT_KEYS = 20;

# new(topology => $t, dir => DIR, clients => N, post_ids => [...],
#     regions => [...], mix => {...}, timeout => SECS)
sub new {
    my ($class, %o) = @_;
    my $t = $o{topology} or croak "topology needed";
    my $self = bless {
        t        => $t,
        dir      => $o{dir} || $t->dir . '/load',
        clients  => $o{clients} || 6,
        post_ids => $o{post_ids} || [],
        regions  => $o{regions} || [$t->regions],
        mix      => $o{mix} || {%MIX},
        timeout  => $o{timeout} || 30,
        pids     => [],
    }, $class;
    mkdir $self->{dir};
    croak "writes need post_ids" if $self->{mix}{write} && !@{$self->{post_ids}};
    return $self;
}

# The URI of a hot key, and the body the app answers it with.
sub hot_uri { my ($i) = @_; "/hdr?k=hot$i&body=hot$i&Cache-Control=max-age%3D3600" }

# warm(): every hot key asked once in every region (straight to nginx),
# then until each answers HIT; returns true when all did within `secs`.
sub warm {
    my ($self, $secs) = @_;
    my $t = $self->{t};
    my $ua = HTTP::Tiny->new(timeout => 10);
    my $deadline = time + ($secs // 30);
    for my $r (@{$self->{regions}}) {
        for my $i (0 .. $HOT_KEYS - 1) {
            my $url = $t->nginx_url($r) . hot_uri($i);
            until (($ua->get($url)->{headers}{'x-cache'} // '') eq 'HIT') {
                return 0 if time > $deadline;
                sleep 0.02;
            }
        }
    }
    return 1;
}

sub start {
    my ($self) = @_;
    croak "already running" if @{$self->{pids}};
    for my $c (1 .. $self->{clients}) {
        my $pid = fork() // croak "fork: $!";
        if ($pid == 0) {
            my $rc = eval { $self->_client($c); 0 } // do { print STDERR "load client $c: $@"; 1 };
            POSIX::_exit($rc);
        }
        push @{$self->{pids}}, $pid;
    }
    $self->{started} = time;
}

# stop(): every client ends its request in hand, then exits.
sub stop {
    my ($self) = @_;
    kill 'TERM', @{$self->{pids}};
    my $deadline = time + $self->{timeout} + 10;
    for my $pid (@{$self->{pids}}) {
        while (waitpid($pid, WNOHANG) == 0) {
            if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); last }
            sleep 0.05;
        }
    }
    $self->{pids} = [];
}

sub DESTROY { my ($self) = @_; $self->stop if $self->{pids} && @{$self->{pids}} }

sub _pick {
    my ($mix) = @_;
    my $total = 0;
    $total += $_ for values %$mix;
    my $x = rand($total);
    for my $k (sort keys %$mix) {
        return $k if ($x -= $mix->{$k}) < 0;
    }
    return (sort keys %$mix)[0];
}

sub _client {
    my ($self, $c) = @_;
    my $stop = 0;
    $SIG{TERM} = sub { $stop = 1 };
    $SIG{$_} = 'DEFAULT' for qw(INT HUP QUIT);
    srand($$ ^ int(time * 1000));
    my $t = $self->{t};
    open my $out, '>', "$self->{dir}/client-$c.tsv" or die "$self->{dir}/client-$c.tsv: $!";
    $out->autoflush(1);
    # one keep-alive client per region (the emulator's port "near" it)
    my %ua = map { $_ => HTTP::Tiny->new(timeout => $self->{timeout}, keep_alive => 1, max_redirect => 0,
                                         agent => "fly-edge-load/$c") } @{$self->{regions}};
    my %base = map { $_ => $t->emulator_url($_) } @{$self->{regions}};
    my @posts = @{$self->{post_ids}};
    my $seq = 0;
    until ($stop) {
        my $r = $self->{regions}[int rand @{$self->{regions}}];
        my $kind = _pick($self->{mix});
        my ($method, $path, %args, $want);
        if ($kind eq 'hot') {
            my $i = int rand $HOT_KEYS;
            ($method, $path, $want) = ('GET', hot_uri($i), "hot$i");
        } elsif ($kind eq 'miss') {
            $seq++;
            my $k = "m$c-$$-$seq";
            ($method, $path, $want) = ('GET', "/hdr?k=$k&body=$k&Cache-Control=max-age%3D60", $k);
        } elsif ($kind eq 'read') {
            ($method, $path) = ('GET', '/posts/' . $posts[int rand @posts]);
        } else {
            $seq++;
            ($method, $path) = ('PUT', '/posts/' . $posts[int rand @posts]);
            %args = (headers => { 'Content-Type' => 'application/json' },
                     content => qq({"title":"load $c $seq","body":"from $r"}));
        }
        my $t0 = time;
        my $res = $ua{$r}->request($method, $base{$r} . $path, \%args);
        my $t1 = time;
        my $h = $res->{headers} || {};
        my $body_ok = !defined $want ? '-'
                    : !defined $h->{'x-app-region'} ? '-'
                    : ($res->{content} // '') eq $want ? 1 : 0;
        my $why = $res->{status} == 599 ? ($res->{content} // '') : '-';
        $why =~ s/\s+/ /g;
        $why = substr($why, 0, 120);
        print $out join("\t", sprintf('%.4f', $t0), sprintf('%.4f', $t1), $c, $r, $kind, $res->{status},
            $h->{'x-app-region'} // '-', $h->{'fly-emulator-region'} // '-', $h->{'x-cache'} // '-',
            $h->{'fly-emulator-error'} // '-', $body_ok, $why), "\n";
    }
    close $out;
    return 0;
}

# each_record(sub { my ($rec) = @_; ... }): every answer recorded so far, as
# a hash: t0 t1 client region kind status app answered cache emu body_ok why,
# plus `class`: app (the app's own answer: it carries X-App-Region, whatever
# its status), reset (no HTTP answer: the connection failed), emulator (the
# replay emulator's own error), nginx (any other answer without X-App-Region:
# nginx's or the module's), and wrong_body (the app's answer, but not the
# body that URI always has).
sub each_record {
    my ($self, $cb) = @_;
    for my $f (glob "$self->{dir}/client-*.tsv") {
        open my $in, '<', $f or next;
        while (my $line = <$in>) {
            next unless $line =~ /\n\z/;     # a line being written
            chomp $line;
            my %r;
            @r{qw(t0 t1 client region kind status app answered cache emu body_ok why)} = split /\t/, $line;
            $r{class} = classify(\%r);
            $cb->(\%r);
        }
    }
}

sub classify {
    my ($r) = @_;
    return 'reset' if $r->{status} == 599;
    return 'emulator' if $r->{emu} ne '-';
    return 'nginx' if $r->{app} eq '-';
    return 'wrong_body' if $r->{body_ok} eq '0';
    return 'app';
}

1;

__END__

=head1 NAME

FlyEdge::Load - mixed load through the replay emulator, every answer classified

=head1 SYNOPSIS

    my $load = FlyEdge::Load->new(topology => $t, clients => 6, post_ids => \@ids);
    $load->warm(30) or die "cache did not warm";
    $load->start;
    ...                       # faults, reloads, samples
    $load->stop;
    $load->each_record(sub { my ($rec) = @_; $count{$rec->{class}}++ });

=head1 DESCRIPTION

C<clients> processes (forked; each stops by PID with SIGTERM after the
request in hand) loop until stopped: each picks a region at random, sends
to the emulator's port near that region, and picks a request by C<%MIX>:

    hot    GET /hdr?k=hotN&body=hotN&Cache-Control=max-age%3D3600  (N < 20)
    miss   GET /hdr?k=<unique>&body=<unique>&Cache-Control=max-age%3D60
    read   GET /posts/<id>
    write  PUT /posts/<id>   (JSON; replayed to the primary from a replica region)

Every answer is a line of F<DIR/client-N.tsv>: start and end time, client,
region, kind, status, X-App-Region, fly-emulator-region, X-Cache,
fly-emulator-error, whether a hot/miss body is the one the URI has, and the
reason of a failed connection.  The demo app puts X-App-Region on every
answer it makes (and a HIT carries the stored one), so an answer without it
was made by nginx or the module (or the emulator, which says so).

=cut
