# The configurations people copy must stay loadable: every ```nginx block of
# README.md, the demo's conf/nginx.conf.in rendered the way t/bin/demo
# renders it, and docker/nginx.conf, each through `nginx -t` with the built
# module.
#
# README and docker files are run in a scratch prefix: the load_module path
# becomes the built module, `listen` goes to a free loopback port, the pid,
# error log, access log and temp paths go inside the prefix (so it also runs
# unprivileged), and a fragment without an `events` block gets an empty one.
# Host names such as {region}.my-redis.internal are not looked up here:
# with a `resolver` they are resolved at run time only.
use FlyEdge::Test;
use File::Path qw(make_path remove_tree);
use POSIX ();

our $ROOT = $FlyEdge::Topology::ROOT;
our $NGINX = $FlyEdge::Topology::NGINX;
our %ENV_FOR = (
    ord => { FLY_REGION => 'ord', PRIMARY_REGION => 'scl', REDIS_PASSWORD => 'readme-password' },
    scl => { FLY_REGION => 'scl', PRIMARY_REGION => 'scl', REDIS_PASSWORD => 'readme-password' },
);

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

sub spew {
    my ($f, $text) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $text;
    close $fh or die "$f: $!";
}

# The ```nginx fenced blocks of a Markdown text: ([line, text], ...).
sub nginx_blocks {
    my ($md) = @_;
    my (@blocks, $cur, $start);
    my $n = 0;
    for my $line (split /\n/, $md) {
        $n++;
        if (!defined $cur && $line =~ /^\s*```\s*nginx\s*$/) { $cur = ''; $start = $n + 1; next }
        if (defined $cur && $line =~ /^\s*```\s*$/) { push @blocks, [$start, $cur]; undef $cur; next }
        $cur .= "$line\n" if defined $cur;
    }
    return @blocks;
}

# A port on loopback that binds now (nginx -t binds its listen sockets).
sub free_port {
    my ($v6) = @_;
    require IO::Socket::IP;
    for (1 .. 100) {
        my $s = IO::Socket::IP->new(LocalHost => $v6 ? '::1' : '127.0.0.1', LocalPort => 0, Listen => 1) or next;
        my $p = $s->sockport;
        close $s;
        return $p;
    }
    die "no free port";
}

