// Where the next page of a batch manifest starts: the small cursor stored with the batch after each
// page (what the bytes at its offset continue, the directory being read), and the JSON text that puts
// a fresh token parser there (manifest-page.ts reads the page).
import { z } from "zod";
import { describeZodError } from "../../shared/contracts.ts";

export const DirectoryContext = z.object({
  directory_path: z.string().optional(),
  /** Present once the key was read; may hold any JSON value. */
  processing_config: z.unknown().optional(),
  has_config: z.boolean(),
  /** The header is known in full: files are emitted, not skipped. */
  final: z.boolean(),
  /** Byte offset of the `[` of this directory's files, when they were skipped to find the header. */
  files_at: z.number().int().nonnegative().optional(),
});
export type DirectoryContext = z.infer<typeof DirectoryContext>;

/** Where the next page starts. `at` says what the bytes at `offset` continue. */
export const ManifestCursor = z.object({
  v: z.literal(1),
  offset: z.number().int().nonnegative(),
  /** entry: after file `file` of directory `dir`; files: at the `[` of dir's files; directory: after directory `dir`. */
  at: z.enum(["entry", "files", "directory"]),
  dir: z.number().int().nonnegative(),
  file: z.number().int().nonnegative(),
  directory: DirectoryContext.nullable(),
  batch_id_seen: z.boolean(),
  etag: z.string(),
});
export type ManifestCursor = z.infer<typeof ManifestCursor>;

/** The cursor stored in the batch's meta, or a reason it cannot be used. */
export function parseManifestCursor(stored: string | null): ManifestCursor | null | string {
  if (stored === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(stored);
  } catch {
    return "the stored manifest cursor is not JSON";
  }
  const parsed = ManifestCursor.safeParse(json);
  return parsed.success ? parsed.data : `the stored manifest cursor is invalid: ${describeZodError(parsed.error)}`;
}

/** The JSON text that puts a fresh parser where `cursor` left off; the bytes at cursor.offset follow it. */
export function resumePrefix(at: ManifestCursor["at"]): string {
  // A dummy `0` stands for the completed entry or directory so the next one follows a comma.
  if (at === "entry") return '{"directories":[{"files":[0';
  if (at === "files") return '{"directories":[{"files":';
  return '{"directories":[0';
}
