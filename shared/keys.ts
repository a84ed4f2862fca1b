// Where outputs go. The orchestrator picks OUTPUT_R2_KEY; a multi-page input adds page keys
// derived from it. Both sides use these functions so they always agree.

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
