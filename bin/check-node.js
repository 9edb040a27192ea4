// Loreley runs on Node 22.18 or newer. Run through bin/loreley or bin/loreley-supervisor (what npm
// puts on PATH), an older Node hands over to the package's own Node 24 by itself; this guard is for
// running a .js entry with an old Node directly: one line rather than a syntax error.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  const name = process.argv[1]?.replace(/^.*\//, '').replace(/\.js$/, '') ?? 'loreley';
  process.stderr.write(
    `${name}: Node.js 22.18 or newer is required (this is ${process.versions.node}). ` +
      `Run it as ${name} (the command npm installs, which finds the package's own Node 24), or install Node 22.18+.\n`,
  );
  process.exit(1);
}
