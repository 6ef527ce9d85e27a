#!/usr/bin/env bash
# scripts/dev-deps.sh - make sure the local services Kiln needs are installed,
# running and configured. Used by `make run`, `make test` and CI.
#
#   1. PostgreSQL: installed (apt) and accepting connections.
#   2. pgvector:   available to the server. Debian 12 has no package for it, so
#                  it is built from Debian's source package (suite trixie) into
#                  the local server's extension directory.
#   3. Databases:  kiln and kiln_test exist. The extension itself is created by
#                  the migrations, not here.
#   4. Redis:      installed (apt), running without persistence, and
#                  maxmemory-policy noeviction (queues must never be evicted).
#   5. With --test: promtool (Debian's prometheus package), which the tests use
#                  to check and unit-test deploy/prometheus/alerts.yml, and
#                  chromium (Debian's package), the headless browser of the
#                  CORS end-to-end test, and pdftotext (poppler-utils), which
#                  reads the invoice PDFs' Chinese text back.
#   6. Fonts:      Droid Sans Fallback (fonts-droid-fallback), the CJK font of
#                  the default config's invoice PDFs.
#
# Idempotent; when everything is in place it only checks, in well under a second.
#
# Environment:
#   PGHOST (127.0.0.1) PGPORT (5432) PGUSER (postgres) PGPASSWORD
#   DATABASE_URL     if it points at a non-local host, that server is only checked
#                    (connectivity + pgvector available), nothing is installed.
#   REDIS_HOST (127.0.0.1) REDIS_PORT (6379) REDISCLI_AUTH (password, if any)
#   KILN_PGVECTOR_SUITE (trixie)  Debian suite to take pgvector's source from.
set -euo pipefail

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
PGVECTOR_SUITE="${KILN_PGVECTOR_SUITE:-trixie}"
DATABASES=(kiln kiln_test)
VECTOR_CHECK_DB=kiln_devdeps_vector_check

UID_NOW="$(id -u)"
RUNDIR="${TMPDIR:-/tmp}"
LOGFILE="$RUNDIR/kiln-dev-deps.$UID_NOW.log"
WORKDIR=""
APT_UPDATED=0
START_NS="$(date +%s%N)"

log() { printf 'dev-deps: %s\n' "$*"; }
warn() { printf 'dev-deps: warning: %s\n' "$*" >&2; }
# die "what failed" ["what to do" ...]
die() {
	printf 'dev-deps: FAILED: %s\n' "$1" >&2
	shift
	local line
	for line in "$@"; do printf 'dev-deps:   %s\n' "$line" >&2; done
	exit 1
}

cleanup() {
	if [ -n "$WORKDIR" ] && [ -d "$WORKDIR" ]; then
		rm -rf "$WORKDIR" 2>/dev/null || as_root rm -rf "$WORKDIR" 2>/dev/null || true
	fi
}
trap cleanup EXIT

# run_logged CMD...: run CMD with its output in $LOGFILE; on failure show the tail.
run_logged() {
	local rc=0
	printf '\n$ %s\n' "$*" >>"$LOGFILE"
	# 9>&-: daemons started from here (redis-server, postgres) must not inherit
	# the lock fd, or they would hold the lock for as long as they run.
	"$@" >>"$LOGFILE" 2>&1 9>&- || rc=$?
	[ "$rc" -eq 0 ] && return 0
	printf 'dev-deps: command failed (exit %s): %s\n' "$rc" "$*" >&2
	tail -n 25 "$LOGFILE" | sed 's/^/    | /' >&2
	printf 'dev-deps: full log: %s\n' "$LOGFILE" >&2
	return "$rc"
}

is_root() { [ "$UID_NOW" -eq 0 ]; }

# need_root WHY: fail clearly unless we are root or can use sudo.
need_root() {
	is_root && return 0
	command -v sudo >/dev/null 2>&1 && return 0
	die "need root to $1, and sudo is not available" \
		"re-run as root (or install sudo), or do it yourself and re-run this script"
}

as_root() {
	if is_root; then
		"$@"
	else
		sudo "$@"
	fi
}

