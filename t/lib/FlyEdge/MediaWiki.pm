package FlyEdge::MediaWiki;

# The three-region bed of FlyEdge::Topology with Debian's MediaWiki (1.39,
# unmodified) instead of the demo app: installed into the bed's PostgreSQL
# primary, one php-fpm master per region on that region's app port, nginx
# configured from conf/mediawiki-nginx.conf.in (which includes the conf/
# example conf/mediawiki-http.conf and conf/mediawiki.conf).  POD at the end.

use strict;
use warnings;
use parent 'FlyEdge::Topology';

use Carp qw(croak);
use File::Path qw(make_path);
use File::Copy qw(copy);
use Time::HiRes qw(time sleep);

our $MW_DIR   = '/usr/share/mediawiki';
our $DOC_ROOT = '/var/lib/mediawiki';          # Debian's web root (symlinks into $MW_DIR)
our $PHP      = '/usr/bin/php';
our $PHP_FPM  = '/usr/sbin/php-fpm8.2';
our $DB       = 'wikidb';
our $ADMIN    = 'Admin';
our $WIKI     = 'Fly Wiki';

# Debian packages the bed needs (`make deps-apps` installs them)
our @PACKAGES = qw(mediawiki php-fpm php-cli php-pgsql php-apcu php-intl php-mbstring php-xml php-curl php-redis);

sub new {
    my ($class, %opt) = @_;
    my $root = $FlyEdge::Topology::ROOT;
    my $self = $class->SUPER::new(
        nginx_template => "$root/conf/mediawiki-nginx.conf.in",
        %opt,
        app => 0,                       # no demo app: php-fpm listens on the app ports
    );
    $self->{mw_admin_password} = $opt{admin_password} || 'fly-edge-' . substr($self->password, 0, 12);
    $self->{mw_conf} = "$root/conf";    # where nginx includes conf/mediawiki*.conf from
    # FLY_MW_WITHOUT_REDIS=1: a control run with MediaWiki's own defaults for
    # sessions, caches and jobs (what install.php chose; jobs run by requests
    # in every region), to see what the documented settings are for
    $self->{mw_control} = $ENV{FLY_MW_WITHOUT_REDIS}
        ? "putenv('MW_REDIS_PRIMARY'); putenv('MW_CACHE_DIR');   # FLY_MW_WITHOUT_REDIS\n" : '';
    return $self;
}

# ------------------------------------------------------------------ accessors

sub mw_dir          { "$_[0]{dir}/mediawiki" }
sub mw_settings     { $_[0]->mw_dir . '/LocalSettings.php' }
sub mw_log_dir      { my ($s, $r) = @_; $s->mw_dir . '/logs-' . $s->_region($r) }
sub php_fpm_log     { my ($s, $r) = @_; $s->mw_log_dir($r) . '/php-fpm.log' }
sub job_log         { $_[0]->mw_dir . '/jobs.log' }
sub pg_log_path     { my ($s, $which) = @_; "$s->{dir}/pg/$which.log" }      # primary | replica
sub admin_user      { $ADMIN }
sub admin_password  { $_[0]{mw_admin_password} }
sub server_url      { $_[0]->emulator_url }       # $wgServer: the host every client uses
sub php_fpm_port    { my ($s, $r) = @_; $s->app_port($r) }

# Every region's nginx gets MW_CONF (where conf/mediawiki*.conf are read from).
sub vars {
    my ($self, $r) = @_;
    my $v = $self->SUPER::vars($r);
    $v->{MW_CONF} = $self->{mw_conf};
    $v->{MW_DOC_ROOT} = $DOC_ROOT;
    return $v;
}

# ------------------------------------------------------------------ start

sub start {
    my ($self, %spec) = @_;
    my @missing = grep { !-e $_ } $PHP, $PHP_FPM, "$MW_DIR/maintenance/install.php";
    croak "MediaWiki is not installed (@missing missing): run `make deps-apps`" if @missing;
    croak "php-redis and php-pgsql are needed: run `make deps-apps`"
        unless `$PHP -m 2>/dev/null` =~ /^redis$/m && `$PHP -m 2>/dev/null` =~ /^pgsql$/m;
    my $t0 = time;
    $self->SUPER::start(%spec);
    $self->_install_mediawiki;
    $self->_wait_all(30, map { $self->_spawn_php_fpm($_) } $self->regions);
    # the first request of a region builds its localisation cache (a second
    # or two); the API's answers are private, so this caches no page
    $self->_wait_all(60, map { my $r = $_; ["MediaWiki in $r", "php-fpm-$r", sub {
        my $res = FlyEdge::Topology::_http_get($self->nginx_url($r)
            . '/api.php?action=query&meta=siteinfo|allmessages&ammessages=mainpage&format=json', 20);
        $res->{status} == 200 && $res->{content} =~ /"sitename"/;
    }] } $self->regions);
    $self->_say(sprintf "MediaWiki up in %.1fs", time - $t0);
    return $self;
}