# Makes a configuration runnable in $prefix (see the top of the file).
sub sandbox {
    my ($conf, $prefix, $module) = @_;
    $conf =~ s/^(\s*)load_module\s+[^;]+;/$1load_module $module;/mg;
    $conf =~ s{^(\s*listen\s+)(\S+?)((?:\s[^;]*)?);}{
        my ($lead, $addr, $rest) = ($1, $2, $3);
        $lead . ($addr =~ /^\[/ ? '[::1]:' . free_port(1) : '127.0.0.1:' . free_port()) . $rest . ';'
    }mge;
    my @inject;
    for my $t (qw(client_body proxy fastcgi uwsgi scgi)) {
        push @inject, "${t}_temp_path $prefix/tmp/$t;" unless $conf =~ /^\s*${t}_temp_path\s/m;
    }
    push @inject, "access_log $prefix/logs/access.log;" unless $conf =~ /^\s*access_log\s/m;
    my $ins = join '', map { " $_" } @inject;
    $conf =~ s/^(\s*http\s*\{)/$1$ins/m;    # on the same line: line numbers stay the README's
    $conf .= "events {}\n" unless $conf =~ /^\s*events\s*\{/m;
    return $conf;
}

# nginx -t of $file in $prefix with exactly %$env as the environment;
# returns (exit code, output).
sub nginx_t {
    my ($file, $prefix, $env) = @_;
    make_path("$prefix/logs", "$prefix/tmp");
    my @cmd = ($NGINX, '-t', '-p', "$prefix/", '-c', $file, '-e', "$prefix/logs/error.log");
    push @cmd, '-g', "pid $prefix/logs/nginx.pid;" unless slurp($file) =~ /^\s*pid\s/m;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        my $preload = $ENV{FLY_EDGE_LD_PRELOAD};
        my %keep = map { exists $ENV{$_} ? ($_ => $ENV{$_}) : () } qw(ASAN_OPTIONS UBSAN_OPTIONS);
        %ENV = (PATH => '/usr/sbin:/usr/bin:/sbin:/bin', %keep, %$env);
        $ENV{LD_PRELOAD} = $preload if $preload;
        alarm 60;                     # survives exec: a hung nginx -t dies
        { exec { $cmd[0] } @cmd }
        print "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($rc, $text);
}

sub check_t {
    my ($name, $rc, $out) = @_;
    is($rc, 0, "$name: nginx -t passes") or return diag($out);
    like($out, qr/test is successful/, "$name: nginx says the test is successful");
    unlike($out, qr/\[(emerg|alert)\]/, "$name: no [emerg] or [alert]");
}

run_tests(start => 0);

__DATA__

=== TEST 1: every nginx block of the README passes nginx -t with the built module, in a replica and in the primary region
--- test
ok($t->has_module, 'the module is built: ' . $t->module_path) or diag('run `make` first');
my @blocks = main::nginx_blocks(main::slurp("$main::ROOT/README.md"));
cmp_ok(scalar @blocks, '>=', 2, 'the README has nginx examples: ' . scalar @blocks);
for my $b (@blocks) {
    my ($line, $text) = @$b;
    for my $r (sort keys %main::ENV_FOR) {
        my $prefix = $t->dir . "/readme-$line-$r";
        remove_tree($prefix);
        make_path("$prefix/conf");
        my $conf = main::sandbox($text, $prefix, $t->module_path);
        like($conf, qr/^\s*load_module \Q${\ $t->module_path}\E;/m, "README.md:$line in $r: loads the built module")
            if $text =~ /load_module/;
        main::spew("$prefix/conf/nginx.conf", $conf);
        main::check_t("README.md:$line in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, $main::ENV_FOR{$r}));
    }
}


=== TEST 2: the demo configuration (conf/nginx.conf.in, rendered as t/bin/demo renders it) passes nginx -t in every region
--- test
my $tpl = "$main::ROOT/conf/nginx.conf.in";
ok(-f $tpl, 'conf/nginx.conf.in exists');
like(main::slurp("$main::ROOT/t/bin/demo"), qr{nginx_template\s*=>\s*"\$root/conf/nginx\.conf\.in"},
     't/bin/demo renders conf/nginx.conf.in through FlyEdge::Topology');
for my $r ($t->regions) {
    # what Topology does for the demo: render the template with the region's values
    my $files = $t->render_nginx($r, { template => $tpl }, 1);
    my $prefix = $t->nginx_prefix($r);
    make_path("$prefix/conf", "$prefix/logs", "$prefix/tmp", "$prefix/html");
    main::spew("$prefix/conf/$_", $files->{$_}) for keys %$files;
    my $conf = $files->{'nginx.conf'};
    unlike($conf, qr/%%\w+%%/, "$r: every placeholder was filled");
    like($conf, qr/^\s*load_module \Q${\ $t->module_path}\E;/m, "$r: loads the built module");
    # the environment the demo's nginx gets: the region's variables
    my %env = map { $_ => $t->vars($r)->{$_} } keys %{$t->vars($r)};
    main::check_t("conf/nginx.conf.in in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, \%env));
}


=== TEST 3: docker/nginx.conf passes nginx -t (with Fly's environment)
--- test
my $text = main::slurp("$main::ROOT/docker/nginx.conf");
like($text, qr/^\s*load_module\s/m, 'docker/nginx.conf loads the module');
for my $r (sort keys %main::ENV_FOR) {
    my $prefix = $t->dir . "/docker-$r";
    remove_tree($prefix);
    make_path("$prefix/conf");
    main::spew("$prefix/conf/nginx.conf", main::sandbox($text, $prefix, $t->module_path));
    main::check_t("docker/nginx.conf in $r", main::nginx_t("$prefix/conf/nginx.conf", $prefix, $main::ENV_FOR{$r}));
}
