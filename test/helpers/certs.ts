/** Certificates made with openssl at test time (scripts/test-certs.mjs, shared with bench/), in a temp dir. */
import { type CertFiles, makeCerts as writeCerts } from '../../scripts/test-certs.mjs';
import { tempDir } from './store.js';

export interface TestCerts extends CertFiles {
  dir: string;
  cleanup: () => void;
}

export function makeCerts(): TestCerts {
  const { dir, cleanup } = tempDir('trellis-certs-');
  return { ...writeCerts(dir), dir, cleanup };
}
