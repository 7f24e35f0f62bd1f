/** A features .npy file ([rows, ...sample]) and a labels .npy file ([rows]) as one ingest source. */
import type { IngestSource } from './ingest-source.js';
import { readNpyHeader } from './npy.js';
import { openPair, type PairFormat } from './pair-source.js';

const NPY: PairFormat = {
  name: 'npy',
  features: 'rows',
  minRank: 1,
  // numpy itself ignores bytes after the data.
  strictEnd: false,
  readHeader: async (src) => {
    const h = await readNpyHeader(src);
    return { dtype: h.dtype, shape: h.shape, swap: h.bigEndian ? h.itemsize : 1 };
  },
};

export function openNpy(featuresPath: string, labelsPath: string): Promise<IngestSource> {
  return openPair(NPY, featuresPath, labelsPath);
}