is_local_host() {
	case "$1" in
	"" | localhost | 127.* | ::1 | "[::1]" | /*) return 0 ;;
	*) return 1 ;;
	esac
}

apt_update_once() {
	[ "$APT_UPDATED" -eq 1 ] && return 0
	run_logged as_root apt-get update -q ||
		die "apt-get update failed" "check the apt sources and the network, then re-run"
	APT_UPDATED=1
}

# apt_install PKG...: install Debian packages (never suggested/recommended ones).
apt_install() {
	command -v apt-get >/dev/null 2>&1 ||
		die "apt-get not found, cannot install: $*" "install these yourself, then re-run"
	need_root "install $*"
	apt_update_once
	run_logged as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends -o DPkg::Lock::Timeout=300 "$@" ||
		die "apt-get install $* failed" "see the log above; fix apt, then re-run"
}

elapsed() {
	local now
	now="$(date +%s%N)"
	awk -v a="$START_NS" -v b="$now" 'BEGIN { printf "%.2fs", (b - a) / 1e9 }'
}

# Only one instance at a time (make run + make test in parallel would both build).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$RUNDIR/kiln-dev-deps.$UID_NOW.lock"
	flock -w 900 9 || die "another dev-deps.sh is still running (lock $RUNDIR/kiln-dev-deps.$UID_NOW.lock)" \
		"wait for it to finish, then re-run"
fi
: >"$LOGFILE"

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

psql_admin() {
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -w -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres "$@"
}

pg_ready() { pg_isready -q -h "$PGHOST" -p "$PGPORT" -t 3 >/dev/null 2>&1; }

wait_pg_ready() {
	local i
	for i in $(seq 1 60); do
		pg_ready && return 0
		[ "$i" -eq 60 ] || sleep 0.5
	done
	return 1
}

# Host part of a postgres:// URL or a "host=..." conninfo string.
url_host() {
	local u="$1" rest auth
	case "$u" in
	*://*) ;;
	*)
		printf '%s\n' "$u" | sed -n 's/.*\(^\|[[:space:]]\)host=\([^[:space:]]*\).*/\2/p'
		return
		;;
	esac
	rest="${u#*://}"
	auth="${rest%%[/?]*}"
	auth="${auth##*@}"
	case "$auth" in
	\[*) auth="${auth#[}" && printf '%s\n' "${auth%%]*}" ;;
	*) printf '%s\n' "${auth%%:*}" ;;
	esac
}