# nginx -t of a region's nginx.conf, which includes conf/mediawiki*.conf as they are
sub nginx_t_conf_example {
    my ($self) = @_;
    return $self->nginx_t({});
}

sub _www_owned {
    my ($self, @paths) = @_;
    make_path(@paths);
    return unless $self->{is_root};
    my ($uid, $gid) = (getpwnam('www-data'))[2, 3];
    chown $uid, $gid, @paths if defined $uid;
}

sub _install_mediawiki {
    my ($self) = @_;
    my $mw = $self->mw_dir;
    make_path($mw);
    my $p = $self->primary_region;
    # install.php: the tables and the first account, into the primary
    $self->_run('mw-install', check => 1, timeout => 180, cmd => [$PHP, "$MW_DIR/maintenance/install.php",
        '--dbtype', 'postgres', '--dbserver', '127.0.0.1', '--dbport', $self->pg_primary_port,
        '--dbname', $DB, '--dbuser', 'postgres', '--dbpass', 'x',
        '--installdbuser', 'postgres', '--installdbpass', 'x',
        '--server', $self->server_url, '--scriptpath', '', '--confpath', $mw,
        '--pass', $self->admin_password, '--quiet', $WIKI, $ADMIN]);
    rename "$mw/LocalSettings.php", "$mw/LocalSettings.install.php" or croak "install.php wrote no LocalSettings.php: $!";
    # one LocalSettings.php for every region, as one image on Fly: what
    # install.php wrote, then the multi-region settings of the conf/ example,
    # which read the machine's environment (set in each region's pool)
    FlyEdge::Topology::_write($self->mw_settings, <<"EOF");
<?php
# generated by FlyEdge::MediaWiki
require __DIR__ . '/LocalSettings.install.php';
$self->{mw_control}require '$self->{mw_conf}/mediawiki/LocalSettings.fly.php';
${\ ($self->{mw_control} ? "\$wgJobRunRate = 1;   # FLY_MW_WITHOUT_REDIS: MediaWiki's default\n" : '')}
EOF
    chmod 0644, $self->mw_settings, "$mw/LocalSettings.install.php";
    $self->_www_owned(map { ($self->mw_log_dir($_), "$mw/cache-$_") } $self->regions);
}

sub mw_env {
    my ($self, $r) = @_;
    $r = $self->_region($r);
    my $p = $self->primary_region;
    return {
        MW_CONFIG_FILE   => $self->mw_settings,
        FLY_REGION       => $r,
        PRIMARY_REGION   => $p,
        FLY_APP_NAME     => $self->app_name,
        MW_SERVER        => $self->server_url,
        MW_DB_HOST       => '127.0.0.1',
        MW_DB_PORT       => $self->pg_port($r),
        MW_REDIS         => '127.0.0.1:' . $self->redis_port($r),
        MW_REDIS_PRIMARY => '127.0.0.1:' . $self->redis_port($p),
        REDIS_PASSWORD   => $self->redis_password,
        MW_CDN_SERVERS   => join(',', map { '127.0.0.1:' . $self->nginx_port($_) } $self->regions),
        MW_CACHE_DIR     => $self->mw_dir . "/cache-$r",
        MW_LOG_DIR       => $self->mw_log_dir($r),
    };
}

sub _spawn_php_fpm {
    my ($self, $r) = @_;
    my $dir = $self->mw_log_dir($r);
    my $conf = $self->mw_dir . "/php-fpm-$r.conf";
    my $env = $self->mw_env($r);
    my $user = $self->{is_root} ? "user = www-data\ngroup = www-data\n" : '';
    my $envs = join '', map { "env[$_] = \"$env->{$_}\"\n" } sort keys %$env;
    FlyEdge::Topology::_write($conf, <<"EOF");
; generated by FlyEdge::MediaWiki: MediaWiki's php-fpm in region $r
[global]
pid = $dir/php-fpm.pid
error_log = $dir/php-fpm.log
log_level = notice
daemonize = no

[mediawiki]
${user}listen = 127.0.0.1:${\ $self->php_fpm_port($r)}
pm = dynamic
pm.max_children = 6
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
request_terminate_timeout = 60s
catch_workers_output = yes
decorate_workers_output = no
clear_env = yes
$envs
php_admin_flag[log_errors] = on
php_admin_value[error_log] = $dir/php-error.log
php_admin_value[memory_limit] = 256M
EOF
    my $name = "php-fpm-$r";
    # QUIT: graceful (workers finish their request)
    $self->_spawn($name, cmd => [$PHP_FPM, '-F', '-y', $conf], log => "$dir/php-fpm.stderr", sig => 'QUIT');
    return ["php-fpm $r", $name, sub { FlyEdge::Topology::_port_open($self->php_fpm_port($r)) }];
}

