// Imported first by the entry points: fauxqs loads node:sqlite, whose ExperimentalWarning
// would otherwise open every `npm start` and demo run. Every other warning is still printed.
process.removeAllListeners("warning");
process.on("warning", (warning) => {
  if (warning.name === "ExperimentalWarning" && /SQLite/.test(warning.message)) return;
  process.stderr.write(`(node:${process.pid}) ${warning.name}: ${warning.message}\n`);
});
