// The BatchDO's SQLite store: the only code that writes the batch's SQL. One module per table
// or concern (migrations.ts and schema.ts, meta.ts, files.ts and directories.ts, file-list.ts, outputs.ts, tasks.ts with
// counts.ts (phase_tally), attempts.ts, workers.ts, orphans.ts, events.ts, timeline.ts), all on one executor (sql.ts) and
// its one `work` tally; BatchStore composes them into the one object the engine holds.
// Every task change updates its phase's counters in the same transaction, and every query on a
// hot path (callback, alarm, status) is an index lookup whose cost does not grow with the batch.
import { AttemptQueries } from "./attempts.ts";
import { CountQueries } from "./counts.ts";
import { DirectoryQueries } from "./directories.ts";
import { EventQueries } from "./events.ts";
import { FileListQueries } from "./file-list.ts";
import { FileQueries } from "./files.ts";
import { MetaQueries } from "./meta.ts";
import { OrphanQueries } from "./orphans.ts";
import { OutputQueries } from "./outputs.ts";
import { Schema } from "./schema.ts";
import { type PendingUsage, Sql, type SqlWork } from "./sql.ts";
import { TaskQueries } from "./tasks.ts";
import { TimelineQueries } from "./timeline.ts";
import { WorkerQueries } from "./workers.ts";

export type { AttemptRow } from "./attempts.ts";
export type { PhaseCounts, PhaseMeasured, PhaseUsage, TallyExtra } from "./counts.ts";
export type { FileListRow } from "./file-list.ts";
export type { FileRow, NewFile } from "./files.ts";
export type { BatchMeta, Stage } from "./meta.ts";
export type { PendingUsage, SqlWork } from "./sql.ts";
export { LIVE_STATES, OPEN_STATES, TASK_STATES, type NewTask, type TaskRow, type TaskState } from "./tasks.ts";
export { WORKER_STATES, type WorkerRow, type WorkerState } from "./workers.ts";
export type { TimelineAttempt } from "./timeline.ts";

export class BatchStore {
  /** Rows read and written by every query of this store (all tables), for the scale tests and benchmarks. */
  readonly work: SqlWork;
  /** Billed work not yet added to meta (rows written, setAlarm calls, requests): /status prices it. */
  readonly usage: PendingUsage;
  readonly #db: Sql;
  readonly #schema: Schema;
  readonly #meta: MetaQueries;
  readonly #files: FileQueries;
  readonly #directories: DirectoryQueries;
  readonly #fileLists: FileListQueries;
  readonly #outputs: OutputQueries;
  readonly #counts: CountQueries;
  readonly #tasks: TaskQueries;
  readonly #attempts: AttemptQueries;
  readonly #workers: WorkerQueries;
  readonly #orphans: OrphanQueries;
  readonly #events: EventQueries;
  readonly #timeline: TimelineQueries;

  constructor(storage: DurableObjectStorage) {
    this.#db = new Sql(storage);
    this.work = this.#db.work;
    this.usage = this.#db.usage;
    this.#schema = new Schema(this.#db);
    this.#meta = new MetaQueries(this.#db, this.#schema);
    this.#files = new FileQueries(this.#db);
    this.#directories = new DirectoryQueries(this.#db);
    this.#fileLists = new FileListQueries(this.#db);
    this.#outputs = new OutputQueries(this.#db);
    this.#counts = new CountQueries(this.#db);
    this.#tasks = new TaskQueries(this.#db, this.#counts);
    this.#attempts = new AttemptQueries(this.#db);
    this.#workers = new WorkerQueries(this.#db);
    this.#orphans = new OrphanQueries(this.#db);
    this.#events = new EventQueries(this.#db);
    this.#timeline = new TimelineQueries(this.#db);
  }

  /** After deleteAll (retention): the next read finds no batch instead of its remembered schema. */
  forget(): void {
    this.#schema.forget();
  }

  transaction<T>(fn: () => T): T {
    return this.#db.storage.transactionSync(fn);
  }

  databaseSize(): number {
    return this.#db.sql.databaseSize;
  }

