// One page of a batch manifest as the JSON tokens give it: where in the document each token is,
// what it says (validated entry by entry), and the cursor the next page resumes from (manifest-cursor.ts).
import { TokenParser, Tokenizer, TokenizerError, TokenParserError, TokenType, type ParsedElementInfo, type ParsedTokenInfo } from "@streamparser/json";
import { z } from "zod";
import {
  BatchId,
  describeZodError,
  Manifest,
  ManifestDirectory,
  ManifestDirectoryHeader,
  ManifestFile,
} from "../../shared/contracts.ts";
import { type DirectoryContext, type ManifestCursor, resumePrefix } from "./manifest-cursor.ts";

/** One file entry of the manifest, validated, unknown fields kept, with its directory's context. */
export interface ManifestEntry {
  file: ManifestFile;
  directory_path: string;
  processing_config: unknown;
  /** Index of the directory in `directories` and of the file in its `files`. */
  directory: number;
  index: number;
}

/** Largest processing_config carried in the cursor (it is rewritten with every page). */
export const MAX_PROCESSING_CONFIG_BYTES = 64 * 1024;

/**
 * Largest file entry, as manifest bytes. An entry is one row of the batch's SQLite, and a row may
 * not pass 2 MB (developers.cloudflare.com/durable-objects/platform/limits/); 64 KiB leaves a page
 * (MANIFEST_PAGE_BYTES + one entry, at most ~2x once re-serialised) far under the store's 1 MB
 * ceiling per bound value.
 */
export const MAX_MANIFEST_ENTRY_BYTES = 64 * 1024;

export type ManifestPage =
  | { entries: ManifestEntry[]; /** null: the manifest is read to its end. */ cursor: ManifestCursor | null; error?: undefined }
  | { error: string };

/** A reason the manifest cannot run; thrown inside the token callbacks to stop at once. */
class Invalid extends Error {}
/** Thrown once a page is full, to stop tokenizing the rest of the chunk. */
export const PAGE_FULL = Symbol("page full");

type Frame = { kind: "object" | "array"; member: string | number | undefined; awaitingKey: boolean; start: number };

function issuesAt(prefix: (string | number)[], error: z.ZodError): string {
  return describeZodError(new z.ZodError(error.issues.map((issue) => ({ ...issue, path: [...prefix, ...issue.path] }))));
}

/** What zod sees for a container whose contents are still streaming. */
function sample(t: ParsedTokenInfo): unknown {
  if (t.token === TokenType.LEFT_BRACE) return {};
  if (t.token === TokenType.LEFT_BRACKET) return [];
  return t.value;
}

/** A page that ended on a reason the manifest cannot run, or null when `error` is something else. */
export function pageError(error: unknown, key: string, reader: PageReader): { error: string } | null {
  if (error instanceof Invalid) return { error: error.message };
  if (error instanceof TokenizerError || error instanceof TokenParserError) {
    return { error: `manifest ${key} is not valid JSON: ${error.message} (near byte ${reader.lastOffset})` };
  }
  return null;
}

export class PageReader {
  private readonly tokenizer = new Tokenizer();
  private readonly parser = new TokenParser({
    paths: ["$.batch_id", "$.directories.*.directory_path", "$.directories.*.processing_config", "$.directories.*.files.*"],
    keepStack: false,
  });
  private readonly frames: Frame[] = [];
  private readonly prefixBytes: number;
  private readonly entries: ManifestEntry[] = [];
  private work = 0;
  /** Manifest bytes of the entries this page took, and of the entry that just closed. */
  private bytes = 0;
  private entryBytes = 0;
  /** The token being handled belongs to the resume prefix, not to the manifest. */
  private inPrefix = false;
  private batchIdSeen: boolean;
  private sawDirectories: boolean;
  private sawFiles = false;
  private directory: DirectoryContext | null;
  private stopAt: ManifestCursor | null = null;
  private done = false;
  /** The first bytes of the manifest, held until it is known whether they are a BOM; null after. */
  private head: Uint8Array | null;
  private bomBytes = 0;
  /** Absolute byte offset of the token being handled (for error messages). */
  lastOffset: number;

