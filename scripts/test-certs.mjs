/**
 * Certificates for tests and benchmarks, made with the openssl binary in a
 * directory of the caller's: a CA, a server certificate for the loopback
 * addresses tests bind (SAN IP:127.0.0.1-3 and DNS:localhost; no extended
 * key usage, so stores also present it as a client certificate to peer
 * stores), a client certificate from the same CA, and a second CA with a
 * certificate of its own that nothing trusts. Keys are P-256; certificates
 * are valid for two days.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(cwd, args) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir, name) {
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

function makeLeaf(dir, ca, name, san) {
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

/** Writes the files into `dir`; returns their paths. */
export function makeCerts(dir) {
  makeCa(dir, 'ca');
  makeLeaf(dir, 'ca', 'server', 'IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,DNS:localhost');
  makeLeaf(dir, 'ca', 'client', 'DNS:trellis-client');
  makeCa(dir, 'foreign-ca');
  makeLeaf(dir, 'foreign-ca', 'foreign', 'IP:127.0.0.1,IP:127.0.0.2,DNS:localhost');
  const f = (n) => join(dir, n);
  return {
    ca: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    foreignCert: f('foreign.pem'),
    foreignKey: f('foreign.key'),
    foreignCa: f('foreign-ca.pem'),
  };
}
