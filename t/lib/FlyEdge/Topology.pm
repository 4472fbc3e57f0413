package FlyEdge::Topology;

# The local multi-region test bed of fly-edge: Redis, PostgreSQL, the demo app,
# nginx with the module, and the fly-replay emulator, for three regions on
# 127.0.0.1.  POD at the end of the file.

use strict;
use warnings;

use Carp qw(croak);
use Config;
use Cwd qw(abs_path);
use Digest::SHA qw(sha1_hex);
use Fcntl qw(:flock);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken refaddr);
use Time::HiRes qw(time sleep);

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');
our @REGIONS = qw(scl ord atl);
our $PRIMARY = 'scl';
our $PG_BIN = '/usr/lib/postgresql/15/bin';
our $NGINX = $ENV{FLY_EDGE_NGINX} || '/usr/sbin/nginx';
our $PYTHON = '/usr/bin/python3';
our $APP_NAME = 'fly-edge-test';
our $DB_NAME = 'fly_demo';

my %LIVE;          # refaddr => weakened topology, for END and signal handlers
my $PORT_LOCK_DIR = '/tmp/fly-edge-port-locks';

# How much slower this run may be than a plain one (FLY_TEST_TIME_SCALE, at
# least 1; the sanitizer pass sets 4).  Every wait of the topology (start,
# reload, stop, a command) only guards against a hang, so it is generous
# and multiplied by this.  FlyEdge::Test exports the same as time_scale()
# and scaled().
sub time_scale { my $s = $ENV{FLY_TEST_TIME_SCALE}; defined $s && $s =~ /^\d+(?:\.\d+)?$/ && $s >= 1 ? $s : 1 }
sub scaled     { $_[-1] * time_scale() }    # scaled($secs), also $t->scaled($secs)

# ------------------------------------------------------------------ construction

sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        regions   => $opt{regions} || [@REGIONS],
        primary   => $opt{primary} || $PRIMARY,
        want      => {
            redis    => $opt{redis}    // 1,
            pg       => $opt{pg}       // 1,
            app      => $opt{app}      // 1,
            nginx    => $opt{nginx}    // 1,
            emulator => $opt{emulator} // 1,
        },
        keep      => $opt{keep} // $ENV{FLY_TEST_KEEP},
        module    => $opt{module} // ($ENV{FLY_EDGE_MODULE} || "$ROOT/build/ngx_http_fly_edge_module.so"),
        template  => $opt{nginx_template},      # a full nginx.conf template instead of the skeleton
        workers   => $opt{worker_processes} || 2,
        verbose   => $opt{verbose} // $ENV{FLY_TEST_VERBOSE},
        say       => $opt{say},                 # progress callback (the demo prints)
        owner_pid => $$,
        procs     => {},
        ports     => {},
        port_locks => [],
        gen       => {},
        spec      => {},
        started   => 0,
        stopped   => 0,
        is_root   => $> == 0,
    }, $class;
    $self->{module} = abs_path($self->{module}) // $self->{module} if -e $self->{module};
    my $base = $opt{dir_base} || $ENV{FLY_TEST_TMPDIR} || '/tmp';
    $self->{dir} = $opt{dir} || tempdir('fly-edge-XXXXXX', DIR => $base);
    make_path($self->{dir});
    chmod 0755, $self->{dir};    # postgres and nginx workers must traverse it
    $self->{password} = $opt{password} || substr(sha1_hex(rand() . $$ . time), 0, 24);
    $self->_allocate_ports;
    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};
    return $self;
}

sub _allocate_ports {
    my ($self) = @_;
    my $p = $self->{ports};
    for my $r (@{$self->{regions}}) {
        $p->{"nginx_$r"}    = $self->_free_port;
        $p->{"control_$r"}  = $self->_free_port;
        $p->{"app_$r"}      = $self->_free_port;
        $p->{"redis_$r"}    = $self->_free_port;
        $p->{"emulator_$r"} = $self->_free_port;
    }
    $p->{pg_primary} = $self->_free_port;
    $p->{pg_replica} = $self->_free_port;
    $p->{emulator}   = $self->_free_port;
}

# A port below the kernel's ephemeral range (so outgoing connections cannot take
# it meanwhile) that binds now, locked with flock so that parallel test files
# (prove -j) never pick the same one.
sub _free_port {
    my ($self) = @_;
    my ($lo) = eval { open my $f, '<', '/proc/sys/net/ipv4/ip_local_port_range' or die; split ' ', scalar <$f> };
    $lo ||= 32768;
    my ($min, $max) = $lo > 12000 ? (10000, $lo - 1) : (61000, 65000);
    unless (-d $PORT_LOCK_DIR) {
        mkdir $PORT_LOCK_DIR;
        chmod 01777, $PORT_LOCK_DIR;
    }
    for (1 .. 500) {
        my $port = $min + int(rand($max - $min));
        next if $self->{used_port}{$port}++;
        my $lock = "$PORT_LOCK_DIR/$port";
        open(my $fh, '>>', $lock) or next;
        chmod 0666, $lock;
        flock($fh, LOCK_EX | LOCK_NB) or next;
        my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                         Proto => 'tcp', ReuseAddr => 1, Listen => 1) or next;
        close $sock;
        push @{$self->{port_locks}}, $fh;
        return $port;
    }
    croak "no free port found";
}

# reserve_port(): a port of that range, locked the same way for as long as
# this process runs, for a test's own listener or for a port on which
# nothing may listen (the kernel never hands it out to a port-0 listener).
my %RESERVED = (used_port => {}, port_locks => []);
sub reserve_port { _free_port(\%RESERVED) }

# ------------------------------------------------------------------ accessors

sub dir            { $_[0]{dir} }
sub regions        { @{$_[0]{regions}} }
sub replica_regions { my $s = shift; grep { $_ ne $s->{primary} } @{$s->{regions}} }
sub primary_region { $_[0]{primary} }
sub password       { $_[0]{password} }
sub redis_password { $_[0]{password} }
sub module_path    { $_[0]{module} }
sub has_module     { -f $_[0]{module} }
sub app_name       { $APP_NAME }
sub machine_id     { my ($s, $r) = @_; substr(sha1_hex("fly-edge-machine-$r"), 0, 14) }

sub _region {
    my ($self, $r) = @_;
    $r //= $self->{primary};
    croak "unknown region '$r'" unless grep { $_ eq $r } @{$self->{regions}};
    return $r;
}

sub nginx_port    { my ($s, $r) = @_; $s->{ports}{'nginx_' . $s->_region($r)} }
sub control_port  { my ($s, $r) = @_; $s->{ports}{'control_' . $s->_region($r)} }
sub app_port      { my ($s, $r) = @_; $s->{ports}{'app_' . $s->_region($r)} }
sub redis_port    { my ($s, $r) = @_; $s->{ports}{'redis_' . $s->_region($r)} }
sub nginx_url     { my ($s, $r) = @_; 'http://127.0.0.1:' . $s->nginx_port($r) }
sub app_url       { my ($s, $r) = @_; 'http://127.0.0.1:' . $s->app_port($r) }
sub redis_url     { my ($s, $r) = @_; "redis://x:$s->{password}\@127.0.0.1:" . $s->redis_port($r) . '/0' }

# emulator_port() is the main port (default region); emulator_port($r) the
# port whose clients are "near" region $r.
sub emulator_port {
    my ($s, $r) = @_;
    return $s->{ports}{emulator} unless defined $r;
    return $s->{ports}{'emulator_' . $s->_region($r)};
}
sub emulator_url  { my ($s, $r) = @_; 'http://127.0.0.1:' . $s->emulator_port($r) }

