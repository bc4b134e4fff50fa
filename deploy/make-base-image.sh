#!/usr/bin/env bash
# make-base-image.sh - a Debian 12 base image for machines without an image registry: a minimal
# bookworm tree made by mmdebstrap from this host's apt sources (the archive or its mirror),
# imported as local/debian:12 (~20 s, ~160 MB). Then:
#   docker build --network host --build-arg BASE=local/debian:12 -f deploy/Dockerfile -t ps .
# Usage: deploy/make-base-image.sh [TAG]     (root; needs mmdebstrap and a running dockerd)
set -euo pipefail
tag=${1:-local/debian:12}
docker=${DOCKER:-docker}
if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "make-base-image: $tag exists"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "make-base-image: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
# The host's sources: deb822 (.sources) or one-line (.list) files, whichever it has.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "make-base-image: no apt sources under /etc/apt" >&2; exit 1; }
mmdebstrap --quiet --variant=minbase bookworm - "${sources[@]}" | "$docker" import - "$tag" >/dev/null
echo "make-base-image: made $tag"
