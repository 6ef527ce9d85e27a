#!/usr/bin/env bash
# Everything a release does, locally, publishing nothing: `kiln` for linux/darwin ×
# amd64/arm64 with version, commit and date stamped in, their sha256 checksums, the
# changelog since the last release tag, the TypeScript SDK built and packed, and the Go
# SDK's tag name. All of it goes to dist/ (gitignored). The version is the API's
# (info.version, which the SDKs follow); VERSION=vX.Y.Z overrides it. PLATFORMS (default
# "linux/amd64 linux/arm64 darwin/amd64 darwin/arm64") narrows the builds for a quick check.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}" # the approved toolchain, as in the Makefile
dev() { "$GO" run ./cmd/kiln-dev "$@"; }

# The SDKs must follow the API before anything is built.
versions="$(dev sdk-versions)"
api="$(sed -n 's/^api=//p' <<<"$versions")"
go_sdk_tag="$(sed -n 's/^go_sdk_tag=//p' <<<"$versions")"
version="${VERSION:-v$api}"
commit="$(git rev-parse HEAD)"
# The commit's own date, so that building one commit twice gives the same binaries.
date="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ HEAD)"
dirty=""
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  dirty=" (the working tree has uncommitted changes: a real release builds a clean tag)"
fi
echo "release-dry-run: $version at ${commit:0:12}, $date$dirty"

rm -rf dist
mkdir -p dist
pkg=github.com/kilnhq/kiln/internal/platform/version
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.Date=$date"
for platform in ${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}; do
    os="${platform%/*}" arch="${platform#*/}"
    name="kiln_${version#v}_${os}_${arch}"
    mkdir -p "dist/$name"
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" -o "dist/$name/kiln" ./cmd/kiln
    cp README.md "dist/$name/"
    # Sorted names, fixed owner and times: the archive is as reproducible as the binary.
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$date" -C dist -czf "dist/$name.tar.gz" "$name"
    rm -rf "dist/${name:?}"
    echo "release-dry-run: built dist/$name.tar.gz"
done

# The binary for this machine must report what was stamped into it.
host="dist/host"
mkdir -p "$host"
tar -xzf "dist/kiln_${version#v}_$("$GO" env GOOS)_$("$GO" env GOARCH).tar.gz" -C "$host" --strip-components=1
stamped="$("$host/kiln" version)"
rm -rf "$host"
for want in "\"version\":\"$version\"" "\"commit\":\"$commit\"" "\"date\":\"$date\""; do
  if [[ "$stamped" != *"$want"* ]]; then
    echo "release-dry-run: kiln version printed $stamped, without $want" >&2
    exit 1
  fi
done
echo "release-dry-run: kiln version → $stamped"

dev changelog --version "$version" --to HEAD >dist/CHANGELOG.md
echo "release-dry-run: dist/CHANGELOG.md ($(grep -c '^- ' dist/CHANGELOG.md || true) entries)"

npm --prefix sdk/typescript run --silent build
npm pack ./sdk/typescript --pack-destination dist --silent >/dev/null
echo "release-dry-run: TypeScript SDK packed: $(cd dist && ls ./*.tgz)"

(cd dist && sha256sum ./*.tar.gz ./*.tgz >checksums.txt)
echo "release-dry-run: dist/checksums.txt"
echo "release-dry-run: the Go SDK (module github.com/kilnhq/kiln/sdk/go) would be tagged $go_sdk_tag"
echo "release-dry-run: a release would tag $version and $go_sdk_tag at ${commit:0:12}; nothing was tagged or published"
