// Loreley runs its TypeScript sources directly, which needs Node 22.18 or newer. Fail with one line
// rather than a syntax error from an older Node.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `loreley: Node.js 22.18 or newer is required (this is ${process.versions.node}). ` +
      'Run it through npm (npm start, npx loreley), which uses the Node 24 that npm ci installs, or install Node 22.18+.\n',
  );
  process.exit(1);
}