  private readonly key: string;
  private readonly batchId: string;
  private readonly cursor: ManifestCursor | null;
  private readonly limit: number;
  private readonly maxBytes: number;
  private readonly etag: string;

  /** A page ends after `limit` units of work (entries and directories) or once its entries reach `maxBytes` of manifest text. */
  constructor(key: string, batchId: string, cursor: ManifestCursor | null, limit: number, etag: string, maxBytes = Number.POSITIVE_INFINITY) {
    this.key = key;
    this.batchId = batchId;
    this.cursor = cursor;
    this.limit = limit;
    this.maxBytes = maxBytes;
    this.etag = etag;
    this.prefixBytes = cursor ? new TextEncoder().encode(resumePrefix(cursor.at)).byteLength : 0;
    this.batchIdSeen = cursor?.batch_id_seen ?? false;
    this.sawDirectories = cursor !== null;
    this.directory = cursor && cursor.at !== "directory" ? cursor.directory : null;
    this.sawFiles = cursor !== null && cursor.at !== "directory";
    this.lastOffset = cursor?.offset ?? 0;
    this.head = cursor === null ? new Uint8Array(0) : null;
    this.tokenizer.onToken = (t) => this.token(t);
    this.parser.onValue = (v) => this.value(v);
  }

  begin(): void {
    if (this.cursor) this.tokenizer.write(resumePrefix(this.cursor.at));
  }

  write(chunk: Uint8Array): void {
    if (this.head === null) {
      this.tokenizer.write(chunk);
      return;
    }
    // The tokenizer skips a UTF-8 BOM without counting it in its offsets: drop it here and count it.
    const head = new Uint8Array(this.head.byteLength + chunk.byteLength);
    head.set(this.head);
    head.set(chunk, this.head.byteLength);
    const bom = [0xef, 0xbb, 0xbf];
    if (head.byteLength < 3 && head.every((b, i) => b === bom[i])) {
      this.head = head;
      return;
    }
    this.head = null;
    if (bom.every((b, i) => head[i] === b)) {
      this.bomBytes = 3;
      this.tokenizer.write(head.subarray(3));
    } else {
      this.tokenizer.write(head);
    }
  }

  end(): ManifestPage {
    if (this.head !== null) this.tokenizer.write(this.head);
    this.tokenizer.end();
    if (!this.done) throw new TokenizerError("the manifest ended before its closing brace");
    return { entries: this.entries, cursor: null };
  }

  full(): ManifestPage {
    return { entries: this.entries, cursor: this.stopAt };
  }

  /** Where the page stopped (the next page's cursor offset). */
  stopOffset(): number {
    return this.stopAt!.offset;
  }

  private invalid(reason: string): Invalid {
    return new Invalid(`manifest ${this.key} is invalid: ${reason}`);
  }

  /** Real index of the directory being read (the resumed one is the parser's first). */
  private dirIndex(): number {
    return (this.cursor?.dir ?? 0) + (this.frames[1].member as number);
  }

  private fileIndex(): number {
    const i = this.frames[3].member as number;
    return this.cursor?.at === "entry" && this.frames[1].member === 0 ? this.cursor.file + i : i;
  }

  private absolute(offset: number): number {
    return offset - this.prefixBytes + (this.cursor?.offset ?? this.bomBytes);
  }

  private token(t: ParsedTokenInfo): void {
    this.inPrefix = t.offset < this.prefixBytes;
    const offset = this.absolute(t.offset);
    this.lastOffset = offset;
    if (this.done && !this.inPrefix) {
      this.parser.write(t); // anything after the closing brace is a syntax error
      return;
    }
    this.structure(t, offset);
    this.parser.write(t);
    if (this.stopAt) throw PAGE_FULL;
  }

