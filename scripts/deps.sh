#!/usr/bin/env bash
# Installs what building, running and testing voxperf needs, and only what is missing: running it
# again on a ready machine changes nothing and takes a second. Debian 12 (bookworm) is the
# reference system; Ubuntu works when its apt sources carry PostgreSQL 15.
#
# It never stops, disables or reconfigures the system's own services: installing postgresql-15
# creates Debian's default cluster (port 5432) and redis-server its service (port 6379); both are
# left alone. The project runs its own instances on other ports (see env.sh).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

PGRX_VERSION=0.18.0

# Packages: PostgreSQL 15 server and headers (pgrx's bindgen reads them), libclang for bindgen,
# a C toolchain and make, Redis, sudo (cargo pgrx test --runas and install --sudo use it), the
# extensions and tools the benchmarks compare against or drive, curl for the API, and Chromium
# for the dashboard's browser test (the daemon's tests run it headless).
APT_PACKAGES=(
    postgresql-15 postgresql-server-dev-15
    libclang-dev clang build-essential pkg-config libssl-dev
    sudo redis-server redis-tools
    postgresql-15-hypopg postgresql-15-pg-qualstats pgpool2 wrk valgrind curl
    chromium
)

check_os() {
    local id="" id_like=""
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck disable=SC1091
        id_like="$(. /etc/os-release && echo "${ID_LIKE:-}")"
    fi
    case " $id $id_like " in
        *" debian "* | *" ubuntu "*) return 0 ;;
    esac
    cat >&2 <<EOF
error: scripts/deps.sh knows how to install dependencies on Debian and Ubuntu only
(this system says ID='${id:-unknown}'). Install these by hand, then run 'make run' again:
  - PostgreSQL 15 server, its contrib modules and its server headers, with pg_config at
    $PG_CONFIG (or set PG_CONFIG to yours)
  - libclang (>= 11) and clang, a C compiler, make, pkg-config, OpenSSL headers
  - redis-server and redis-cli (Redis >= 6)
  - sudo
  - for benchmarks: hypopg and pg_qualstats for PostgreSQL 15, pgpool-II, wrk, valgrind, curl
  - cargo-pgrx $PGRX_VERSION: cargo install cargo-pgrx --version $PGRX_VERSION --locked
EOF
    exit 1
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# True when apt knows a real (not purely virtual) package of that name. Debian 12 folds the
# contrib modules into postgresql-15, and postgresql-contrib-15 is only a virtual name there.
is_real_package() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | grep -q '^Version:'
}

missing_packages() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        is_installed "$p" || echo "$p"
    done
    if is_real_package postgresql-contrib-15 && ! is_installed postgresql-contrib-15; then
        echo postgresql-contrib-15
    fi
}

install_apt_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "apt packages: all present"
        return 0
    fi
    echo "apt packages to install: ${missing[*]}"
    if ! voxperf_is_root && ! command -v sudo >/dev/null 2>&1; then
        voxperf_die "sudo is not installed; as root, run: apt-get install -y ${missing[*]}"
    fi
    voxperf_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # After the update apt may know that postgresql-contrib-15 is a real package here (Ubuntu or
    # PostgreSQL's own apt repository); the list is computed again for that reason.
    mapfile -t missing < <(missing_packages)
    if ! is_installed postgresql-15 && ! is_real_package postgresql-15; then
        voxperf_die "postgresql-15 is not in this system's apt sources; add PostgreSQL's own apt" \
            "repository (PGDG, see the PostgreSQL download page for your distribution) and run again"
    fi
    voxperf_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if command -v rustup >/dev/null 2>&1; then
        rustup component add "${missing[@]}"
    else
        voxperf_die "cargo ${missing[*]} missing and rustup not found; install ${missing[*]} for your Rust toolchain"
    fi
}

ensure_cargo_pgrx() {
    if cargo pgrx --version 2>/dev/null | grep -qF "$PGRX_VERSION"; then
        echo "cargo-pgrx $PGRX_VERSION: present"
        return 0
    fi
    echo "installing cargo-pgrx $PGRX_VERSION (a one-time build of about 15 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
}

# `cargo pgrx init` registers the system pg_config under the pg15 key of ~/.pgrx/config.toml.
# As root it only writes that file; as a user it also initialises pgrx's own scratch cluster.
ensure_pgrx_init() {
    local config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    if [ -f "$config" ] && grep -qE '^[[:space:]]*pg15[[:space:]]*=' "$config"; then
        echo "cargo pgrx init: pg15 registered in $config"
        return 0
    fi
    # PGRX_PG_CONFIG_PATH (set by env.sh) would make cargo-pgrx skip the config file it is about
    # to write, so it is removed for this one command.
    env -u PGRX_PG_CONFIG_PATH cargo pgrx init --pg15 "$PG_CONFIG"
}

voxperf_banner "deps: apt packages, Rust components, cargo-pgrx $PGRX_VERSION"
check_os
install_apt_packages
[ -x "$PG_CONFIG" ] || voxperf_die "$PG_CONFIG not found after installing postgresql-15"
voxperf_ensure_pg_user
command -v cargo >/dev/null 2>&1 || voxperf_die "cargo not found: install Rust first (rustup)"
ensure_rust_components
ensure_cargo_pgrx
ensure_pgrx_init
