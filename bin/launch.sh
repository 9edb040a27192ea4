# Sourced by bin/loreley and bin/loreley-supervisor (POSIX sh): runs bin/$entry with a Node that
# can run Loreley (22.18 or newer). The `node` on PATH when it is new enough (LORELEY_NODE wins
# over both), else the Node 24 the package's own install brought (the `node` dependency), looked
# for the way Node resolves modules: nested in the package, then hoisted into each node_modules
# above it. `exec` keeps the pid, so the pid pm2 or systemd watch is the Node process itself.

# The bin that sourced this resolved its own symlinks (npm link, a global bin, node_modules/.bin)
# into $loreley_self: the package is the directory above it.
loreley_bin=$(cd "$(dirname "$loreley_self")" && pwd -P)
loreley_root=$(dirname "$loreley_bin")

# True when $1 runs and reports 22.18 or newer (`--version` prints before the runtime starts).
loreley_node_ok() {
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  loreley_version=$("$1" --version 2>/dev/null) || return 1
  loreley_version=${loreley_version#v}
  loreley_major=${loreley_version%%.*}
  loreley_rest=${loreley_version#*.}
  loreley_minor=${loreley_rest%%.*}
  case $loreley_major$loreley_minor in '' | *[!0-9]*) return 1 ;; esac
  [ "$loreley_major" -gt 22 ] || { [ "$loreley_major" -eq 22 ] && [ "$loreley_minor" -ge 18 ]; }
}

loreley_node=
if [ -n "${LORELEY_NODE:-}" ]; then
  loreley_node_ok "$LORELEY_NODE" || { echo "$loreley_name: LORELEY_NODE=$LORELEY_NODE is not a Node.js 22.18 or newer" >&2; exit 1; }
  loreley_node=$LORELEY_NODE
elif loreley_node_ok node; then
  loreley_node=node
else
  loreley_dir=$loreley_root
  while :; do
    if loreley_node_ok "$loreley_dir/node_modules/node/bin/node"; then
      loreley_node=$loreley_dir/node_modules/node/bin/node
      break
    fi
    [ "$loreley_dir" = / ] && break
    loreley_dir=$(dirname "$loreley_dir")
  done
fi
if [ -z "$loreley_node" ]; then
  echo "$loreley_name: needs Node.js 22.18 or newer: the node on PATH is $(node --version 2>/dev/null || echo missing), and the Node 24 of the package's \`node\` dependency is not installed under $loreley_root (reinstall the package with npm, or put Node 22.18+ first on PATH)" >&2
  exit 1
fi
exec "$loreley_node" "$loreley_bin/$loreley_entry" "$@"
