// Guards every npm script that needs Node 22: the `node` devDependency provides it, but
// `npm install --ignore-scripts` silently falls back to the system Node.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(
    `fanout needs Node >= 22.12 (running ${process.version} at ${process.execPath}).\n` +
      `Run \`npm install\` (it installs Node 22 into node_modules/.bin) and use \`npm run …\`.`,
  );
  process.exit(1);
}