sub pg_port {
    my ($s, $r) = @_;
    return $s->_region($r) eq $s->{primary} ? $s->{ports}{pg_primary} : $s->{ports}{pg_replica};
}
sub pg_primary_port { $_[0]{ports}{pg_primary} }
sub pg_replica_port { $_[0]{ports}{pg_replica} }
sub database_url  { my ($s, $r) = @_; 'postgresql://postgres@127.0.0.1:' . $s->pg_port($r) . "/$DB_NAME" }
sub pg_dsn        { my ($s, $r, $db) = @_; "dbi:Pg:dbname=" . ($db // $DB_NAME) . ";host=127.0.0.1;port=" . $s->pg_port($r) }

sub nginx_prefix  { my ($s, $r) = @_; "$s->{dir}/nginx-" . $s->_region($r) }
sub error_log_path { my ($s, $r) = @_; $s->nginx_prefix($r) . '/logs/error.log' }
sub access_log_path { my ($s, $r) = @_; $s->nginx_prefix($r) . '/logs/access.log' }
sub nginx_stderr_path { my ($s, $r) = @_; $s->nginx_prefix($r) . '/logs/stderr.log' }
sub app_log_path  { my ($s, $r) = @_; "$s->{dir}/app-" . $s->_region($r) . '.log' }
sub redis_log_path { my ($s, $r) = @_; "$s->{dir}/redis-" . $s->_region($r) . '.log' }
sub emulator_log_path { "$_[0]{dir}/emulator.log" }

sub error_log {
    my ($s, $r) = @_;
    return _slurp($s->error_log_path($r)) // '';
}
sub error_log_size { my ($s, $r) = @_; -s $s->error_log_path($r) // 0 }
sub error_log_since {
    my ($s, $r, $offset) = @_;
    open my $fh, '<', $s->error_log_path($r) or return '';
    seek $fh, $offset // 0, 0;
    local $/;
    return scalar(<$fh>) // '';
}

# The variables of a region: exported to its nginx's environment (for the
# module's ${VAR} syntax) and available as %%NAME%% placeholders.
sub vars {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    my $p = $self->{primary};
    my %v = (
        REGION              => $r,
        FLY_REGION          => $r,
        PRIMARY_REGION      => $p,
        FLY_APP_NAME        => $APP_NAME,
        FLY_MACHINE_ID      => $self->machine_id($r),
        REDIS_PASSWORD      => $self->{password},
        REDIS_PORT          => $self->redis_port($r),
        REDIS_PRIMARY_PORT  => $self->redis_port($p),
        REDIS_URL           => $self->redis_url($r),
        REDIS_PRIMARY_URL   => $self->redis_url($p),
        PG_PORT             => $self->pg_port($r),
        PG_PRIMARY_PORT     => $self->pg_primary_port,
        DATABASE_URL        => $self->database_url($r),
        PRIMARY_DATABASE_URL => $self->database_url($p),
        APP_PORT            => $self->app_port($r),
        NGINX_PORT          => $self->nginx_port($r),
        EMULATOR_PORT       => $self->emulator_port,
        PREFIX              => $self->nginx_prefix($r),
        SERVROOT            => $self->{dir},
        HTML_DIR            => $self->nginx_prefix($r) . '/html',
        MODULE_PATH         => $self->{module},
        ROOT                => $ROOT,
    );
    for my $o (@{$self->{regions}}) {
        my $U = uc $o;
        $v{"REDIS_PORT_$U"} = $self->redis_port($o);
        $v{"PG_PORT_$U"}    = $self->pg_port($o);
        $v{"APP_PORT_$U"}   = $self->app_port($o);
        $v{"NGINX_PORT_$U"} = $self->nginx_port($o);
        $v{"EMULATOR_PORT_$U"} = $self->emulator_port($o);
        $v{"MACHINE_ID_$U"} = $self->machine_id($o);
    }
    return \%v;
}

# Replace every %%NAME%% by the region's value; an unknown name dies.
sub substitute {
    my ($self, $r, $text) = @_;
    return $text unless defined $text;
    my $v = $self->vars($r);
    $text =~ s{%%([A-Z0-9_]+)%%}{
        exists $v->{$1} ? $v->{$1} : croak "unknown placeholder %%$1%% (known: " . join(' ', sort keys %$v) . ")"
    }ge;
    return $text;
}

# ------------------------------------------------------------------ processes

my %PRCTL = (x86_64 => 157, aarch64 => 167);

sub _spawn {
    my ($self, $name, %o) = @_;
    my @cmd = @{$o{cmd}};
    my $log = $o{log} or croak "no log for $name";
    my ($uid, $gid) = $o{user} ? (getpwnam($o{user}))[2, 3] : ();
    croak "no user $o{user}" if $o{user} && !defined $uid;
    my $pid = fork() // croak "fork: $!";
    if ($pid == 0) {
        eval {
            POSIX::setpgid(0, 0);
            open STDIN, '<', '/dev/null';
            open STDOUT, '>>', $log or die "$log: $!";
            open STDERR, '>&', \*STDOUT;
            if (defined $uid) {
                $( = $gid; $) = "$gid $gid";
                $< = $> = $uid;
                die "cannot become $o{user}" unless $> == $uid;
            }
            # die with the harness even when it is SIGKILLed
            my ($arch) = $Config{archname} =~ /^(\w+?)-/;
            syscall($PRCTL{$arch}, 1, $o{pdeathsig} || 15) if $arch && $PRCTL{$arch};
            $ENV{$_} = $o{env}{$_} for keys %{$o{env} || {}};
            chdir($o{cwd} || $self->{dir});
            exec { $cmd[0] } @cmd;
            die "exec $cmd[0]: $!";
        };
        print STDERR "spawn $name: $@";
        POSIX::_exit(127);
    }
    $self->{procs}{$name} = { pid => $pid, name => $name, sig => $o{sig} || 'TERM',
                              log => $log, cmd => \@cmd, opts => \%o };
    $self->_say("started $name (pid $pid)") if $self->{verbose};
    return $pid;
}

# Run a command to completion; returns (exit code, output).
sub _run {
    my ($self, $name, %o) = @_;
    my $out = "$self->{dir}/run-$name.out";
    unlink $out;
    open my $tmp, '>', $out or croak "$out: $!";
    close $tmp;
    chown((getpwnam($o{user}))[2, 3], $out) if $o{user};
    my $pid = $self->_spawn("run-$name", %o, log => $out);
    my $deadline = time + scaled($o{timeout} || 60);
    my $rc;
    while (1) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid) { $rc = $? >> 8; $rc = 128 + ($? & 127) if $? & 127; last }
        if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); $rc = -1; last }
        sleep 0.01;
    }
    delete $self->{procs}{"run-$name"};
    my $output = _slurp($out) // '';
    croak "$name failed (exit $rc): @{$o{cmd}}\n$output" if $o{check} && $rc != 0;
    return ($rc, $output);
}

sub _alive {
    my ($self, $name) = @_;
    my $p = $self->{procs}{$name} or return 0;
    return 0 if $p->{exited};
    my $w = waitpid($p->{pid}, WNOHANG);
    if ($w == $p->{pid} || $w == -1) {
        $p->{exited} = 1;
        $p->{status} = $?;
        return 0;
    }
    return 1;
}

sub pid { my ($s, $name) = @_; my $p = $s->{procs}{$name}; $p && !$p->{exited} ? $p->{pid} : undef }

# Stop services by name, all at once, by PID: their signal, then KILL after a grace period.
sub _stop_procs {
    my ($self, @names) = @_;
    my @live;
    for my $name (@names) {
        my $p = $self->{procs}{$name} or next;
        next unless $self->_alive($name);
        if ($p->{paused}) { $p->{pg_paused} ? _signal_pg('CONT', $p->{pid}) : kill 'CONT', $p->{pid} }
        kill $p->{sig}, $p->{pid};
        push @live, $p;
    }
    my $deadline = time + scaled(10);
    while (@live && time < $deadline) {
        @live = grep { $self->_alive($_->{name}) } @live;
        sleep 0.01 if @live;
    }
    for my $p (@live) {
        warn "# $p->{name} (pid $p->{pid}) did not stop, killing it\n";
        kill 'KILL', $p->{pid};
        waitpid($p->{pid}, 0);
        $p->{exited} = 1;
    }
    delete $self->{procs}{$_} for @names;
}

