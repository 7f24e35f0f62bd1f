export interface CertFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A certificate (with its own CA) for 127.0.0.1 that `ca` did not sign. */
  foreignCert: string;
  foreignKey: string;
  foreignCa: string;
}
export function makeCerts(dir: string): CertFiles;
