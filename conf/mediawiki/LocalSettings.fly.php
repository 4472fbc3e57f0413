<?php
# MediaWiki in every region of a Fly app, behind fly-edge.
#
# Include this file at the end of LocalSettings.php (the one install.php
# wrote).  One LocalSettings.php serves every region, as one image does on
# Fly: what differs per region comes from the machine's environment.
#
#   FLY_REGION, PRIMARY_REGION  set by Fly (the bed sets them in php-fpm's pool)
#   MW_SERVER                   the URL clients use: https://<app>.fly.dev
#   MW_DB_HOST, MW_DB_PORT      this region's PostgreSQL: the primary in the primary
#                               region, the local read-only replica elsewhere
#                               (Fly Postgres: <db-app>.internal, 5432 leader / 5433 local)
#   MW_REDIS, MW_REDIS_PRIMARY  host:port of this region's Redis replica and of the
#                               primary Redis (the same Redis fly-edge caches in)
#   REDIS_PASSWORD
#   MW_CDN_SERVERS              comma-separated nginx (fly-edge) addresses to PURGE
#   MW_CACHE_DIR, MW_LOG_DIR    machine-local directories (optional)
#
# See "Putting an existing app behind fly-edge" in the README and
# conf/mediawiki.conf for the nginx side.

if ( !defined( 'MEDIAWIKI' ) ) {
	exit( 1 );
}

$flyRegion = getenv( 'FLY_REGION' ) ?: 'local';
$flyPrimaryRegion = getenv( 'PRIMARY_REGION' ) ?: $flyRegion;
$flyIsPrimary = $flyRegion === $flyPrimaryRegion;

# --- URLs: the host clients use, whichever region answers
if ( getenv( 'MW_SERVER' ) ) {
	$wgServer = getenv( 'MW_SERVER' );
}
$wgCanonicalServer = $wgServer;
$wgScriptPath = '';
$wgArticlePath = '/wiki/$1';
$wgUsePathInfo = true;

# --- database: this region's.  In a replica region it is read-only; every
# request that writes is replayed to the primary region by fly-edge (POSTs,
# requests with MediaWiki's UseDC=master cookie, the login pages).
if ( getenv( 'MW_DB_HOST' ) ) {
	$wgDBserver = getenv( 'MW_DB_HOST' );
}
if ( getenv( 'MW_DB_PORT' ) ) {
	$wgDBport = (int)getenv( 'MW_DB_PORT' );
}

# --- fly-edge is MediaWiki's CDN: anonymous views are cached in each region's
# Redis (Cache-Control: s-maxage), and every save PURGEs the page's URLs
# (absolute URI in the request line) at these servers.  fly-edge writes a
# purge to the primary Redis, which replicates it to every region: one
# server would do; naming every region's nginx is harmless (purging is
# idempotent).
$wgUseCdn = true;
if ( getenv( 'MW_CDN_SERVERS' ) ) {
	$wgCdnServers = explode( ',', getenv( 'MW_CDN_SERVERS' ) );
}
$wgInternalServer = $wgServer;      # the URLs in the PURGE requests: what clients request

# --- object caches in Redis, the store every region reaches.
# Sessions (and the main stash: login tokens, rate limits, chronology
# positions) are read and written in the primary Redis: a session written by
# a login replayed to the primary must be found by the next request in any
# region at once, which a lagging regional replica cannot promise.  Only
# requests that carry a session cookie pay the round trip to the primary.
# Caches (parser output, messages, WAN cache) read the regional replica and
# write to the primary (ReplicatedBagOStuff), so a cache miss in one region
# fills every region and a purge reaches every region.  Nothing is stored in
# the database on a GET: in a replica region that would fail (read-only).
$flyRedisPassword = getenv( 'REDIS_PASSWORD' ) ?: null;
$flyRedisPrimary = getenv( 'MW_REDIS_PRIMARY' );
$flyRedisLocal = getenv( 'MW_REDIS' ) ?: $flyRedisPrimary;
if ( $flyRedisPrimary ) {
	$flyRedis = static function ( $server ) use ( $flyRedisPassword ) {
		return [
			'class' => RedisBagOStuff::class,
			'servers' => [ $server ],
			'password' => $flyRedisPassword,
			'automaticFailover' => false,
			'connectTimeout' => 1,
			'readTimeout' => 1,
		];
	};
	$wgObjectCaches['redis-primary'] = $flyRedis( $flyRedisPrimary );
	$wgObjectCaches['redis-regional'] = [
		'class' => ReplicatedBagOStuff::class,
		'writeFactory' => [ 'class' => RedisBagOStuff::class, 'args' => [ $flyRedis( $flyRedisPrimary ) ] ],
		'readFactory' => [ 'class' => RedisBagOStuff::class, 'args' => [ $flyRedis( $flyRedisLocal ) ] ],
	];
	$wgSessionCacheType = 'redis-primary';
	$wgMainStash = 'redis-primary';
	$wgChronologyProtectorStash = 'redis-primary';
	$wgMainCacheType = 'redis-regional';
	$wgParserCacheType = 'redis-regional';
	$wgMessageCacheType = 'redis-regional';
	$wgLanguageConverterCacheType = 'redis-regional';
	# ResourceLoader's file dependency records: in the stash, not the database
	$wgResourceLoaderUseObjectCacheForDeps = true;
}

# --- machine-local: the localisation cache in files, not in the database
if ( getenv( 'MW_CACHE_DIR' ) ) {
	$wgCacheDirectory = getenv( 'MW_CACHE_DIR' );
	$wgLocalisationCacheConf['store'] = 'files';
}

# --- jobs run in the primary region only (they write).  Edits are replayed
# to the primary, so its requests run the jobs the edits queue; a dedicated
# `php maintenance/runJobs.php --wait` there would do as well.
$wgJobRunRate = $flyIsPrimary ? 1 : 0;

# --- after a write MediaWiki sets UseDC=master and UseCDNCache=false for
# $wgDataCenterUpdateStickTTL seconds (and cpPosIndex): fly-edge replays that
# client's requests to the primary and skips the cache meanwhile
# (fly_replay_when $cookie_UseDC; fly_cache_bypass $cookie_UseCDNCache).
$wgDataCenterUpdateStickTTL = 10;

# --- logs (errors only; MW_SHOW_EXCEPTIONS=1 shows their details in pages)
if ( getenv( 'MW_LOG_DIR' ) ) {
	$flyLogDir = getenv( 'MW_LOG_DIR' );
	$wgDBerrorLog = "$flyLogDir/mw-dberror.log";
	foreach ( [ 'exception', 'error', 'fatal', 'DBQuery', 'DBConnection', 'DBReplication', 'rdbms' ] as $flyGroup ) {
		$wgDebugLogGroups[$flyGroup] = [ 'destination' => "$flyLogDir/mw-errors.log", 'level' => 'warning' ];
	}
}
$wgShowExceptionDetails = (bool)getenv( "MW_SHOW_EXCEPTIONS" );