  /** Follows where in the document the token is, checks container types, and ends directories. */
  private structure(t: ParsedTokenInfo, offset: number): void {
    const frames = this.frames;
    const top = frames[frames.length - 1];
    switch (t.token) {
      case TokenType.COLON:
        return;
      case TokenType.COMMA:
        if (top?.kind === "object") top.awaitingKey = true;
        return;
      case TokenType.RIGHT_BRACE:
      case TokenType.RIGHT_BRACKET: {
        const popped = frames.pop();
        // A file entry's extent in the manifest, for the page's byte bound (value() runs next).
        if (frames.length === 4 && popped !== undefined) this.entryBytes = offset + 1 - popped.start;
        if (!this.inPrefix) this.closed(frames.length, offset);
        return;
      }
      case TokenType.STRING:
        if (top?.kind === "object" && top.awaitingKey) {
          top.member = t.value as string;
          top.awaitingKey = false;
          return;
        }
    }
    // A value starts here.
    if (top?.kind === "array") top.member = (top.member as number) + 1;
    if (!this.inPrefix) this.opened(frames.length, t, offset);
    if (t.token === TokenType.LEFT_BRACE) frames.push({ kind: "object", member: undefined, awaitingKey: true, start: offset });
    else if (t.token === TokenType.LEFT_BRACKET) frames.push({ kind: "array", member: -1, awaitingKey: false, start: offset });
  }

  private underDirectories(): boolean {
    return this.frames[0].member === "directories";
  }

  private opened(depth: number, t: ParsedTokenInfo, offset: number): void {
    if (depth === 0) {
      if (t.token !== TokenType.LEFT_BRACE) {
        const r = Manifest.safeParse(sample(t));
        throw this.invalid(r.success ? "(root): expected an object" : describeZodError(r.error));
      }
      return;
    }
    if (!this.underDirectories()) return;
    if (depth === 1) {
      if (t.token !== TokenType.LEFT_BRACKET) {
        const r = z.array(z.unknown()).safeParse(sample(t));
        throw this.invalid(r.success ? "directories: expected an array" : issuesAt(["directories"], r.error));
      }
      this.sawDirectories = true;
      return;
    }
    if (depth === 2) {
      if (t.token !== TokenType.LEFT_BRACE) {
        const r = ManifestDirectory.safeParse(sample(t));
        throw this.invalid(r.success ? `directories.${this.dirIndex()}: expected an object` : issuesAt(["directories", this.dirIndex()], r.error));
      }
      this.directory = { has_config: false, final: false };
      this.sawFiles = false;
      return;
    }
    if (depth === 3 && this.frames[2].member === "files") {
      const dir = this.directory!;
      if (t.token !== TokenType.LEFT_BRACKET) {
        const r = z.array(z.unknown()).safeParse(sample(t));
        throw this.invalid(r.success ? `directories.${this.dirIndex()}.files: expected an array` : issuesAt(["directories", this.dirIndex(), "files"], r.error));
      }
      this.sawFiles = true;
      if (dir.final) return;
      if (dir.directory_path !== undefined && dir.has_config) {
        this.checkHeader();
        dir.final = true;
      } else {
        // Some header keys may follow the files: skip them to learn the header, then come back.
        dir.files_at = offset;
      }
    }
  }

  private checkHeader(): void {
    const dir = this.directory!;
    const header = {
      ...(dir.directory_path !== undefined ? { directory_path: dir.directory_path } : {}),
      ...(dir.has_config ? { processing_config: dir.processing_config } : {}),
    };
    const r = (this.sawFiles ? ManifestDirectory : ManifestDirectoryHeader).safeParse(this.sawFiles ? { ...header, files: [] } : header);
    if (!r.success) throw this.invalid(issuesAt(["directories", this.dirIndex()], r.error));
    if (dir.has_config && JSON.stringify(dir.processing_config ?? null).length > MAX_PROCESSING_CONFIG_BYTES) {
      throw this.invalid(`directories.${this.dirIndex()}.processing_config: larger than ${MAX_PROCESSING_CONFIG_BYTES} bytes as JSON`);
    }
  }

