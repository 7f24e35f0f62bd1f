/**
 * Certificates made at test time with the openssl binary: a CA, a server
 * certificate for the loopback addresses the tests bind (SAN IP:127.0.0.1-3
 * and DNS:localhost, usable as a client certificate too, as stores present
 * theirs to peer stores), a client certificate from the same CA, and a CA
 * with a certificate of its own that nothing trusts.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './store.js';

export interface TestCerts {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A certificate (with its own CA) for 127.0.0.1 that our CA did not sign. */
  foreignCert: string;
  foreignKey: string;
  foreignCa: string;
  cleanup: () => void;
}

function openssl(cwd: string, args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    `${name}.key`,
    '-sha256',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    `${name}.pem`,
  ]);
}

function makeLeaf(dir: string, ca: string, name: string, san: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-sha256',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  ]);
}

export function makeCerts(): TestCerts {
  const { dir, cleanup } = tempDir('trellis-certs-');
  makeCa(dir, 'ca');
  makeLeaf(dir, 'ca', 'server', 'IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost');
  makeLeaf(dir, 'ca', 'client', 'DNS:trellis-client');
  makeCa(dir, 'foreign-ca');
  makeLeaf(dir, 'foreign-ca', 'foreign', 'IP:127.0.0.1,IP:127.0.0.2,DNS:localhost');
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    foreignCert: f('foreign.pem'),
    foreignKey: f('foreign.key'),
    foreignCa: f('foreign-ca.pem'),
    cleanup,
  };
}