sub _say {
    my ($self, $msg) = @_;
    if ($self->{say}) { $self->{say}->($msg) }
    elsif ($self->{verbose}) { print STDERR "# $msg\n" }
}

sub _tail {
    my ($file, $n) = @_;
    my $text = _slurp($file) // return "($file: missing)";
    my @l = split /\n/, $text;
    @l = @l[-$n .. -1] if @l > $n;
    return join('', map { "#   $_\n" } @l);
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    local $/;
    my $c = <$fh>;
    return $c // '';
}

sub _write {
    my ($file, $text) = @_;
    open my $fh, '>', "$file.tmp" or croak "$file: $!";
    print $fh $text;
    close $fh or croak "$file: $!";
    rename "$file.tmp", $file or croak "$file: $!";
}

# Wait for several conditions at once: each is [description, service name or
# undef, sub returning true when ready].  Dies naming what did not happen
# after scaled($timeout) seconds.
sub _wait_all {
    my ($self, $timeout, @checks) = @_;
    $timeout = scaled($timeout);
    my $deadline = time + $timeout;
    my $nap = 0.01;
    while (@checks) {
        my @left;
        for my $c (@checks) {
            my ($desc, $svc, $test) = @$c;
            if (defined $svc && !$self->_alive($svc)) {
                my $p = $self->{procs}{$svc};
                croak "$svc exited while waiting for $desc (status " . ($p->{status} // '?') . "); log $p->{log}:\n"
                    . _tail($p->{log}, 30);
            }
            my $ok = eval { $test->() };
            die $@ if ref $@ eq 'FlyEdge::Topology::Fatal';
            push @left, $c unless $ok;
        }
        @checks = @left;
        last unless @checks;
        if (time > $deadline) {
            croak "timed out after ${timeout}s waiting for: " . join(', ', map { $_->[0] } @checks) . "\n"
                . join('', map { defined $_->[1] && $self->{procs}{$_->[1]}
                                 ? "# $_->[1] log:\n" . _tail($self->{procs}{$_->[1]}{log}, 20) : '' } @checks);
        }
        sleep $nap;
        $nap = 0.1 if ($nap *= 1.5) > 0.1;
    }
    return 1;
}

# Poll $test until it returns true (returns its value) or $timeout seconds
# pass (returns false).  The caller scales $timeout (scaled(5)); the
# default is scaled(10).
sub wait_until {
    my ($self, $test, $timeout) = @_;
    my $deadline = time + ($timeout // scaled(10));
    my $nap = 0.005;
    while (1) {
        my $v = eval { $test->() };
        return $v if $v;
        return undef if time > $deadline;
        sleep $nap;
        $nap = 0.1 if ($nap *= 1.5) > 0.1;
    }
}

sub _port_open {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1)
        or return 0;
    close $s;
    return 1;
}

sub _http_get {
    my ($url, $timeout) = @_;
    return HTTP::Tiny->new(timeout => scaled($timeout || 2), keep_alive => 0, max_redirect => 0)->get($url);
}

# ------------------------------------------------------------------ start / stop

# start(%initial_nginx_spec): start everything selected in new().  The nginx
# spec is as for configure(): (region => {main_config, http_config, config, env}, ...)
# or a single {..} applied to every region via `all => {...}`.
sub start {
    my ($self, %spec) = @_;
    croak "already started" if $self->{started}++;
    my $t0 = time;
    $self->_install_signal_handlers;
    my @checks;
    push @checks, $self->_spawn_redis_all if $self->{want}{redis};
    push @checks, $self->_spawn_apps if $self->{want}{app};
    if ($self->{want}{nginx}) {
        for my $r (@{$self->{regions}}) {
            $self->{spec}{$r} = $self->_region_spec($r, %spec);
            push @checks, $self->_spawn_nginx($r);
        }
    }
    push @checks, $self->_spawn_emulator if $self->{want}{emulator};
    $self->_setup_pg if $self->{want}{pg};    # the slow, sequential part
    push @checks, $self->_pg_replica_check if $self->{want}{pg};
    $self->_wait_all(30, @checks);
    $self->_say(sprintf "topology up in %.1fs (%s)", time - $t0, $self->{dir});
    return $self;
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped} || $$ != $self->{owner_pid};
    $self->{stopped} = 1;
    local ($?, $!, $@);
    my @order = (
        [grep { /^(emulator|pause-)/ } keys %{$self->{procs}}],
        [grep { /^nginx-/ } keys %{$self->{procs}}],
        [grep { /^app-/ } keys %{$self->{procs}}],
        [grep { /^(redis-|pg-|run-)/ } keys %{$self->{procs}}],
    );
    $self->_stop_procs(@$_) for @order;
    $self->_stop_procs(keys %{$self->{procs}});
    close $_ for @{$self->{port_locks}};
    $self->{port_locks} = [];
    delete $LIVE{refaddr $self};
    my $passing = eval { require Test::Builder; Test::Builder->new->is_passing } // 1;
    if ($self->{keep} || !$passing) {
        print STDERR "# fly-edge test directory kept: $self->{dir}\n" unless $self->{keep_quiet};
    } else {
        remove_tree($self->{dir});
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->stop unless $self->{stopped};
}

END {
    local $?;
    for my $t (values %LIVE) {
        $t->stop if $t && $t->{owner_pid} == $$;
    }
}

my $handlers_installed;
sub _install_signal_handlers {
    return if $handlers_installed++;
    for my $sig (qw(INT TERM HUP QUIT)) {
        my $prev = $SIG{$sig};
        next if ref $prev eq 'CODE';   # the caller handles it (e.g. the demo)
        $SIG{$sig} = sub {
            for my $t (values %LIVE) { $t->stop if $t && $t->{owner_pid} == $$ }
            $SIG{$sig} = 'DEFAULT';
            kill $sig, $$;
            exit 128 + 2;
        };
    }
}

# heal(): start again (or resume) whatever a test stopped or paused, so the
# next test begins with the whole topology running.  Returns what it fixed.
sub heal {
    my ($self) = @_;
    my @fixed;
    my @regions = @{$self->{regions}};
    if ($self->{want}{redis}) {
        # the primary first: restarted replicas then sync from it
        for my $r ($self->{primary}, grep { $_ ne $self->{primary} } @regions) {
            my $p = $self->{procs}{"redis-$r"};
            if ($p && $p->{paused} && $self->_alive("redis-$r")) { $self->resume_redis($r); push @fixed, "redis-$r resumed" }
            next if $self->_alive("redis-$r");
            $self->start_redis($r);
            push @fixed, "redis-$r";
        }
    }
    if ($self->{want}{pg}) {
        for my $w (qw(primary replica)) {
            my $p = $self->{procs}{"pg-$w"};
            if ($p && $p->{paused} && $self->_alive("pg-$w")) { $self->resume_pg($w); push @fixed, "pg-$w resumed" }
            next if $self->_alive("pg-$w");
            $self->start_pg($w);
            push @fixed, "pg-$w";
        }
        if ($self->{pg_replay_paused}) { $self->resume_pg_replay; push @fixed, 'pg replay resumed' }
    }
    if ($self->{want}{app}) {
        for my $r (@regions) { next if $self->_alive("app-$r"); $self->start_app($r); push @fixed, "app-$r" }
    }
    if ($self->{want}{nginx}) {
        for my $r (@regions) { next if $self->_alive("nginx-$r"); $self->start_nginx($r); push @fixed, "nginx-$r" }
    }
    return @fixed;
}

# ------------------------------------------------------------------ Redis

sub _redis_cmdline {
    my ($self, $r) = @_;
    my $dir = "$self->{dir}/redis-$r";
    make_path($dir);
    my @cmd = ('/usr/bin/redis-server',
        '--port', $self->redis_port($r), '--bind', '127.0.0.1', '--protected-mode', 'no',
        '--daemonize', 'no', '--dir', $dir, '--logfile', '', '--loglevel', 'notice',
        '--requirepass', $self->{password}, '--masterauth', $self->{password},
        '--save', '', '--appendonly', 'no',
        '--maxmemory', '64mb', '--maxmemory-policy', 'volatile-lru', '--replica-ignore-maxmemory', 'no',
        '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0',
        '--enable-debug-command', 'local');
    if ($r ne $self->{primary}) {
        push @cmd, '--replicaof', '127.0.0.1', $self->redis_port($self->{primary}),
                   '--replica-read-only', 'no';
    }
    return \@cmd;
}

sub _spawn_redis {
    my ($self, $r) = @_;
    my $name = "redis-$r";
    $self->_spawn($name, cmd => $self->_redis_cmdline($r), log => $self->redis_log_path($r), sig => 'TERM');
    return ["redis $r", $name, sub {
        my $c = $self->_redis_client($r, 1) or return 0;
        return 0 unless eval { $c->ping };
        return 1 if $r eq $self->{primary};
        return $c->info('replication')->{master_link_status} eq 'up';
    }];
}

sub _spawn_redis_all {
    my ($self) = @_;
    return map { $self->_spawn_redis($_) } @{$self->{regions}};
}

sub _redis_client {
    my ($self, $r, $fresh) = @_;
    require Redis;
    delete $self->{redis}{$r} if $fresh;
    return $self->{redis}{$r} //= Redis->new(
        server => '127.0.0.1:' . $self->redis_port($r), password => $self->{password},
        cnx_timeout => scaled(1), read_timeout => scaled(5), write_timeout => scaled(5), reconnect => 0);
}