  private closed(depth: number, offset: number): void {
    if (depth === 0) {
      // The root object ended: what the whole-document schema would still miss.
      const r = Manifest.safeParse({ batch_id: this.batchIdSeen ? this.batchId : undefined, directories: this.sawDirectories ? [] : undefined });
      if (!r.success) throw this.invalid(describeZodError(r.error));
      this.done = true;
      return;
    }
    if (depth !== 2 || !this.underDirectories()) return;
    const dir = this.directory!;
    if (!this.sawFiles) {
      const r = ManifestDirectory.safeParse({ directory_path: dir.directory_path, files: undefined });
      throw this.invalid(r.success ? `directories.${this.dirIndex()}.files: missing` : issuesAt(["directories", this.dirIndex()], r.error));
    }
    const index = this.dirIndex();
    if (!dir.final) {
      this.checkHeader();
      // Read this directory's files again, now that its header is known.
      this.stop({ offset: dir.files_at!, at: "files", dir: index, file: 0, directory: { ...dir, final: true, files_at: undefined } });
      return;
    }
    this.directory = null;
    if (++this.work >= this.limit) this.stop({ offset: offset + 1, at: "directory", dir: index, file: 0, directory: null });
  }

  private stop(where: Pick<ManifestCursor, "offset" | "at" | "dir" | "file" | "directory">): void {
    this.stopAt = { v: 1, ...where, batch_id_seen: this.batchIdSeen, etag: this.etag };
  }

  private value({ value, key, stack }: ParsedElementInfo): void {
    if (this.inPrefix) return; // the dummy `0` standing for what the cursor already read
    if (stack.length === 1) {
      if (key !== "batch_id") return;
      const id = BatchId.safeParse(value);
      if (!id.success) throw this.invalid(issuesAt(["batch_id"], id.error));
      if (id.data !== this.batchId) throw new Invalid(`manifest ${this.key} is for batch ${id.data}, not ${this.batchId}`);
      this.batchIdSeen = true;
      return;
    }
    if (!this.underDirectories() || this.directory === null) return;
    const dir = this.directory;
    if (stack.length === 3) {
      if (dir.final) return; // read before the files, or read again after coming back to them
      if (key === "directory_path") dir.directory_path = value as string;
      else if (key === "processing_config") {
        dir.processing_config = value;
        dir.has_config = true;
      }
      return;
    }
    if (stack.length !== 4 || stack[3].key !== "files") return;
    this.work++;
    const directory = this.dirIndex();
    const index = this.fileIndex();
    // Checked even while skipped, so a skipped entry is an object and the cursor lands after its `}`.
    const file = ManifestFile.safeParse(value);
    if (!file.success) throw this.invalid(issuesAt(["directories", directory, "files", index], file.error));
    if (this.entryBytes > MAX_MANIFEST_ENTRY_BYTES) {
      throw this.invalid(`directories.${directory}.files.${index}: ${this.entryBytes} bytes, larger than ${MAX_MANIFEST_ENTRY_BYTES} bytes for one file entry`);
    }
    if (dir.final) {
      this.entries.push({
        file: file.data,
        directory_path: dir.directory_path!,
        processing_config: dir.has_config ? dir.processing_config : undefined,
        directory,
        index,
      });
      this.bytes += this.entryBytes;
    }
    if (this.work >= this.limit || this.bytes >= this.maxBytes) {
      // The entry's closing brace is the token being handled; the page resumes after it.
      this.stop({ offset: this.lastOffset + 1, at: "entry", dir: directory, file: index, directory: { ...dir } });
    }
  }
}