# The local cluster to start: the one configured for $PGPORT, else the newest.
pick_pg_cluster() {
	local conf ver best=""
	for conf in /etc/postgresql/*/main/postgresql.conf; do
		[ -f "$conf" ] || continue
		ver="${conf#/etc/postgresql/}"
		ver="${ver%%/*}"
		if grep -Eq "^[[:space:]]*port[[:space:]]*=[[:space:]]*$PGPORT([^0-9]|$)" "$conf"; then
			printf '%s\n' "$ver"
			return
		fi
		if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$ver" | sort -V | tail -n 1)" = "$ver" ]; then
			best="$ver"
		fi
	done
	printf '%s\n' "$best"
}

# On a PostgreSQL this script installed itself: let loopback TCP in without a
# password (dev machine only), like the machines this project runs on.
trust_loopback() {
	local hba="/etc/postgresql/$1/main/pg_hba.conf"
	[ -f "$hba" ] || return 0
	grep -q 'kiln dev-deps' "$hba" && return 0
	as_root sed -i '1i host all all 127.0.0.1/32 trust # kiln dev-deps\nhost all all ::1/128 trust # kiln dev-deps' "$hba"
	log "postgres: $hba: trust for 127.0.0.1 and ::1 (fresh dev install)"
}

check_remote_database_url() {
	local host="$1" out
	command -v psql >/dev/null 2>&1 || apt_install postgresql-client
	if ! out="$(psql -X -w -q -tA -c "select coalesce((select default_version from pg_available_extensions where name = 'vector'), '')" "$DATABASE_URL" 2>&1)"; then
		die "cannot connect to DATABASE_URL (host $host): $out" \
			"check DATABASE_URL and that the server is up, or unset it to use the local PostgreSQL"
	fi
	log "postgres: DATABASE_URL points at $host: reachable (not managed here)"
	[ -n "$out" ] || die "pgvector is not available on the DATABASE_URL server ($host)" \
		"install pgvector on that server (CREATE EXTENSION vector must work there)"
	log "pgvector: available on $host ($out)"
}

ensure_postgres() {
	local local_pg=0 installed=0 major=""
	is_local_host "$PGHOST" && local_pg=1

	if [ "$local_pg" -eq 1 ]; then
		if ! command -v psql >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
			apt_install postgresql
			installed=1
			log "postgres: installed (apt-get install postgresql)"
		fi
	elif ! command -v psql >/dev/null 2>&1; then
		apt_install postgresql-client
	fi

	if [ "$installed" -eq 1 ]; then
		major="$(pick_pg_cluster)"
		if [ -z "$major" ]; then
			major="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
			run_logged as_root pg_createcluster "$major" main ||
				die "could not create a PostgreSQL $major cluster" "see the log above"
		fi
		trust_loopback "$major"
		if pg_ready; then
			run_logged as_root pg_ctlcluster --skip-systemctl-redirect "$major" main reload || true
		fi
	fi

	if pg_ready; then
		PG_STATE="running"
	elif [ "$local_pg" -eq 1 ]; then
		[ -n "$major" ] || major="$(pick_pg_cluster)"
		[ -n "$major" ] || die "no PostgreSQL cluster found in /etc/postgresql" \
			"create one (pg_createcluster <version> main) or reinstall postgresql, then re-run"
		need_root "start PostgreSQL cluster $major/main"
		run_logged as_root pg_ctlcluster --skip-systemctl-redirect "$major" main start ||
			die "could not start PostgreSQL cluster $major/main" \
				"clusters: $(pg_lsclusters --no-header 2>/dev/null | tr -s ' ' | paste -sd ';' -)" \
				"see /var/log/postgresql/postgresql-$major-main.log; is PGPORT=$PGPORT the cluster's port?"
		wait_pg_ready || die "PostgreSQL $major/main started but $PGHOST:$PGPORT does not accept connections after 30s" \
			"see /var/log/postgresql/postgresql-$major-main.log; check the port in /etc/postgresql/$major/main/postgresql.conf"
		PG_STATE="started cluster $major/main"
	else
		die "PostgreSQL at $PGHOST:$PGPORT is not accepting connections" \
			"start that server, or unset PGHOST to use a local one"
	fi

	local out
	if ! out="$(psql_admin -tA -c "select current_setting('server_version') || ' ' || current_setting('server_version_num')" 2>&1)"; then
		die "cannot log in to PostgreSQL at $PGHOST:$PGPORT as $PGUSER: $out" \
			"set PGUSER/PGPASSWORD, or allow trust auth for 127.0.0.1 in pg_hba.conf (dev machines)"
	fi
	PG_VERSION="${out%% *}"
	PG_MAJOR="$((${out##* } / 10000))"
	log "postgres: $PG_STATE ($PG_VERSION at $PGHOST:$PGPORT)"
	LOCAL_PG="$local_pg"
}

vector_version() {
	psql_admin -tA -c "select default_version from pg_available_extensions where name = 'vector'" ||
		die "could not query pg_available_extensions on $PGHOST:$PGPORT" "see the error above"
}

# Print "URI<TAB>SIGNED_BY" of this machine's Debian archive entry (suite = this
# release's codename, component main), read from the apt sources (both formats).
debian_mirror() {
	local codename f
	codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')"
	[ -n "$codename" ] || return 1
	{
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			awk -v cn="$codename" '
				/^[ \t]*#/ { next }
				$1 == "deb" || $1 == "deb-src" {
					i = 2; sb = ""
					if ($2 ~ /^\[/) {
						opts = ""
						for (i = 2; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
						if (match(opts, /signed-by=[^] \t]+/)) sb = substr(opts, RSTART + 10, RLENGTH - 10)
					}
					if ($(i + 1) != cn) next
					for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i "\t" sb; exit }
				}' "$f"
		done
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			awk -v cn="$codename" '
				function hasword(s, w,   a, n, k) { n = split(s, a, /[ \t]+/); for (k = 1; k <= n; k++) if (a[k] == w) return 1; return 0 }
				BEGIN { RS = ""; FS = "\n" }
				{
					split("", fld); key = ""
					for (i = 1; i <= NF; i++) {
						line = $i
						if (line ~ /^#/) continue
						if (line ~ /^[ \t]/) { if (key != "") fld[key] = fld[key] "\n" line; continue }
						p = index(line, ":"); if (!p) continue
						key = tolower(substr(line, 1, p - 1)); val = substr(line, p + 1)
						gsub(/^[ \t]+|[ \t]+$/, "", val); fld[key] = val
					}
					if (tolower(fld["enabled"]) == "no") next
					if (!hasword(fld["types"], "deb") && !hasword(fld["types"], "deb-src")) next
					if (!hasword(fld["suites"], cn) || !hasword(fld["components"], "main")) next
					split(fld["uris"], u, /[ \t]+/)
					sb = fld["signed-by"]
					if (sb !~ /^\//) sb = ""; else sub(/[ \t\n].*/, "", sb)
					print u[1] "\t" sb; exit
				}' "$f"
		done
	} | awk -F '\t' '$1 ~ /^(https?|ftp|file):/ { print; exit }'
}