sub stop_php_fpm  { my ($s, $r) = @_; $s->_stop_procs('php-fpm-' . $s->_region($r)) }
sub start_php_fpm { my ($s, $r) = @_; $s->_wait_all(20, $s->_spawn_php_fpm($s->_region($r))) }

sub stop {
    my ($self) = @_;
    return if $self->{stopped} || $$ != $self->{owner_pid};
    # php-fpm before nginx's upstream dies under it is not needed; before the
    # databases it is: stop it first (the parent stops the rest by PID)
    $self->_stop_procs(grep { /^php-fpm-/ } keys %{$self->{procs}});
    $self->SUPER::stop;
}

# run a MediaWiki maintenance script in a region's environment; returns (rc, output)
sub maintenance {
    my ($self, $r, $script, @args) = @_;
    return $self->_run("mw-$script", timeout => 120, env => $self->mw_env($r),
        cmd => [$PHP, "$MW_DIR/maintenance/$script.php", @args]);
}

# ------------------------------------------------------------------ logs

# What the PostgreSQL servers, php-fpm and MediaWiki logged, by file.
sub app_logs {
    my ($self) = @_;
    my %logs;
    for my $w (qw(primary replica)) { $logs{"postgresql $w"} = $self->pg_log_path($w) }
    for my $r ($self->regions) {
        my $d = $self->mw_log_dir($r);
        $logs{"$r $_"} = "$d/$_" for map { s{.*/}{}r } grep { !/\.pid$/ } glob "$d/*";
    }
    return \%logs;
}

1;

__END__

=head1 NAME

FlyEdge::MediaWiki - the three-region bed with Debian's MediaWiki behind fly-edge

=head1 SYNOPSIS

    use FlyEdge::MediaWiki;
    my $t = FlyEdge::MediaWiki->new;   # FlyEdge::Topology with app => 0
    $t->start;                         # Redis, PostgreSQL, nginx, emulator, then
                                       # install.php into the primary and php-fpm per region
    my $url = $t->server_url;          # $wgServer: the emulator's main port
    # choose a region with the fly-prefer-region request header
    $t->stop;

=head1 WHAT RUNS

Everything FlyEdge::Topology runs except the demo app, plus:

=over

=item MediaWiki

Debian's package (F</usr/share/mediawiki>, web root F</var/lib/mediawiki>),
installed with F<maintenance/install.php> into database C<wikidb> of the
PostgreSQL primary (the streaming replica follows).  One F<LocalSettings.php>
for every region (F<DIR/mediawiki/>): what install.php wrote, then
F<conf/mediawiki/LocalSettings.fly.php>, which reads the region from the
environment.  Account C<Admin>, password C<admin_password()>.

=item php-fpm

One master per region (C<php-fpm8.2 -F>, its own pool file), listening on
127.0.0.1 at the region's app port (C<app_port(R)>, C<php_fpm_port(R)>),
workers as C<www-data> when root; the pool's C<env[...]> gives MediaWiki
C<FLY_REGION>, C<PRIMARY_REGION>, its database (the primary in scl, the
replica elsewhere), the region's and the primary's Redis, C<$wgServer> and
the three nginx as C<$wgCdnServers>.  Started and stopped by PID (QUIT).
Logs in F<DIR/mediawiki/logs-REGION/>.

=item nginx

F<conf/mediawiki-nginx.conf.in> per region, which includes
F<conf/mediawiki-http.conf> (http level) and F<conf/mediawiki.conf> (the
server's locations), as they are: nothing is left out or replaced, so a
module that lacks one of their directives fails to start.
C<nginx_t_conf_example()> runs C<nginx -t> on them.

=back

=head1 CONTROL RUN

C<FLY_MW_WITHOUT_REDIS=1> leaves out the sessions-and-caches part of
F<conf/mediawiki/LocalSettings.fly.php> and runs jobs on requests in every
region (MediaWiki's defaults after install.php: APCu per machine,
C<$wgJobRunRate = 1>).  The test then also fails where the issue's report did:
login from a replica region, and "read-only transaction" errors from the job
queue on GETs in ord and atl.

=head1 METHODS

C<server_url>, C<admin_user>, C<admin_password>, C<mw_dir>, C<mw_settings>,
C<mw_env(R)>, C<mw_log_dir(R)>, C<php_fpm_port(R)>, C<stop_php_fpm(R)>,
C<start_php_fpm(R)>, C<maintenance(R, SCRIPT, ARGS)>, C<app_logs> (name =>
file of the PostgreSQL, php-fpm and MediaWiki logs),
C<nginx_t_conf_example>, and all of FlyEdge::Topology's.

=cut