# redis($region): a Redis.pm client of that region's Redis (reconnects after stop/start).
sub redis {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    my $c = $self->{redis}{$r};
    return $c if $c && eval { $c->ping };
    return $self->_redis_client($r, 1);
}

# redis_cli($region, @args): run redis-cli against that region's Redis;
# returns the output (chomped) in scalar context, its lines in list context.
sub redis_cli {
    my ($self, $r, @args) = @_;
    my ($rc, $out) = $self->_run('redis-cli', cmd => ['/usr/bin/redis-cli', '-h', '127.0.0.1',
        '-p', $self->redis_port($r), '-a', $self->{password}, '--no-auth-warning', @args], timeout => 30);
    chomp $out;
    return wantarray ? split(/\n/, $out) : $out;
}

sub stop_redis {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    delete $self->{redis}{$r};
    $self->_stop_procs("redis-$r");
}

# start_redis($region): start it again on the same port; waits until it
# answers and, for a replica, until its link to the primary is up (when the
# primary runs).
sub start_redis {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    croak "redis $r already runs" if $self->_alive("redis-$r");
    my $check = $self->_spawn_redis($r);
    if ($r ne $self->{primary} && !$self->_alive("redis-$self->{primary}")) {
        $check->[2] = sub { eval { $self->_redis_client($r, 1)->ping } };
    }
    $self->_wait_all(20, $check);
    # replicas reconnect to a restarted primary by themselves; wait for that
    if ($r eq $self->{primary}) {
        $self->_wait_all(20, map { my $o = $_; ["redis $o link up", "redis-$o",
            sub { $self->_redis_client($o, 1)->info('replication')->{master_link_status} eq 'up' }] }
            grep { $self->_alive("redis-$_") } $self->replica_regions);
    }
}

# pause_redis($region [, $seconds]): SIGSTOP the server (it accepts connections
# but never answers); SIGCONT after $seconds if given, else at resume_redis().
sub pause_redis {
    my ($self, $r, $secs) = @_;
    $r = $self->_region($r);
    my $p = $self->{procs}{"redis-$r"} or croak "redis $r does not run";
    kill 'STOP', $p->{pid};
    $p->{paused} = 1;
    delete $self->{redis}{$r};
    if (defined $secs) {
        my $pid = fork() // croak "fork: $!";
        if ($pid == 0) {
            sleep $secs;
            kill 'CONT', $p->{pid};
            POSIX::_exit(0);
        }
        $self->{procs}{"pause-$r-$pid"} = { pid => $pid, name => "pause-$r-$pid", sig => 'TERM', log => '/dev/null' };
    }
}

sub resume_redis {
    my ($self, $r) = @_;
    my $p = $self->{procs}{'redis-' . $self->_region($r)} or croak "redis $r does not run";
    kill 'CONT', $p->{pid};
    $p->{paused} = 0;
}

# redis_debug_sleep($region, $seconds): DEBUG SLEEP in the background (the
# server blocks for that long); returns once the server sleeps (see
# redis_asleep), dies if it does not begin to.
sub redis_debug_sleep {
    my ($self, $r, $secs) = @_;
    $r = $self->_region($r);
    my $name = "pause-debug-$r-" . int(rand(1e9));
    $self->_spawn($name, cmd => ['/usr/bin/redis-cli', '-h', '127.0.0.1', '-p', $self->redis_port($r),
        '-a', $self->{password}, '--no-auth-warning', 'DEBUG', 'SLEEP', $secs],
        log => "$self->{dir}/redis-debug.log");
    $self->_wait_all(10, ["redis $r in DEBUG SLEEP", "redis-$r", sub { $self->redis_asleep($r) }]);
}