# Build pgvector from Debian's source package and install it for PG_MAJOR.
build_pgvector() {
	local major="$PG_MAJOR" pgc="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
	local pkgs=() mirror uri signed opt="" srcdir dsc_version up_version

	[ -x "/usr/lib/postgresql/$major/bin/postgres" ] ||
		die "pgvector is missing and the PostgreSQL $major server at $PGHOST:$PGPORT is not this machine's Debian package" \
			"install pgvector into that server (e.g. use the pgvector/pgvector image), then re-run"

	# A binary package, where the archive has one (not Debian 12 with PG 15).
	if command -v apt-get >/dev/null 2>&1; then
		need_root "install pgvector"
		apt_update_once
		if apt-cache policy "postgresql-$major-pgvector" 2>/dev/null | grep -q '^ *Candidate: [^(]'; then
			apt_install "postgresql-$major-pgvector"
			PGVECTOR_HOW="installed postgresql-$major-pgvector (apt)"
			return 0
		fi
	fi

	[ -f "/usr/include/postgresql/$major/server/postgres.h" ] || pkgs+=("postgresql-server-dev-$major")
	{ command -v gcc && command -v make; } >/dev/null 2>&1 || pkgs+=(build-essential)
	command -v dpkg-source >/dev/null 2>&1 || pkgs+=(dpkg-dev)
	[ "${#pkgs[@]}" -eq 0 ] || apt_install "${pkgs[@]}"
	[ -x "$pgc" ] || die "$pgc not found after installing postgresql-server-dev-$major" \
		"check that postgresql-server-dev-$major matches the running server's major version"

	grep -qx 'ID=debian' /etc/os-release 2>/dev/null ||
		die "pgvector is missing and this is not Debian, so the Debian source package cannot be used" \
			"install pgvector for PostgreSQL $major with your distribution's packages, then re-run"
	mirror="$(debian_mirror)" ||
		die "could not find this machine's Debian archive in /etc/apt/sources.list{,.d}" \
			"add the Debian archive for this release (component main) to apt's sources, then re-run"
	[ -n "$mirror" ] ||
		die "could not find this machine's Debian archive in /etc/apt/sources.list{,.d}" \
			"add the Debian archive for this release (component main) to apt's sources, then re-run"
	uri="${mirror%%$'\t'*}"
	signed="${mirror#*$'\t'}"
	[ -z "$signed" ] || opt="[signed-by=$signed] "

	# Everything apt needs for the source download lives in a private temp dir:
	# a sources list with a single deb-src line (no "deb" line, so no binary
	# package can ever come from $PGVECTOR_SUITE) and its own lists directory,
	# so the system's sources and package lists are never touched.
	WORKDIR="$(mktemp -d "$RUNDIR/kiln-pgvector.XXXXXX")"
	chmod 755 "$WORKDIR" # the _apt download sandbox user must reach lists/partial
	mkdir -p "$WORKDIR/lists/partial" "$WORKDIR/src"
	printf 'deb-src %s%s %s main\n' "$opt" "$uri" "$PGVECTOR_SUITE" >"$WORKDIR/sources.list"
	local apt_opts=(
		-o "Dir::Etc::sourcelist=$WORKDIR/sources.list"
		-o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$WORKDIR/lists"
		-o "Dir::Cache::pkgcache="
		-o "Dir::Cache::srcpkgcache="
		-o "APT::Get::List-Cleanup=0"
	)
	run_logged as_root apt-get "${apt_opts[@]}" update -q ||
		die "apt-get update for '$(cat "$WORKDIR/sources.list")' failed" \
			"check that this machine reaches its Debian archive, then re-run"
	if is_root && getent passwd _apt >/dev/null 2>&1; then
		chown _apt "$WORKDIR/src"
	fi
	(cd "$WORKDIR/src" && run_logged apt-get "${apt_opts[@]}" source -q pgvector) ||
		die "apt-get source pgvector ($PGVECTOR_SUITE) failed" "see the log above"

	srcdir="$(find "$WORKDIR/src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)"
	[ -f "$srcdir/Makefile" ] ||
		die "pgvector source tree not found after apt-get source" "see $LOGFILE"
	dsc_version="$(sed -n 's/^Version: //p' "$WORKDIR"/src/pgvector_*.dsc | head -n 1)"
	up_version="${srcdir##*/pgvector-}"

	# OPTFLAGS= drops upstream's -march=native (as Debian does): the library
	# then runs on any x86-64 CPU; pgvector picks SIMD code paths at run time.
	run_logged make -C "$srcdir" -j"$(nproc)" PG_CONFIG="$pgc" OPTFLAGS= ||
		die "building pgvector $up_version failed" "see the log above"
	need_root "install pgvector into /usr/lib/postgresql/$major"
	run_logged as_root make -C "$srcdir" PG_CONFIG="$pgc" OPTFLAGS= install ||
		die "installing pgvector $up_version failed" "see the log above"
	PGVECTOR_HOW="built $up_version from source (Debian $PGVECTOR_SUITE pgvector $dsc_version) for PostgreSQL $major"
}

