// Guards every npm script that needs Node >= 22.12, and says once at install what runs fanout.
// Plain JavaScript on purpose: it must run on the system's older Node (20 cannot load .ts files),
// which is exactly when it has something to say. The `node` devDependency puts Node 22 in
// node_modules/.bin, where every `npm run …` and `npx …` finds it; `npm install --ignore-scripts`
// skips that, and npm then silently runs the system Node.
//   node scripts/check-node.js              exit 1 with one paragraph when this Node is too old
//   node scripts/check-node.js --install    (preinstall) one note when npm runs on an older Node, or when
//                                           node_modules/.bin has no Node 22; exit 0 either way
const older = (version) => {
  const [major, minor] = version.replace(/^v/, "").split(".").map(Number);
  return major < 22 || (major === 22 && minor < 12);
};
const tooOld = older(process.version);

if (process.argv.includes("--install")) {
  // npm runs the root package's install scripts with node_modules/.bin first on PATH, so this is
  // normally the new Node already; the Node that runs npm itself is in npm's user agent.
  const npmNode = /\bnode\/(v[0-9.]+)/.exec(process.env.npm_config_user_agent ?? "")?.[1] ?? process.version;
  if (tooOld) {
    console.error(
      `fanout: Node 22 is not in node_modules/.bin (this is ${process.version}): the \`node\` package's install script did not\n` +
        `run. Run \`npm rebuild node\`; until then \`npm test\` and \`npm start\` stop and say so.`,
    );
  } else if (older(npmNode)) {
    console.error(
      `fanout: the system Node is ${npmNode}; fanout runs on Node ${process.version}, which this install put in node_modules/.bin.\n` +
        `\`npm run …\` and \`npx …\` use it; a bare \`node …\` does not. (npm's own EBADENGINE warnings, which say the\n` +
        `same for each package, are off: .npmrc sets loglevel=error.)`,
    );
  }
} else if (tooOld) {
  console.error(
    `fanout needs Node >= 22.12, and this is ${process.version} (${process.execPath}).\n` +
      `\`npm install\` puts Node 22 into node_modules/.bin for \`npm run …\` to use; after \`npm install --ignore-scripts\`\n` +
      `it is missing: run \`npm rebuild node\` (or \`npm install\` without --ignore-scripts), then \`npm run …\` again.`,
  );
  process.exit(1);
}
