// A TaskError is a failure the orchestrator hears about in an error callback; its message
// is written for the operator reading `GET /status/:batchId`, not for the worker's author.

/** input: the object itself is wrong; storage: R2 failed; resources: too big for this machine. */
export type TaskErrorKind = "input" | "storage" | "resources" | "internal";

export class TaskError extends Error {
  readonly kind: TaskErrorKind;
  /** Whether running the same task again could succeed. */
  readonly retryable: boolean;
  constructor(kind: TaskErrorKind, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "TaskError";
    this.kind = kind;
    this.retryable = options.retryable ?? kind === "storage";
  }
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/**
 * libtiff warnings that libvips passes on beside the real error: true of many valid files,
 * never the reason a page failed (the issue-26 corpus showed 80 of them before one real line).
 */
const NOISE = [
  /set_get_field_type of custom tag/i,
  /unknown field with tag/i,
  /ASCII value for tag .* does not end in null/i,
  /incorrect count for field/i,
  /wrong data type \d+ for .*tag ignored/i,
  /tags are not sorted in ascending order/i,
  /nonstandard tile (width|length)/i,
  /sum of Photometric type-related color channels and ExtraSamples/i,
  /deprecated and troublesome old-style JPEG/i,
  // A scanline of -1 (2^32 - 1) says libtiff gave up, not where: the line next to it says why.
  /scanline 4294967295/,
];

const TRUNCATED = /read error|truncat|premature end|unexpected end|bad seek|seek error|not enough data|cut short|past the end/i;
const CORRUPT = /bad code word|corrupt|invalid|bogus|decode error|bad (huffman|code)|(LZW|ZIP|Fax3|Fax4|PackBits|ZSTD|LZMA)Decode|unknown marker|premature|not a JPEG/i;

/**
 * A decoder's message as one sentence an operator can act on: what is wrong with the file, a
 * detail or two in parentheses (no temp path, each line once, libtiff's noise dropped), and what to do.
 */
export function describeDecodeError(message: string, input: string): string {
  const lines = [
    ...new Set(
      message
        .split("\n")
        .map((line) =>
          line
            .split(`${input}: `)
            .join("")
            .split(input)
            .join("the file")
            .replace(/\/\S*fanout-[^\s:]*:?\s*/g, "")
            .replace(/^\s*(Input (file|buffer) has corrupt header:\s*)?/i, "")
            .replace(/^(tiff2vips|vips_\w+|VipsForeignLoad\w*|source input|image):\s*/i, "")
            .replace(/^(source input|image):\s*/i, "")
            .trim(),
        )
        .filter((line) => line !== ""),
    ),
  ];
  const meaningful = lines.filter((line) => !NOISE.some((noise) => noise.test(line)));
  // Only noise: the first line says more than nothing, unless it is the meaningless scanline.
  const details = meaningful.length > 0 ? meaningful : lines.filter((line) => !/scanline 4294967295/.test(line)).slice(0, 1);
  const shown = details.slice(0, 2).join("; ") + (details.length > 2 ? `; and ${details.length - 2} more` : "");
  const detail = shown ? ` (${shown})` : "";
  if (TRUNCATED.test(shown) || (details.length === 0 && lines.some((l) => /scanline 4294967295/.test(l)))) {
    return `image data is truncated or corrupt${detail}: upload the file again, or export it again from the original`;
  }
  if (/exceeds pixel limit/i.test(shown)) return `the image exceeds the pixel limit${detail}`;
  if (CORRUPT.test(shown)) return `image data is corrupt${detail}: export it again from the original`;
  if (/unsupported image format/i.test(shown)) return `libvips cannot read this TIFF: it is corrupt or uses an encoding nothing here decodes${detail}; export it again as an uncompressed or LZW TIFF`;
  return shown ? `${shown}: export it again from the original` : "the decoder gave no reason: export it again from the original";
}
