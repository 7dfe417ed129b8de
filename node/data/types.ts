/** One document: a unit that is never split between train and held-out. */
export interface Document {
  /** Stable id (source/file/offset), unique in its corpus. */
  id: string;
  text: string;
  /** Class used for label-skewed partitions and histograms (specialty, category, yes/no/maybe...). */
  label?: string;
}
