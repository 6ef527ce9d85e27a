#!/usr/bin/env bash
# Refreshes the Swagger UI assets embedded in the binary (server/docs/swagger-ui) from the
# npm package swagger-ui-dist at the version given (default: the one in VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=server/docs/swagger-ui
version="${1:-$(cat "$dest/VERSION")}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE favicon-32x32.png; do
  cp "$tmp/package/$f" "$dest/$f"
done
echo "$version" >"$dest/VERSION"
echo "swagger-ui-dist $version copied to $dest"