# CREATE EXTENSION vector in a scratch database, use it, drop the database.
verify_pgvector() {
	local out
	psql_admin -c "DROP DATABASE IF EXISTS $VECTOR_CHECK_DB" -c "CREATE DATABASE $VECTOR_CHECK_DB" >/dev/null ||
		die "could not create the scratch database $VECTOR_CHECK_DB to check pgvector" "does $PGUSER have CREATEDB?"
	out="$(psql -X -w -q -tA -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$VECTOR_CHECK_DB" \
		-c "CREATE EXTENSION vector" \
		-c "SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector" 2>&1)" || {
		psql_admin -c "DROP DATABASE IF EXISTS $VECTOR_CHECK_DB" >/dev/null 2>&1 || true
		die "CREATE EXTENSION vector fails after installing pgvector: $out" \
			"see $LOGFILE; the server may need a restart (pg_ctlcluster $PG_MAJOR main restart)"
	}
	psql_admin -c "DROP DATABASE IF EXISTS $VECTOR_CHECK_DB" >/dev/null ||
		warn "could not drop the scratch database $VECTOR_CHECK_DB"
	[ "$out" = "2" ] || die "pgvector sanity query returned '$out', expected 2" "see $LOGFILE"
}

ensure_pgvector() {
	local ver
	ver="$(vector_version)"
	if [ -n "$ver" ]; then
		log "pgvector: available ($ver)"
		return 0
	fi
	[ "$LOCAL_PG" -eq 1 ] || die "pgvector is not available on $PGHOST:$PGPORT" \
		"install pgvector on that server (CREATE EXTENSION vector must work there), then re-run"
	log "pgvector: missing, building it (about a minute)..."
	build_pgvector
	ver="$(vector_version)"
	[ -n "$ver" ] || die "pgvector was installed under /usr/lib/postgresql/$PG_MAJOR but the server at $PGHOST:$PGPORT does not list it" \
		"is that server this machine's PostgreSQL $PG_MAJOR (and not e.g. a container)?"
	verify_pgvector
	log "pgvector: $PGVECTOR_HOW; CREATE EXTENSION vector checked"
}

ensure_databases() {
	local db
	for db in "${DATABASES[@]}"; do
		if [ "$(psql_admin -tA -c "select 1 from pg_database where datname = '$db'")" = 1 ]; then
			log "db $db: exists"
		else
			psql_admin -c "CREATE DATABASE \"$db\"" >/dev/null ||
				die "could not create database $db on $PGHOST:$PGPORT" "does $PGUSER have CREATEDB?"
			log "db $db: created"
		fi
	done
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

# 0 = PONG, 1 = not reachable; dies when reachable but refusing us.
redis_ping() {
	local out
	out="$(rcli ping 2>&1)" || true
	case "$out" in
	PONG) return 0 ;;
	*NOAUTH* | *WRONGPASS* | *"AUTH failed"* | *"invalid password"*)
		die "Redis at $REDIS_HOST:$REDIS_PORT wants a password: $out" "export REDISCLI_AUTH=<password> and re-run" ;;
	*LOADING*) return 1 ;;
	*) return 1 ;;
	esac
}

