import { FokError } from "../errors.js";

/** A record in a data file is malformed: names file, line (1-based; 0 for whole-file problems) and field. */
export class DataFormatError extends FokError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${file}${line ? `:${line}` : ""}: field ${JSON.stringify(field)} ${problem}`);
  }
}

/** A partition request that cannot be met (e.g. more clients than documents). */
export class PartitionError extends FokError {}
