/**
 * safetensors (https://github.com/huggingface/safetensors) reading and writing. Writing is deterministic: tensors
 * and metadata in sorted key order, no timestamps, so the same weights always give the same bytes. Reading refuses
 * anything that does not add up: a short file, a header that is not JSON, offsets that overlap, leave gaps or run
 * past the end, a dtype/shape that disagrees with the byte count, and NaN/Inf values.
 */
import { open } from "node:fs/promises";
import { FokError } from "../errors.js";

/** Base of every checkpoint or adapter file error. */
export class CheckpointError extends FokError {}

/** The file is not well-formed safetensors (truncated, corrupt header, lying offsets). */
export class SafetensorsFormatError extends CheckpointError {}

/** A tensor holds NaN or Inf. */
export class NonFiniteTensorError extends CheckpointError {
  constructor(
    readonly tensor: string,
    readonly index: number,
  ) {
    super(`tensor ${tensor} holds a non-finite value at flat index ${index}`);
  }
}

export type DType = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "U8" | "BOOL";
const BYTES: Record<string, number> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, U8: 1, BOOL: 1 };

export interface NamedTensor {
  shape: number[];
  /** The dtype in the file (F32 when written by us). */
  dtype?: DType;
  /** Values as float32 (F16/BF16/F64 are widened or narrowed on read). */
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

/** Serializes float32 tensors; key order and metadata order are sorted so output bytes are reproducible. */
export function writeSafetensors(tensors: Map<string, NamedTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const raw: RawTensor[] = [];
  for (const [name, t] of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length)
      throw new SafetensorsFormatError(`tensor ${name}: shape [${t.shape}] needs ${n} values, has ${t.data.length}`);
    // little-endian hosts only (x86, arm)
    raw.push({
      name,
      dtype: "F32",
      shape: t.shape,
      bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    });
  }
  return writeRawSafetensors(raw, metadata);
}

/** One tensor as the header describes it, before any of its data is read. */
export interface TensorHeader {
  name: string;
  dtype: string;
  shape: number[];
}

export interface ReadOptions {
  allowNonFinite?: boolean;
  /**
   * Called with the metadata and every tensor's header once the header has been validated and before any tensor
   * is read or widened to float32: throw to refuse the file (unexpected names, dtypes or shapes) at the cost of
   * reading its header only.
   */
  checkHeader?: (metadata: Record<string, string>, tensors: TensorHeader[]) => void;
}

/**
 * A safetensors file's header, validated (offsets tile the data section exactly), without reading any tensor:
 * what a viewer shows, and what {@link readSafetensors} checks before it reads.
 */
export function readSafetensorsHeader(bytes: Uint8Array): {
  metadata: Record<string, string>;
  tensors: TensorHeader[];
} {
  const { metadata, entries } = parseHeader(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return { metadata, tensors: entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })) };
}

/**
 * The header of a file of `fileLength` bytes whose first bytes are `buf` (all of them, or at least the 8-byte length
 * and the header), validated against that length.
 */
function parseHeader(buf: Buffer, fileLength = buf.length) {
  if (fileLength < 8)
    throw new SafetensorsFormatError(`file is ${fileLength} bytes, shorter than the 8-byte header length`);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (headerLen > MAX_HEADER || 8 + headerLen > fileLength) {
    throw new SafetensorsFormatError(
      `header length ${headerLen} runs past the end of a ${fileLength}-byte file (truncated?)`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8"));
  } catch (e) {
    throw new SafetensorsFormatError(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header))
    throw new SafetensorsFormatError("header is not a JSON object");
  const dataStart = 8 + headerLen;
  const dataLen = fileLength - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === "__metadata__") {
      for (const [k, val] of Object.entries((v ?? {}) as Record<string, unknown>)) {
        if (typeof val !== "string") throw new SafetensorsFormatError(`metadata ${k} is not a string`);
        metadata[k] = val;
      }
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e?.dtype !== "string" || !(e.dtype in BYTES))
      throw new SafetensorsFormatError(`tensor ${name}: unsupported dtype ${String(e?.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsFormatError(`tensor ${name}: bad shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((o) => Number.isInteger(o) && o >= 0) ||
      off[0] > off[1]
    ) {
      throw new SafetensorsFormatError(`tensor ${name}: bad data_offsets ${JSON.stringify(off)}`);
    }
    const n = (e.shape as number[]).reduce((a, b) => a * b, 1);
    if (off[1] - off[0] !== n * BYTES[e.dtype]!) {
      throw new SafetensorsFormatError(
        `tensor ${name}: ${e.dtype} [${e.shape}] needs ${n * BYTES[e.dtype]!} bytes, offsets give ${off[1] - off[0]}`,
      );
    }
    if (off[1] > dataLen)
      throw new SafetensorsFormatError(
        `tensor ${name}: data_offsets end ${off[1]} past the ${dataLen} data bytes (truncated?)`,
      );
    entries.push({ name, dtype: e.dtype, shape: e.shape as number[], begin: off[0], end: off[1] });
  }
  // offsets must tile the data section exactly: no overlap, no gap, nothing after
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expect = 0;
  for (const e of entries) {
    if (e.begin !== expect)
      throw new SafetensorsFormatError(
        `tensor ${e.name}: data starts at ${e.begin}, expected ${expect} (overlap or gap)`,
      );
    expect = e.end;
  }
  if (expect !== dataLen)
    throw new SafetensorsFormatError(`data section is ${dataLen} bytes but tensors cover ${expect}`);
  return { metadata, entries, dataStart };
}

