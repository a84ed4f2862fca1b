#!/usr/bin/env node
// fanout: the operator's CLI. `npm run fanout -- <command>`.
// Talks to ORCHESTRATOR_URL with ADMIN_TOKEN; with neither set it uses the local stack that
// `npm start` is running (context.ts). One file per command (commands.ts has the table); this
// one dispatches, and turns every error into one line (or, under --json, one JSON object) and
// its exit code (output.ts).
import { ApiError, UnreachableError } from "../api.ts";
import { closest } from "./args.ts";
import { COMMANDS } from "./commands.ts";
import { USAGE, version } from "./help.ts";
import { EXIT, NoOrchestrator, printJson, UsageError } from "./output.ts";

let current: string | null = null;
let json = false;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  json = rest.includes("--json");
  if (!command) {
    console.error(USAGE);
    return EXIT.usage;
  }
  if (command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return EXIT.ok;
  }
  if (command === "--version" || command === "-v" || command === "version") {
    console.log(version());
    return EXIT.ok;
  }
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!entry) {
    const guess = closest(command, Object.keys(COMMANDS));
    throw new UsageError(`unknown command "${command}".${guess ? ` Did you mean "${guess}"?` : ""}`);
  }
  current = command;
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(`usage: npm run fanout -- ${entry.usage}${entry.details ? `\n\n${entry.details}` : ""}`);
    return EXIT.ok;
  }
  return await entry.run(rest);
}

/** Exits once stdout and stderr are flushed: on a pipe, process.exit() alone can cut a long --json answer short. */
function exit(code: number): void {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

/** What an error means for the exit code (README's table, help.ts). */
function codeOf(error: unknown): number {
  const parseError = error instanceof TypeError && (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
  if (error instanceof UsageError || parseError) return EXIT.usage;
  if (error instanceof NoOrchestrator || error instanceof UnreachableError) return EXIT.unreachable;
  return EXIT.failed;
}

main(process.argv.slice(2)).then(exit, (error: unknown) => {
  const code = codeOf(error);
  const message = error instanceof Error ? error.message : String(error);
  const help = code === EXIT.usage ? (current ? `npm run fanout -- ${current} --help` : "npm run fanout -- help") : undefined;
  if (json) {
    // A script that asked for JSON gets its error as JSON too, on stdout where it reads the answer.
    printJson({ ok: false, error: message, exit_code: code, ...(error instanceof ApiError && error.status !== null ? { http_status: error.status } : {}), ...(help ? { usage: help } : {}) });
  } else {
    console.error(`fanout: ${message}${help ? `\nSee \`${help}\`.` : ""}`);
  }
  exit(code);
});