ensure_redis() {
	local local_redis=0 state dir logf i pol
	is_local_host "$REDIS_HOST" && local_redis=1

	if [ "$local_redis" -eq 1 ] && ! command -v redis-server >/dev/null 2>&1; then
		apt_install redis-server
		log "redis: installed (apt-get install redis-server)"
	elif ! command -v redis-cli >/dev/null 2>&1; then
		apt_install redis-tools
	fi

	if redis_ping; then
		state="running"
	elif [ "$local_redis" -eq 1 ]; then
		if is_root || [ -w /var/lib/redis ]; then
			dir=/var/lib/redis
			logf=/var/log/redis/ci.log
			mkdir -p "$dir" /var/log/redis
		else
			dir="${XDG_RUNTIME_DIR:-$RUNDIR}/kiln-redis"
			logf="$dir/redis.log"
			mkdir -p "$dir"
		fi
		# No persistence: this is a dev/test instance.
		run_logged redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
			--save "" --appendonly no --dir "$dir" --logfile "$logf" ||
			die "could not start redis-server on port $REDIS_PORT" "see the log above and $logf"
		for i in $(seq 1 40); do
			redis_ping && break
			[ "$i" -lt 40 ] || die "redis-server started but $REDIS_HOST:$REDIS_PORT does not answer PING after 10s" "see $logf"
			sleep 0.25
		done
		state="started (no persistence, log $logf)"
	else
		die "Redis at $REDIS_HOST:$REDIS_PORT does not answer PING" \
			"start that server, or unset REDIS_HOST to use a local one"
	fi

	pol="$(rcli config get maxmemory-policy 2>&1 | sed -n 2p)" || true
	if [ "$pol" = noeviction ]; then
		log "redis: $state at $REDIS_HOST:$REDIS_PORT (maxmemory-policy noeviction)"
	elif [ "$(rcli config set maxmemory-policy noeviction 2>&1)" = OK ]; then
		log "redis: $state at $REDIS_HOST:$REDIS_PORT; maxmemory-policy ${pol:-?} -> noeviction"
	else
		log "redis: $state at $REDIS_HOST:$REDIS_PORT"
		warn "could not set maxmemory-policy noeviction on $REDIS_HOST:$REDIS_PORT (currently '${pol:-unknown}'); queued jobs may be evicted under memory pressure"
	fi
}

ensure_promtool() {
	if command -v promtool >/dev/null 2>&1; then
		log "promtool: available"
		return
	fi
	apt_install prometheus
	command -v promtool >/dev/null 2>&1 ||
		die "promtool still missing after installing prometheus" "install Debian's prometheus package, then re-run"
	log "promtool: installed (Debian package prometheus)"
}

ensure_chromium() {
	if command -v chromium >/dev/null 2>&1; then
		log "chromium: available"
		return
	fi
	apt_install chromium
	command -v chromium >/dev/null 2>&1 ||
		die "chromium still missing after installing it" "install Debian's chromium package, then re-run"
	log "chromium: installed (Debian package chromium)"
}

# ensure_file_from PATH PKG: install Debian package PKG unless PATH exists.
ensure_file_from() {
	if [ -e "$1" ]; then
		log "$2: available"
		return
	fi
	apt_install "$2"
	[ -e "$1" ] || die "$1 still missing after installing $2" "install Debian's $2 package, then re-run"
	log "$2: installed"
}

# ---------------------------------------------------------------------------

WITH_TEST_TOOLS=0
for arg in "$@"; do
	case "$arg" in
	--test) WITH_TEST_TOOLS=1 ;;
	*) die "unknown argument: $arg" "usage: scripts/dev-deps.sh [--test]" ;;
	esac
done

db_url_host=""
if [ -n "${DATABASE_URL:-}" ]; then
	db_url_host="$(url_host "$DATABASE_URL")"
fi
if [ -n "${DATABASE_URL:-}" ] && ! is_local_host "$db_url_host"; then
	check_remote_database_url "$db_url_host"
else
	ensure_postgres
	ensure_pgvector
	ensure_databases
fi
ensure_redis
ensure_file_from /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf fonts-droid-fallback
if [ "$WITH_TEST_TOOLS" = 1 ]; then
	ensure_promtool
	ensure_chromium
	ensure_file_from /usr/bin/pdftotext poppler-utils
fi
log "all set ($(elapsed))"