/** Parses and validates a safetensors file; every tensor comes back as float32. */
export function readSafetensors(bytes: Uint8Array, options: ReadOptions = {}): SafetensorsFile {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { metadata, entries, dataStart } = parseHeader(buf);
  options.checkHeader?.(
    metadata,
    entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
  );

  const tensors = new Map<string, NamedTensor>();
  for (const e of entries) {
    const bytes = buf.subarray(dataStart + e.begin, dataStart + e.end);
    const data = widenTensor({ name: e.name, dtype: e.dtype, shape: e.shape, bytes }, options.allowNonFinite);
    tensors.set(e.name, { shape: e.shape, data, dtype: e.dtype as DType });
  }
  return { tensors, metadata };
}

/** One stored tensor's values as float32; a NaN or Inf is a NonFiniteTensorError naming it (unless allowed). */
export function widenTensor(t: RawTensor, allowNonFinite = false): Float32Array {
  const data = toFloat32(Buffer.from(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength), t.dtype);
  if (!allowNonFinite) {
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) throw new NonFiniteTensorError(t.name, i);
  }
  return data;
}

function toFloat32(raw: Buffer, dtype: string): Float32Array {
  const n = raw.length / BYTES[dtype]!;
  const out = new Float32Array(n);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case "F16":
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
      break;
    case "BF16": {
      const u = new Uint32Array(1);
      const f = new Float32Array(u.buffer);
      for (let i = 0; i < n; i++) {
        u[0] = dv.getUint16(i * 2, true) << 16;
        out[i] = f[0]!;
      }
      break;
    }
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    default:
      for (let i = 0; i < n; i++) out[i] = raw[i]!;
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** One tensor as stored: its header and its bytes in its own dtype. */
export interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Every tensor's header and stored bytes (views into `bytes`), the header validated, nothing widened. */
export function readSafetensorsRaw(bytes: Uint8Array): { metadata: Record<string, string>; tensors: RawTensor[] } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { metadata, entries, dataStart } = parseHeader(buf);
  const tensors = entries.map((e) => ({
    name: e.name,
    dtype: e.dtype,
    shape: e.shape,
    bytes: buf.subarray(dataStart + e.begin, dataStart + e.end),
  }));
  return { metadata, tensors };
}

/** One tensor's place in a file: its header and its bytes' absolute offset and length. */
export interface TensorLocation extends TensorHeader {
  offset: number;
  length: number;
}

/**
 * A safetensors file's validated header and where each tensor lies, read from the file's first bytes only (no
 * tensor data is read): what a streaming reader needs.
 */
export async function readSafetensorsLocations(
  path: string,
): Promise<{ metadata: Record<string, string>; tensors: TensorLocation[] }> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const len = Buffer.alloc(8);
    await fh.read(len, 0, Math.min(8, size), 0);
    const headerLen = size >= 8 ? Number(len.readBigUInt64LE(0)) : 0;
    const head = Buffer.alloc(8 + Math.min(headerLen, MAX_HEADER + 1, Math.max(0, size - 8)));
    await fh.read(head, 0, head.length, 0);
    const { metadata, entries, dataStart } = parseHeader(head, size);
    return {
      metadata,
      tensors: entries.map((e) => ({
        name: e.name,
        dtype: e.dtype,
        shape: e.shape,
        offset: dataStart + e.begin,
        length: e.end - e.begin,
      })),
    };
  } finally {
    await fh.close();
  }
}

/**
 * The header bytes (8-byte length and JSON) of a file holding tensors of these dtypes, shapes and byte lengths,
 * sorted by name, and that order: tensor names and metadata keys sorted, so the bytes are reproducible.
 */
export function rawSafetensorsHeader<T extends TensorHeader & { length: number }>(
  tensors: T[],
  metadata: Record<string, string> = {},
): { header: Buffer; sorted: T[]; dataLength: number } {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  const metaKeys = Object.keys(metadata).sort();
  if (metaKeys.length > 0) header.__metadata__ = Object.fromEntries(metaKeys.map((k) => [k, metadata[k]]));
  let offset = 0;
  for (const t of sorted) {
    if (header[t.name] !== undefined) throw new SafetensorsFormatError(`tensor ${t.name} given twice`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.length] };
    offset += t.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + headerBytes.length);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  return { header: out, sorted, dataLength: offset };
}

/** Writes tensors in their own dtypes; tensor names and metadata keys sorted, so the bytes are reproducible. */
export function writeRawSafetensors(tensors: RawTensor[], metadata: Record<string, string> = {}): Uint8Array {
  const { header, sorted, dataLength } = rawSafetensorsHeader(
    tensors.map((t) => ({ ...t, length: t.bytes.length })),
    metadata,
  );
  const out = Buffer.alloc(header.length + dataLength);
  header.copy(out, 0);
  let pos = header.length;
  for (const t of sorted) {
    out.set(t.bytes, pos);
    pos += t.bytes.length;
  }
  return out;
}