  /** The earliest deadline: a live task's, an orphan machine's or a pool machine's check (index MIN lookups). */
  earliestDeadline(): number | null {
    const times = [this.#tasks.earliestDeadline(), this.#orphans.earliestRetry(), this.#workers.earliestCheck()].filter((t) => t !== null);
    return times.length > 0 ? Math.min(...times) : null;
  }

  // Each method below is its table module's (documented there), bound to this store's executor.

  // schema.ts
  exists: Schema["exists"] = () => this.#schema.exists();
  migrate: Schema["migrate"] = () => this.#schema.migrate();

  // meta.ts
  getMeta: MetaQueries["getMeta"] = () => this.#meta.getMeta();
  createMeta: MetaQueries["createMeta"] = (...a) => this.#meta.createMeta(...a);
  updateMeta: MetaQueries["updateMeta"] = (...a) => this.#meta.updateMeta(...a);
  addWarning: MetaQueries["addWarning"] = (...a) => this.#meta.addWarning(...a);
  flushUsage: MetaQueries["flushUsage"] = () => this.#meta.flushUsage();
  usageSoFar: MetaQueries["usageSoFar"] = (...a) => this.#meta.usageSoFar(...a);
  recentWarnings: MetaQueries["recentWarnings"] = (...a) => this.#meta.recentWarnings(...a);

  // files.ts
  insertFiles: FileQueries["insertFiles"] = (...a) => this.#files.insertFiles(...a);
  removeFile: FileQueries["removeFile"] = (...a) => this.#files.removeFile(...a);
  annotateFile: FileQueries["annotateFile"] = (...a) => this.#files.annotateFile(...a);
  filesAfter: FileQueries["filesAfter"] = (...a) => this.#files.filesAfter(...a);
  fileCount: FileQueries["fileCount"] = () => this.#files.fileCount();

  // directories.ts
  putDirectory: DirectoryQueries["putDirectory"] = (...a) => this.#directories.putDirectory(...a);
  directoryConfig: DirectoryQueries["directoryConfig"] = (...a) => this.#directories.directoryConfig(...a);

  // file-list.ts
  fileList: FileListQueries["fileList"] = (...a) => this.#fileLists.fileList(...a);
  startFileList: FileListQueries["startFileList"] = (...a) => this.#fileLists.startFileList(...a);
  setUploadId: FileListQueries["setUploadId"] = (...a) => this.#fileLists.setUploadId(...a);
  partWritten: FileListQueries["partWritten"] = (...a) => this.#fileLists.partWritten(...a);
  fileListParts: FileListQueries["fileListParts"] = (...a) => this.#fileLists.fileListParts(...a);
  fileListWritten: FileListQueries["fileListWritten"] = (...a) => this.#fileLists.fileListWritten(...a);

  // outputs.ts
  keyTaken: OutputQueries["keyTaken"] = (...a) => this.#outputs.keyTaken(...a);
  reserveOutput: OutputQueries["reserveOutput"] = (...a) => this.#outputs.reserveOutput(...a);
  outputsOf: OutputQueries["outputsOf"] = (...a) => this.#outputs.outputsOf(...a);
  outputOf: OutputQueries["outputOf"] = (...a) => this.#outputs.outputOf(...a);

  // tasks.ts, counts.ts
  insertTasks: TaskQueries["insertTasks"] = (...a) => this.#tasks.insertTasks(...a);
  getTask: TaskQueries["getTask"] = (...a) => this.#tasks.getTask(...a);
  moveTask: TaskQueries["moveTask"] = (...a) => this.#tasks.moveTask(...a);
  readyTasks: TaskQueries["readyTasks"] = (...a) => this.#tasks.readyTasks(...a);
  overdueTasks: TaskQueries["overdueTasks"] = (...a) => this.#tasks.overdueTasks(...a);
  earliestReady: TaskQueries["earliestReady"] = () => this.#tasks.earliestReady();
  failOpenTasks: TaskQueries["failOpenTasks"] = (...a) => this.#tasks.failOpenTasks(...a);
  tasksPage: TaskQueries["tasksPage"] = (...a) => this.#tasks.tasksPage(...a);
  hasTask: TaskQueries["hasTask"] = (...a) => this.#tasks.hasTask(...a);
  redriveFailed: TaskQueries["redriveFailed"] = (...a) => this.#tasks.redriveFailed(...a);
  heldBy: TaskQueries["heldBy"] = (...a) => this.#tasks.heldBy(...a);
  counts: CountQueries["counts"] = () => this.#counts.counts();
  phaseCounts: CountQueries["phaseCounts"] = (...a) => this.#counts.phaseCounts(...a);
  measured: CountQueries["measured"] = (...a) => this.#counts.measured(...a);
  phaseUsage: CountQueries["usage"] = () => this.#counts.usage();

  // attempts.ts
  recordMachine: AttemptQueries["recordMachine"] = (...a) => this.#attempts.recordMachine(...a);
  endAttempt: AttemptQueries["endAttempt"] = (...a) => this.#attempts.endAttempt(...a);
  cancelOpenAttempts: AttemptQueries["cancelOpenAttempts"] = (...a) => this.#attempts.cancelOpenAttempts(...a);
  reviveAttempt: AttemptQueries["reviveAttempt"] = (...a) => this.#attempts.reviveAttempt(...a);
  dropAttempt: AttemptQueries["dropAttempt"] = (...a) => this.#attempts.dropAttempt(...a);
  getAttempt: AttemptQueries["getAttempt"] = (...a) => this.#attempts.getAttempt(...a);
  noteAttempt: AttemptQueries["noteAttempt"] = (...a) => this.#attempts.noteAttempt(...a);
  setVerdict: AttemptQueries["setVerdict"] = (...a) => this.#attempts.setVerdict(...a);
  recentFailures: AttemptQueries["recentFailures"] = (...a) => this.#attempts.recentFailures(...a);
  attemptsOf: AttemptQueries["attemptsOf"] = (...a) => this.#attempts.attemptsOf(...a);

  // events.ts
  addEvent: EventQueries["addEvent"] = (...a) => this.#events.addEvent(...a);
  eventsAfter: EventQueries["eventsAfter"] = (...a) => this.#events.eventsAfter(...a);
  lastEventId: EventQueries["lastEventId"] = () => this.#events.lastEventId();

  // timeline.ts
  recentAttempts: TimelineQueries["recentAttempts"] = (...a) => this.#timeline.recentAttempts(...a);

  // orphans.ts
  addOrphan: OrphanQueries["addOrphan"] = (...a) => this.#orphans.addOrphan(...a);
  orphanNow: OrphanQueries["orphanNow"] = (...a) => this.#orphans.orphanNow(...a);
  dueOrphans: OrphanQueries["dueOrphans"] = (...a) => this.#orphans.dueOrphans(...a);
  orphanDone: OrphanQueries["orphanDone"] = (...a) => this.#orphans.orphanDone(...a);
  orphanRetry: OrphanQueries["orphanRetry"] = (...a) => this.#orphans.orphanRetry(...a);
  orphanRecheck: OrphanQueries["orphanRecheck"] = (...a) => this.#orphans.orphanRecheck(...a);
  orphanCount: OrphanQueries["orphanCount"] = () => this.#orphans.orphanCount();

  // workers.ts
  insertWorker: WorkerQueries["insertWorker"] = (...a) => this.#workers.insertWorker(...a);
  getWorker: WorkerQueries["getWorker"] = (...a) => this.#workers.getWorker(...a);
  updateWorker: WorkerQueries["updateWorker"] = (...a) => this.#workers.updateWorker(...a);
  deleteWorker: WorkerQueries["deleteWorker"] = (...a) => this.#workers.deleteWorker(...a);
  liveWorkers: WorkerQueries["liveWorkers"] = () => this.#workers.liveWorkers();
  workersDue: WorkerQueries["workersDue"] = (...a) => this.#workers.workersDue(...a);
  poolMachineCounts: WorkerQueries["poolMachineCounts"] = (...a) => this.#workers.poolMachineCounts(...a);
  unendedMachines: WorkerQueries["unendedMachines"] = () => this.#workers.unendedMachines();
  fleetUsage: WorkerQueries["fleetUsage"] = () => this.#workers.fleetUsage();
  poolMachinesToDrain: WorkerQueries["poolMachinesToDrain"] = (...a) => this.#workers.poolMachinesToDrain(...a);
  phaseCosts: WorkerQueries["phaseCosts"] = () => this.#workers.phaseCosts();
}
