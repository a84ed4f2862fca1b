// Object keys: the one check every key that enters passes (keyProblem), how a key becomes a URL
// path without anything in between reinterpreting it (objectPath), the place a batch may read
// (underPlace), and where outputs go. The orchestrator picks OUTPUT_R2_KEY; a multi-page input adds
// page keys derived from it. Both sides use these functions so they always agree.

/** R2's object key limit (developers.cloudflare.com/r2/platform/limits/): 1,024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

const utf8 = new TextEncoder();
// C0 and C1 control characters and DEL; a lone surrogate has no UTF-8 form (it would be signed as U+FFFD).
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Why `key` is not a canonical object key, or null when it is: non-empty, at most 1,024 UTF-8
 * bytes, no control character (NUL included), no backslash, no lone surrogate, and `/`-separated
 * segments none of which is empty, `.` or `..` — so no URL parser, path library or signer can read
 * it as another key. `prefix: true` checks a prefix instead: the same, but it ends with `/`.
 */
export function keyProblem(key: string, options: { prefix?: boolean } = {}): string | null {
  const what = options.prefix ? "prefix" : "key";
  if (key.length === 0) return `the ${what} is empty`;
  const bytes = utf8.encode(key).byteLength;
  if (bytes > MAX_KEY_BYTES) return `the ${what} is ${bytes} bytes of UTF-8, more than R2's ${MAX_KEY_BYTES}`;
  const control = key.match(CONTROL);
  if (control) return `the ${what} contains a control character (U+${control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")})`;
  if (key.includes("\\")) return `the ${what} contains a backslash`;
  if (LONE_SURROGATE.test(key)) return `the ${what} is not well-formed Unicode (a lone surrogate)`;
  if (options.prefix && !key.endsWith("/")) return "the prefix must end with /";
  const segments = (options.prefix ? key.slice(0, -1) : key).split("/");
  for (const segment of segments) {
    if (segment === "") return `the ${what} has an empty segment (a leading, trailing or doubled /)`;
    if (segment === "." || segment === "..") return `the ${what} has a "${segment}" segment`;
  }
  return null;
}

/** Throws unless `key` is canonical (keyProblem): for code that must never build a URL from anything else. */
export function assertKey(key: string): void {
  const problem = keyProblem(key);
  if (problem) throw new Error(`not a canonical object key: ${problem} (${JSON.stringify(key.slice(0, 200))})`);
}

/**
 * The URL path of `key` in `bucket`: `/<bucket>/<segments>`, each segment percent-encoded as SigV4
 * does (RFC 3986: all but A-Z a-z 0-9 - _ . ~), so the path a URL parser keeps, the path signed and
 * the key stored are the same. Refuses a key that is not canonical.
 */
export function objectPath(bucket: string, key: string): string {
  assertKey(key);
  return `/${uriSegment(bucket)}/${key.split("/").map(uriSegment).join("/")}`;
}
function uriSegment(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Custom metadata naming the task that wrote an output, `<batch_id>/<task_id>` (the presigned PUT
 * signs it as `x-amz-meta-fanout-writer`): how a retry tells its own earlier upload from another's.
 */
export const WRITER_METADATA = "fanout-writer";

/** The directory of a key, with its trailing `/` (`""` at the top of the bucket). */
export function directoryOf(key: string): string {
  return key.slice(0, key.lastIndexOf("/") + 1);
}

/** True when `key` lies under `place` (a prefix ending in `/`; `""` is the whole bucket). Keys are canonical, so a startsWith is exact. */
export function underPlace(key: string, place: string): boolean {
  return key.startsWith(place);
}

const TIFF_EXTENSION = /\.tiff?$/i;

export function isTiff(key: string, contentType?: string): boolean {
  return TIFF_EXTENSION.test(key) || contentType?.toLowerCase().split(";")[0].trim() === "image/tiff";
}

/** Splits `dir/name.ext` into `dir/name` and `.ext` (ext empty when there is none). */
export function splitExtension(key: string): { stem: string; ext: string } {
  const slash = key.lastIndexOf("/");
  const dot = key.lastIndexOf(".");
  if (dot <= slash + 1) return { stem: key, ext: "" };
  return { stem: key.slice(0, dot), ext: key.slice(dot) };
}

/**
 * Output keys to try for a TIFF, most preferred first: `scan.jpg`, then `scan.tiff.jpg`
 * (when `scan.tif` and `scan.tiff` both exist), then numbered variants.
 */
export function* jpegKeyCandidates(inputKey: string): Generator<string> {
  const { stem, ext } = splitExtension(inputKey);
  yield `${stem}.jpg`;
  if (ext) yield `${stem}${ext.toLowerCase()}.jpg`;
  for (let n = 2; ; n++) yield `${stem}-${n}.jpg`;
}

/** Key of page `page` (1-based) of a multi-page output: page 1 is the key itself. */
export function pageKey(outputKey: string, page: number): string {
  if (page === 1) return outputKey;
  const { stem, ext } = splitExtension(outputKey);
  return `${stem}-p${String(page).padStart(3, "0")}${ext || ".jpg"}`;
}

export function fileName(key: string): string {
  return key.slice(key.lastIndexOf("/") + 1);
}