# redis_asleep($region): true while that Redis is inside DEBUG SLEEP (or
# another sleep): its main thread waits in nanosleep, not in epoll_wait
# (Linux /proc: wchan, or the syscall number where wchan says nothing).
my %NANOSLEEP = (x86_64 => [35, 230], aarch64 => [101, 115]);
sub redis_asleep {
    my ($self, $r) = @_;
    my $pid = $self->pid('redis-' . $self->_region($r)) or return 0;
    my $wchan = _slurp("/proc/$pid/wchan") // '';
    return 1 if $wchan =~ /nanosleep/;
    return 0 if $wchan =~ /[a-z]/;
    my ($arch) = $Config{archname} =~ /^(\w+?)-/;
    my ($nr) = (_slurp("/proc/$pid/syscall") // '') =~ /^(\d+)/;
    return defined $nr && $arch && grep({ $_ == $nr } @{$NANOSLEEP{$arch} || []}) ? 1 : 0;
}

# ------------------------------------------------------------------ PostgreSQL

sub _pg_user { $_[0]{is_root} ? 'postgres' : undef }

sub _pg_cmdline {
    my ($self, $datadir, $port) = @_;
    return ["$PG_BIN/postgres", '-D', $datadir,
        '-c', "port=$port", '-c', 'listen_addresses=127.0.0.1',
        '-c', "unix_socket_directories=$self->{dir}/pg",
        '-c', 'wal_level=replica', '-c', 'max_wal_senders=5', '-c', 'hot_standby=on',
        '-c', 'wal_keep_size=64MB', '-c', 'fsync=off', '-c', 'synchronous_commit=off',
        '-c', 'full_page_writes=off', '-c', 'shared_buffers=16MB', '-c', 'max_connections=100',
        '-c', 'wal_receiver_status_interval=1s', '-c', 'logging_collector=off',
        '-c', "log_line_prefix=%m [%p] "];
}

sub _setup_pg {
    my ($self) = @_;
    my $pgdir = "$self->{dir}/pg";
    make_path($pgdir);
    my $user = $self->_pg_user;
    if ($user) {
        my ($uid, $gid) = (getpwnam($user))[2, 3];
        croak "user $user is needed to run PostgreSQL as root" unless defined $uid;
        chown $uid, $gid, $pgdir;
    }
    my %as = $user ? (user => $user) : ();
    $self->_run('initdb', %as, check => 1, cmd => ["$PG_BIN/initdb", '-D', "$pgdir/primary",
        '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C', '--no-instructions']);
    $self->_spawn('pg-primary', %as, cmd => $self->_pg_cmdline("$pgdir/primary", $self->pg_primary_port),
        log => "$pgdir/primary.log", sig => 'INT', pdeathsig => 3);
    $self->_wait_all(30, ['PostgreSQL primary', 'pg-primary', sub { $self->_pg_connect('postgres', $self->pg_primary_port) }]);
    my $dbh = $self->_pg_connect('postgres', $self->pg_primary_port);
    $dbh->do("CREATE DATABASE $DB_NAME");
    $dbh->disconnect;
    # the app owns its schema
    $self->_run('migrate', check => 1, cmd => [$PYTHON, "$ROOT/t/app/demo_app.py", 'migrate'],
        env => { DATABASE_URL => $self->database_url($self->{primary}) });
    $self->_run('basebackup', %as, check => 1, cmd => ["$PG_BIN/pg_basebackup", '-h', '127.0.0.1',
        '-p', $self->pg_primary_port, '-U', 'postgres', '-D', "$pgdir/replica", '-R', '-X', 'stream',
        '-c', 'fast', '--no-sync']);
    $self->_spawn_pg_replica;
}

sub _spawn_pg_replica {
    my ($self) = @_;
    my $pgdir = "$self->{dir}/pg";
    my %as = $self->_pg_user ? (user => $self->_pg_user) : ();
    $self->_spawn('pg-replica', %as, cmd => $self->_pg_cmdline("$pgdir/replica", $self->pg_replica_port),
        log => "$pgdir/replica.log", sig => 'INT', pdeathsig => 3);
}

# stop_pg_replica(): the streaming replica stops (fast shutdown, SIGINT);
# start_pg_replica(): it starts again on its data directory and port, and
# returns once it streams from the primary again.
sub stop_pg_replica { $_[0]->_stop_procs('pg-replica') }
sub start_pg_replica {
    my ($self) = @_;
    croak "the PostgreSQL replica already runs" if $self->_alive('pg-replica');
    $self->_spawn_pg_replica;
    $self->_wait_all(30, $self->_pg_replica_check);
}

sub _pg_replica_check {
    my ($self) = @_;
    return ['PostgreSQL replica streaming', 'pg-replica', sub {
        my $dbh = $self->_pg_connect($DB_NAME, $self->pg_replica_port) or return 0;
        my ($rec) = $dbh->selectrow_array('SELECT pg_is_in_recovery()');
        my ($status) = $dbh->selectrow_array('SELECT status FROM pg_stat_wal_receiver');
        $dbh->disconnect;
        return $rec && ($status // '') eq 'streaming';
    }];
}

sub _pg_connect {
    my ($self, $db, $port) = @_;
    require DBI;
    local $SIG{__WARN__} = sub {};
    return DBI->connect("dbi:Pg:dbname=$db;host=127.0.0.1;port=$port;connect_timeout=2", 'postgres', '',
        { AutoCommit => 1, RaiseError => 1, PrintError => 0, pg_server_prepare => 0 });
}

# dbh($region [, $dbname]): a DBD::Pg handle on that region's database
# (primary for the primary region, the streaming replica elsewhere).
sub dbh {
    my ($self, $r, $db) = @_;
    $r = $self->_region($r);
    my $key = $r . '/' . ($db // $DB_NAME);
    my $h = $self->{dbh}{$key};
    return $h if $h && $h->ping;
    return $self->{dbh}{$key} = $self->_pg_connect($db // $DB_NAME, $self->pg_port($r));
}

# wait_for_pg_replication([$timeout]): until the replica has replayed all WAL
# the primary had written when called.  Returns true on success.
sub wait_for_pg_replication {
    my ($self, $timeout) = @_;
    my ($lsn) = $self->dbh($self->{primary})->selectrow_array('SELECT pg_current_wal_lsn()');
    my $replica = ($self->replica_regions)[0];
    return $self->wait_until(sub {
        my ($ok) = $self->dbh($replica)->selectrow_array(
            'SELECT pg_last_wal_replay_lsn() >= ?::pg_lsn', undef, $lsn);
        $ok;
    }, $timeout // scaled(10));
}

# ------------------------------------------------------------------ PostgreSQL faults

# stop_pg('primary'|'replica'), start_pg(...), pause_pg(... [, $secs]) (SIGSTOP:
# it accepts connections and never answers; SIGCONT after $secs, else at
# resume_pg), resume_pg(...).  pause_pg_replay / resume_pg_replay: the
# replica keeps receiving WAL but stops replaying it (pg_wal_replay_pause).
# heal() undoes all of them.
sub _pg_server {
    my ($w) = @_;
    croak "PostgreSQL server: 'primary' or 'replica'" unless ($w // '') =~ /^(?:primary|replica)$/;
    return $w;
}

# Handles on a server that is stopped or paused would fail or hang.
sub _forget_dbh {
    my ($self, $which) = @_;
    my @r = $which eq 'primary' ? ($self->{primary}) : $self->replica_regions;
    for my $key (keys %{$self->{dbh} || {}}) {
        my ($r) = split m{/}, $key;
        next unless grep { $_ eq $r } @r;
        my $h = delete $self->{dbh}{$key};
        $h->{InactiveDestroy} = 1 if $h;    # no goodbye to a stopped server
    }
}

sub stop_pg {
    my ($self, $which) = @_;
    _pg_server($which);
    $self->_forget_dbh($which);
    $self->_stop_procs("pg-$which");
}

sub start_pg {
    my ($self, $which) = @_;
    _pg_server($which);
    croak "PostgreSQL $which already runs" if $self->_alive("pg-$which");
    my $pgdir = "$self->{dir}/pg";
    my $user = $self->_pg_user;
    my $port = $which eq 'primary' ? $self->pg_primary_port : $self->pg_replica_port;
    $self->_spawn("pg-$which", ($user ? (user => $user) : ()),
        cmd => $self->_pg_cmdline("$pgdir/$which", $port),
        log => "$pgdir/$which.log", sig => 'INT', pdeathsig => 3);
    my @checks = (["PostgreSQL $which", "pg-$which", sub { $self->_pg_connect('postgres', $port) }]);
    # a replica streams again once its primary runs (the primary's replica
    # reconnects by itself within wal_retrieve_retry_interval, 5 s)
    push @checks, $self->_pg_replica_check
        if $self->_alive('pg-primary') && $self->_alive('pg-replica');
    $self->_wait_all(30, @checks);
}

# The postmaster (no new connection gets an answer) and every process it
# forked: a backend serving a connection made before would answer
# otherwise (backends are process group leaders of their own).
sub _signal_pg {
    my ($sig, $postmaster) = @_;
    if ($sig eq 'STOP') { kill 'STOP', $postmaster; kill 'STOP', _child_pids($postmaster) }
    else                { kill 'CONT', _child_pids($postmaster); kill 'CONT', $postmaster }
}

sub pause_pg {
    my ($self, $which, $secs) = @_;
    _pg_server($which);
    my $p = $self->{procs}{"pg-$which"} or croak "PostgreSQL $which does not run";
    $self->_forget_dbh($which);
    _signal_pg('STOP', $p->{pid});
    $p->{paused} = 1;
    $p->{pg_paused} = 1;
    if (defined $secs) {
        my $pid = fork() // croak "fork: $!";
        if ($pid == 0) {
            sleep $secs;
            _signal_pg('CONT', $p->{pid});
            POSIX::_exit(0);
        }
        $self->{procs}{"pause-pg-$which-$pid"} = { pid => $pid, name => "pause-pg-$which-$pid", sig => 'TERM', log => '/dev/null' };
    }
}

sub resume_pg {
    my ($self, $which) = @_;
    _pg_server($which);
    my $p = $self->{procs}{"pg-$which"} or croak "PostgreSQL $which does not run";
    _signal_pg('CONT', $p->{pid});
    $p->{paused} = $p->{pg_paused} = 0;
}

sub pause_pg_replay {
    my ($self) = @_;
    $self->dbh(($self->replica_regions)[0])->do('SELECT pg_wal_replay_pause()');
    $self->{pg_replay_paused} = 1;
}

sub resume_pg_replay {
    my ($self) = @_;
    $self->dbh(($self->replica_regions)[0])->do('SELECT pg_wal_replay_resume()');
    $self->{pg_replay_paused} = 0;
}

# ------------------------------------------------------------------ the demo app

sub _spawn_app {
    my ($self, $r) = @_;
    my $name = "app-$r";
    $self->_spawn($name, cmd => [$PYTHON, "$ROOT/t/app/demo_app.py", '--port', $self->app_port($r)],
        log => $self->app_log_path($r), sig => 'TERM',
        env => { FLY_REGION => $r, PRIMARY_REGION => $self->{primary}, FLY_APP_NAME => $APP_NAME,
                 FLY_MACHINE_ID => $self->machine_id($r), DATABASE_URL => $self->database_url($r),
                 PYTHONUNBUFFERED => 1 });
    return ["app $r", $name, sub { _http_get($self->app_url($r) . '/__health', 1)->{status} == 200 }];
}

sub _spawn_apps { my ($self) = @_; map { $self->_spawn_app($_) } @{$self->{regions}} }

sub stop_app  { my ($self, $r) = @_; $self->_stop_procs('app-' . $self->_region($r)) }
sub start_app { my ($self, $r) = @_; $self->_wait_all(20, $self->_spawn_app($self->_region($r))) }

# ------------------------------------------------------------------ the emulator

sub _spawn_emulator {
    my ($self) = @_;
    my @cmd = ($PYTHON, "$ROOT/t/app/replay_emulator.py", '--listen', $self->emulator_port,
        '--default-region', $self->{primary}, '--app', $APP_NAME,
        '--timeout', scaled(60));    # how long it waits for a region: a guard
    for my $r (@{$self->{regions}}) {
        push @cmd, '--region', "$r=127.0.0.1:" . $self->nginx_port($r),
                   '--region-port', "$r=" . $self->emulator_port($r),
                   '--machine', "$r=" . $self->machine_id($r);
    }
    $self->_spawn('emulator', cmd => \@cmd, log => $self->emulator_log_path, sig => 'TERM',
        env => { PYTHONUNBUFFERED => 1 });
    return ['replay emulator', 'emulator', sub {
        _port_open($self->emulator_port) && !grep { !_port_open($self->emulator_port($_)) } @{$self->{regions}}
    }];
}

# ------------------------------------------------------------------ nginx

sub nginx_user {
    my ($self) = @_;
    return undef unless $self->{is_root};
    for my $u (qw(www-data nobody)) {
        my @pw = getpwnam($u);
        next unless @pw;
        my $g = getgrgid($pw[3]) // $u;
        return "$u $g";
    }
    return undef;
}

# The spec of one region from a configure()/start() argument list:
# (all => {...}, scl => {...}) -- region entries override `all` per key.
sub _region_spec {
    my ($self, $r, %spec) = @_;
    my %s = (%{$spec{all} || {}}, %{$spec{$r} || {}});
    return \%s;
}

my $DEFAULT_CONFIG = "location / {\n    proxy_pass http://app;\n}\n";

# Render a region's configuration files: returns { file name => text }.
sub render_nginx {
    my ($self, $r, $spec, $gen, $prefix) = @_;
    $prefix //= $self->nginx_prefix($r);
    my $conf = "$prefix/conf";
    my %files;
    $files{'main.conf'}   = $self->substitute($r, $spec->{main_config} // '');
    $files{'http.conf'}   = $self->substitute($r, $spec->{http_config} // '');
    $files{'server.conf'} = $self->substitute($r, $spec->{config} // $DEFAULT_CONFIG);
    if (my $tpl = $spec->{template} // $self->{template}) {
        my $text = _slurp($tpl) // croak "$tpl: $!";
        my $load = $self->has_module ? "load_module $self->{module};" : '';
        $text =~ s/%%LOAD_MODULE%%/$load/g;
        $text =~ s/%%NGINX_USER%%/my $u = $self->nginx_user; $u ? "user $u;" : ''/ge;
        $text =~ s/%%CONF_DIR%%/$conf/g;
        $text =~ s/%%GEN%%/$gen/g;
        $text =~ s/%%CONTROL_PORT%%/$self->control_port($r)/ge;
        $files{'nginx.conf'} = $self->substitute($r, $text);
        return \%files;
    }
    my $user = $self->nginx_user;
    my $module = $self->has_module ? "load_module $self->{module};\n" : "# no module at $self->{module}\n";
    my $port = $self->nginx_port($r);
    my $ctl = $self->control_port($r);
    my $app = $self->app_port($r);
    my $env = join '', map { "env $_;\n" } qw(FLY_REGION PRIMARY_REGION FLY_APP_NAME FLY_MACHINE_ID REDIS_PASSWORD);
    my $temp = join '', map { "    ${_}_temp_path $prefix/tmp/$_;\n" } qw(client_body proxy fastcgi uwsgi scgi);
    $files{'nginx.conf'} = <<"EOF";
# generated by FlyEdge::Topology for region $r (generation $gen)
$module${\ ($user ? "user $user;\n" : '')}daemon off;
master_process on;
worker_processes $self->{workers};
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log debug;
$env
include $conf/main.conf;

events {
    worker_connections 1024;
}

http {
    log_format fly '\$remote_addr "\$request" \$status \$body_bytes_sent '
                   'rt=\$request_time urt=\$upstream_response_time ua="\$upstream_addr" '
                   'fr="\$sent_http_fly_replay"';
    access_log $prefix/logs/access.log fly;
$temp
    proxy_http_version 1.1;
    proxy_set_header Connection "";

    upstream app {
        server 127.0.0.1:$app;
        keepalive 16;
    }

    include $conf/http.conf;

    server {
        listen 127.0.0.1:$port;
        server_name localhost;

        include $conf/server.conf;
    }

    # the harness's control server: tells which configuration is live
    server {
        listen 127.0.0.1:$ctl;
        location = /__fly_gen {
            access_log off;
            add_header X-Fly-Gen $gen always;
            return 200 "$gen";
        }
    }
}
EOF
    return \%files;
}

sub _write_nginx_files {
    my ($self, $r, $files, $prefix) = @_;
    $prefix //= $self->nginx_prefix($r);
    make_path("$prefix/conf", "$prefix/logs", "$prefix/tmp", "$prefix/html");
    _write("$prefix/conf/$_", $files->{$_}) for sort keys %$files;
}

sub _nginx_env {
    my ($self, $r, $spec) = @_;
    my %env = %{$self->vars($r)};
    # e.g. the sanitizer runtime for an ASan build of the module, for nginx only
    $env{LD_PRELOAD} = $ENV{FLY_EDGE_LD_PRELOAD} if $ENV{FLY_EDGE_LD_PRELOAD};
    my $over = $spec->{env} || {};
    $env{$_} = $over->{$_} for keys %$over;     # undef = unset
    return \%env;
}

sub _spawn_nginx {
    my ($self, $r) = @_;
    my $spec = $self->{spec}{$r} ||= {};
    my $gen = ++$self->{gen}{$r};
    my $files = $self->render_nginx($r, $spec, $gen);
    $self->_write_nginx_files($r, $files);
    $self->{rendered}{$r} = _identity($files, $spec);
    my $prefix = $self->nginx_prefix($r);
    my $env = $self->_nginx_env($r, $spec);
    my @unset = grep { !defined $env->{$_} } keys %$env;
    my $name = "nginx-$r";
    # QUIT: graceful shutdown, so workers exit normally (sanitizers report at exit)
    $self->_spawn($name, sig => 'QUIT', log => "$prefix/logs/stderr.log",
        env => { map { $_ => $env->{$_} } grep { defined $env->{$_} } keys %$env },
        cmd => ['/usr/bin/env', (map { ('-u', $_) } @unset),
                $NGINX, '-p', "$prefix/", '-c', "$prefix/conf/nginx.conf", '-e', "$prefix/logs/error.log"]);
    return ["nginx $r", $name, sub {
        ($spec->{template} // $self->{template}) ? _port_open($self->nginx_port($r)) : $self->_nginx_gen_is($r, $gen)
    }];
}

sub _identity {
    my ($files, $spec) = @_;
    my %f = %$files;
    (my $n = $f{'nginx.conf'}) =~ s/generation \d+|X-Fly-Gen \d+|return 200 "\d+"//g;
    $f{'nginx.conf'} = $n;
    my $env = $spec->{env} || {};
    return join "\0", (map { "$_\0$f{$_}" } sort keys %f), map { "$_=" . ($env->{$_} // '<unset>') } sort keys %$env;
}

sub _nginx_gen_is {
    my ($self, $r, $gen) = @_;
    my $res = _http_get('http://127.0.0.1:' . $self->control_port($r) . "/__fly_gen?g=$gen", 2);
    return 1 if ($res->{headers}{'x-fly-gen'} // '') eq $gen;
    return $res->{status} == 200 && $res->{content} eq $gen;
}

sub _worker_pids {
    my ($self, $r) = @_;
    my $master = $self->pid("nginx-$r") or return ();
    return _child_pids($master);
}

sub _child_pids {
    my ($parent) = @_;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $s = _slurp($stat) // next;
        my ($pid, $ppid) = $s =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        push @pids, $pid if $ppid == $parent;
    }
    return @pids;
}

sub nginx_worker_pids { my ($s, $r) = @_; $s->_worker_pids($s->_region($r)) }

# configure(all => {...}, scl => {...}, ...): make each region's nginx run
# this configuration (keys: main_config, http_config, config, env, template).
# Regions whose rendered configuration changed are reloaded with SIGHUP (or
# restarted when their environment changed), in parallel; returns when every
# one serves the new generation with new workers only.  Dies when a reload
# fails (the [emerg] line is in the message).
sub configure {
    my ($self, %spec) = @_;
    my (@reload, @restart);
    for my $r (@{$self->{regions}}) {
        my $s = $self->_region_spec($r, %spec);
        my $gen = $self->{gen}{$r} + 1;
        my $files = $self->render_nginx($r, $s, $gen);
        my $id = _identity($files, $s);
        next if defined $self->{rendered}{$r} && $id eq $self->{rendered}{$r} && $self->_alive("nginx-$r");
        my $env_changed = _env_key($s) ne _env_key($self->{spec}{$r} || {});
        $self->{spec}{$r} = $s;
        if ($env_changed || !$self->_alive("nginx-$r")) {
            push @restart, $r;
            next;
        }
        $self->{gen}{$r} = $gen;
        $self->{rendered}{$r} = $id;
        $self->_write_nginx_files($r, $files);
        push @reload, $r;
    }
    my @checks;
    for my $r (@reload) {
        my $old = { map { $_ => 1 } $self->_worker_pids($r) };
        my $log_off = $self->error_log_size($r);
        my $gen = $self->{gen}{$r};
        kill 'HUP', $self->pid("nginx-$r");
        push @checks, ["nginx $r reload to generation $gen", "nginx-$r", sub {
            my $new = $self->error_log_since($r, $log_off);
            if ($new =~ /^(.*\[emerg\].*)$/m) {
                die_reload($r, $1);
            }
            return 0 unless $self->_nginx_gen_is($r, $gen);
            # old workers finish their requests and exit: wait for that, so
            # every later request meets the new configuration
            return !grep { $old->{$_} } $self->_worker_pids($r);
        }];
    }
    for my $r (@restart) {
        $self->_stop_procs("nginx-$r");
        push @checks, $self->_spawn_nginx($r);
    }
    eval { $self->_wait_all(20, @checks); 1 } or do {
        my $err = $@;
        delete $self->{rendered}{$_} for @reload;    # try again next time
        croak(ref $err eq 'FlyEdge::Topology::Fatal' ? $$err : $err);
    };
    return scalar(@reload) + scalar(@restart);
}

sub die_reload {
    my ($r, $line) = @_;
    die bless \"nginx $r rejected the new configuration: $line", 'FlyEdge::Topology::Fatal';
}

sub _env_key { my $e = $_[0]{env} || {}; join "\0", map { "$_=" . ($e->{$_} // "\1") } sort keys %$e }

sub reload_nginx {
    my ($self, @regions) = @_;
    @regions = @{$self->{regions}} unless @regions;
    delete $self->{rendered}{$_} for @regions;
    my %spec = map { $_ => $self->{spec}{$_} } @regions;
    # keep the other regions as they are
    for my $r (@{$self->{regions}}) { $spec{$r} //= $self->{spec}{$r} }
    return $self->configure(%spec);
}

# stop_nginx(@regions): graceful stop (SIGQUIT), all regions when none named.
sub stop_nginx {
    my ($self, @r) = @_;
    @r = @{$self->{regions}} unless @r;
    $self->_stop_procs(map { 'nginx-' . $self->_region($_) } @r);
}
sub start_nginx {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    $self->_wait_all(20, $self->_spawn_nginx($r));
}

# nginx_t($config_snippet_or_spec [, region => 'scl', env => {VAR => value|undef}]):
# render a configuration (module loaded) into a scratch prefix and run
# `nginx -t` on it.  Returns (exit code, output) in list context, the exit
# code in scalar context.  A plain string is the server-level snippet; a hash
# ref may hold main_config, http_config, config and env.
sub nginx_t {
    my ($self, $what, %opt) = @_;
    my $r = $self->_region($opt{region});
    my $spec = ref $what ? {%$what} : { config => $what };
    $spec->{env} = { %{$spec->{env} || {}}, %{$opt{env} || {}} };
    my $prefix = "$self->{dir}/nginx-t-$r";
    remove_tree("$prefix/conf");
    my $files = $self->render_nginx($r, $spec, 0, $prefix);
    $self->_write_nginx_files($r, $files, $prefix);
    my $env = $self->_nginx_env($r, $spec);
    my @unset = grep { !defined $env->{$_} } keys %$env;
    my ($rc, $out) = $self->_run("nginx-t-$r",
        env => { map { $_ => $env->{$_} } grep { defined $env->{$_} } keys %$env },
        cmd => ['/usr/bin/env', (map { ('-u', $_) } @unset),
                $NGINX, '-t', '-p', "$prefix/", '-c', "$prefix/conf/nginx.conf", '-e', "$prefix/logs/error.log"]);
    return wantarray ? ($rc, $out) : $rc;
}

sub nginx_t_conf_dir { my ($s, $r) = @_; "$s->{dir}/nginx-t-" . $s->_region($r) . '/conf' }
sub nginx_conf_dir { my ($s, $r) = @_; $s->nginx_prefix($r) . '/conf' }

1;

__END__

=head1 NAME

FlyEdge::Topology - the local three-region deployment fly-edge is tested on

=head1 SYNOPSIS

    use FlyEdge::Topology;
    my $t = FlyEdge::Topology->new;          # allocates ports and a temp dir
    $t->start(all => { config => 'location / { proxy_pass http://app; }' });
    my $res = HTTP::Tiny->new->post($t->emulator_url('atl') . '/posts', {...});
    $t->configure(all => { http_config => '...', config => '...' },
                  atl => { config => '...' });      # SIGHUP + wait
    $t->redis('ord')->get('k');   $t->redis_cli('atl', 'SET', 'k', 'v');
    $t->dbh('scl')->do(...);      $t->wait_for_pg_replication;
    $t->stop_redis('atl'); $t->start_redis('atl'); $t->pause_redis('atl', 2);
    my ($rc, $out) = $t->nginx_t('fly_replay_status abc;');
    $t->stop;                                 # also done by END/DESTROY/signals

=head1 WHAT RUNS

Regions are C<scl> (primary), C<ord> and C<atl>, all on 127.0.0.1 with ports
picked at random below the kernel's ephemeral range, checked free and locked
(flock in F</tmp/fly-edge-port-locks>) so parallel test files never collide.

=over

=item Redis

A redis-server per region: the primary in C<scl>, replicas (C<--replicaof>,
C<--replica-read-only no>) in C<ord> and C<atl>, all with C<--requirepass>
and C<--masterauth> (one generated password), C<--maxmemory 64mb
--maxmemory-policy volatile-lru --replica-ignore-maxmemory no>, no persistence,
DEBUG allowed from localhost.  start() waits until each replica reports
C<master_link_status:up>.  A key written on the primary reaches every replica;
a key written on a replica stays in that region (until a full resync).

=item PostgreSQL 15

A primary (initdb, C<wal_level=replica>, trust for 127.0.0.1) and one
streaming replica of it made with C<pg_basebackup -R -X stream>.  The primary
serves C<scl>; the single replica serves both C<ord> and C<atl> (two replica
regions reading one standby behave the same as two standbys for every test:
both are read-only and lag the primary).  Run as C<postgres> when the harness
is root.  Database C<fly_demo>, schema created by C<demo_app.py migrate>
before the base backup.

=item The demo app

F<t/app/demo_app.py>, one process per region, C<DATABASE_URL> of its
region's database: writes succeed only in C<scl>, elsewhere they fail with 500
(read-only transaction) unless something sends them to C<scl>.

=item nginx

Debian's F</usr/sbin/nginx> per region, master + C<worker_processes 2>,
C<load_module> of F<build/ngx_http_fly_edge_module.so> (C<$FLY_EDGE_MODULE>
overrides; without the file nginx runs without the module), the region's
variables (see L</VARIABLES>) in its environment.  Workers run as
C<www-data> when the harness is root.  Prefix F<DIR/nginx-REGION/> with
F<conf/> (F<nginx.conf>, F<main.conf>, F<http.conf>, F<server.conf>),
F<logs/> (F<error.log> at debug level, F<access.log>, F<stderr.log>),
F<tmp/>, F<html/>.

=item The replay emulator

F<t/app/replay_emulator.py> in front of the three nginx: main port routes
to C<scl> (or by C<fly-prefer-region>/C<fly-force-region>), one extra port per
region for clients "near" that region.

=back

=head1 NGINX CONFIGURATION

Each region's F<nginx.conf> is a skeleton: pid, error_log (debug), temp paths
and access_log in the prefix, C<proxy_http_version 1.1> with C<Connection "">
(http level), C<upstream app { server 127.0.0.1:APP_PORT; keepalive 16; }>
pointing at that region's app, one C<server> listening on C<NGINX_PORT>, and a
control server (own port) with C<location = /__fly_gen> that tells which
configuration generation is live.  Three snippets are included:

    main_config  -> conf/main.conf    (main context)
    http_config  -> conf/http.conf    (http context)
    config       -> conf/server.conf  (the server; default
                                       "location / { proxy_pass http://app; }")

so an error in a snippet is reported as e.g. F<.../conf/server.conf:2>, the
line within the snippet.  A C<template> (file) may replace the skeleton; it
may use C<%%LOAD_MODULE%%>, C<%%NGINX_USER%%>, C<%%CONF_DIR%%>,
C<%%CONTROL_PORT%%>, C<%%GEN%%> besides the variables below.

configure() re-renders; a region whose files changed is reloaded with SIGHUP
and configure() returns once the control server answers with the new
generation and every old worker has exited (a region whose C<env> changed is
restarted).  A reload that nginx refuses dies with the C<[emerg]> line.

=head1 VARIABLES

Written C<%%NAME%%> in snippets (and in test blocks); an unknown name dies.
Each is also set in that region's nginx environment, where the module's
C<${NAME}> syntax reads it.

    REGION FLY_REGION PRIMARY_REGION FLY_APP_NAME FLY_MACHINE_ID
    REDIS_PASSWORD REDIS_PORT REDIS_PRIMARY_PORT REDIS_URL REDIS_PRIMARY_URL
    PG_PORT PG_PRIMARY_PORT DATABASE_URL PRIMARY_DATABASE_URL
    APP_PORT NGINX_PORT EMULATOR_PORT
    REDIS_PORT_<R> PG_PORT_<R> APP_PORT_<R> NGINX_PORT_<R> EMULATOR_PORT_<R>
    MACHINE_ID_<R>          (<R> = SCL, ORD, ATL)
    PREFIX SERVROOT HTML_DIR MODULE_PATH ROOT

Plain names (C<REDIS_PORT>, C<APP_PORT>, ...) are the region's own.

=head1 METHODS

=over

=item new(%opt)

Options: C<redis>, C<pg>, C<app>, C<nginx>, C<emulator> (all default 1; 0
skips that part), C<module>, C<nginx_template>, C<worker_processes>,
C<keep>, C<dir>, C<say> (progress callback), C<verbose>.

Environment: C<FLY_EDGE_MODULE> (the .so), C<FLY_EDGE_NGINX> (the nginx
binary, default F</usr/sbin/nginx>), C<FLY_EDGE_LD_PRELOAD> (LD_PRELOAD for
nginx only, e.g. libasan for a sanitizer build), C<FLY_TEST_KEEP>,
C<FLY_TEST_VERBOSE>, C<FLY_TEST_TMPDIR> (default F</tmp>).

=item start(%spec), stop

start() takes the same arguments as configure().  stop() stops every process
by PID (their own signal, KILL after C<scaled(10)> s) and removes the directory unless
C<$FLY_TEST_KEEP> is set or a test failed.  END, DESTROY and SIGINT/TERM/HUP/QUIT
handlers call it; children also get a parent-death signal.

=item Ports and URLs

C<nginx_port(R)>, C<nginx_url(R)>, C<app_port(R)>, C<app_url(R)>,
C<redis_port(R)>, C<redis_url(R)>, C<redis_password>, C<pg_port(R)>,
C<pg_primary_port>, C<pg_replica_port>, C<database_url(R)>, C<pg_dsn(R)>,
C<emulator_port([R])>, C<emulator_url([R])>, C<control_port(R)>,
C<machine_id(R)>, C<vars(R)>, C<substitute(R, TEXT)>, C<dir>, C<regions>,
C<replica_regions>, C<primary_region>, C<module_path>, C<has_module>.
C<FlyEdge::Topology::reserve_port()>: a free port of the same range,
locked for the life of the process (e.g. one nothing listens on).

=item Redis

C<redis(R)> (Redis.pm client), C<redis_cli(R, @args)>, C<stop_redis(R)>,
C<start_redis(R)>, C<pause_redis(R [, secs])> (SIGSTOP; SIGCONT after secs),
C<resume_redis(R)>, C<redis_debug_sleep(R, secs)> (returns once Redis
sleeps), C<redis_asleep(R)> (true while it is inside DEBUG SLEEP).

=item PostgreSQL

C<dbh(R [, db])> (DBD::Pg, AutoCommit), C<wait_for_pg_replication([timeout])>,
C<stop_pg_replica>, C<start_pg_replica> (waits until it streams again),
C<stop_pg(W)>, C<start_pg(W)>, C<pause_pg(W [, secs])> (SIGSTOP to the
server and its backends; SIGCONT after secs), C<resume_pg(W)> for W C<primary> or C<replica>;
C<pause_pg_replay>, C<resume_pg_replay> (the replica receives WAL but does
not replay it: C<pg_wal_replay_pause()>).  heal() undoes each of them.

=item nginx

C<heal()> (restarts or resumes whatever a test stopped or paused; the
test harness calls it before every block), C<configure(%spec)>, C<reload_nginx(@R)>, C<stop_nginx(@R)> (SIGQUIT; all
when none named), C<start_nginx(R)>,
C<nginx_t($snippet | {main_config, http_config, config, env}, region =E<gt> R, env =E<gt> {...})>
returning (exit code, output), C<error_log(R)>, C<error_log_path(R)>,
C<error_log_size(R)>, C<error_log_since(R, offset)>, C<access_log_path(R)>,
C<nginx_stderr_path(R)>, C<nginx_worker_pids(R)>, C<nginx_conf_dir(R)>,
C<nginx_t_conf_dir(R)>.

=item App

C<stop_app(R)>, C<start_app(R)>, C<app_log_path(R)>.

=item wait_until(sub, timeout)

Polls until the sub returns true (at once, then at growing intervals of up
to 0.1 s); returns its value, or undef once C<timeout> seconds have passed.
The caller scales C<timeout> (C<scaled(5)>); without one, C<scaled(10)>.

=item time_scale(), scaled(secs)

C<FLY_TEST_TIME_SCALE> (at least 1) and C<secs> times it.  Every wait of
the topology (start, reload, stop, a command it runs, its clients'
timeouts, the emulator's C<--timeout>) is a guard against a hang, generous
and scaled.

=back

=cut
