/**
 * TLS on the RPC port: stores serving TLS (in this process and as `trellis
 * store` children), remote clients that trust their CA, mutual TLS between
 * stores migrating through etcd, and every way a handshake can be refused,
 * each with its code. Certificates are made with openssl at test time.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Tensor } from 'trellis';
import { StoreServer, startRpc } from 'trellis/store';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesMismatch, pattern } from './helpers/bytes.js';
import { makeCerts, type TestCerts } from './helpers/certs.js';
import { errCode, errText } from './helpers/child.js';
import { type EtcdHandle, startEtcd } from './helpers/etcd.js';
import { MIB, type RpcStore, startRpcStore, TOKEN } from './helpers/rpc.js';
import { CLI, clusterStoreArgs, spawnStore, tempDir } from './helpers/store.js';

let certs: TestCerts;
beforeAll(() => {
  certs = makeCerts();
});
afterAll(() => certs?.cleanup());

function rpcStats(s: RpcStore): { authFailures: number; tlsFailures: number; tls: unknown } {
  return s.store.status().rpc as unknown as { authFailures: number; tlsFailures: number; tls: unknown };
}

describe('a store serving RPC over TLS', () => {
  let tlsStore: RpcStore;
  let plainStore: RpcStore;
  beforeAll(async () => {
    tlsStore = await startRpcStore('127.0.0.1', {
      instanceId: 1,
      tls: { cert: certs.serverCert, key: certs.serverKey },
    });
    plainStore = await startRpcStore('127.0.0.2', { instanceId: 2 });
  });
  afterAll(async () => {
    await tlsStore?.stop();
    await plainStore?.stop();
  });

  it('puts and gets 24 MiB byte-exact for a client that trusts its CA', async () => {
    await using c = await connect({ rpc: tlsStore.rpc, token: TOKEN, tls: { ca: certs.ca } });
    const want = pattern(24 * MIB, 7);
    const id = await c.put(want);
    const t = (await c.get(id)) as Tensor;
    expect(t.shape).toEqual([24 * MIB]);
    expect(bytesMismatch(t.data, want)).toBeNull();
    expect(rpcStats(tlsStore).tls).toEqual({ clientAuth: false });
  });

  it('a plain-TCP client fails with ERR_DISCONNECTED and the store goes on serving', async () => {
    const before = rpcStats(tlsStore).tlsFailures;
    expect(await errCode(connect({ rpc: tlsStore.rpc, token: TOKEN, timeoutMs: 5000 }))).toBe('ERR_DISCONNECTED');
    await expect.poll(() => rpcStats(tlsStore).tlsFailures - before).toBe(1);
    await using c = await connect({ rpc: tlsStore.rpc, token: TOKEN, tls: { ca: certs.ca } });
    expect((await c.status()).instanceId).toBe(1);
  });

  it('a TLS client refuses a store whose certificate its CA did not sign: ERR_TLS_HANDSHAKE', async () => {
    const m = await errText(connect({ rpc: tlsStore.rpc, token: TOKEN, tls: { ca: certs.foreignCa } }));
    expect(m).toMatch(/^ERR_TLS_HANDSHAKE: the TLS handshake with the store at 127\.0\.0\.1:\d+ failed \(/);
  });

  it('a TLS client refuses a store that does not speak TLS: ERR_TLS_HANDSHAKE', async () => {
    expect(await errCode(connect({ rpc: plainStore.rpc, token: TOKEN, tls: { ca: certs.ca } }))).toBe(
      'ERR_TLS_HANDSHAKE',
    );
    // ... and the plain store keeps serving plain clients.
    await using c = await connect({ rpc: plainStore.rpc, token: TOKEN });
    expect((await c.status()).instanceId).toBe(2);
  });

  it('the token still authenticates over TLS', async () => {
    const before = rpcStats(tlsStore).authFailures;
    expect(await errCode(connect({ rpc: tlsStore.rpc, token: 'wrong', tls: { ca: certs.ca } }))).toBe(
      'ERR_UNAUTHORIZED',
    );
    expect(rpcStats(tlsStore).authFailures - before).toBe(1);
  });
});

describe('a store requiring client certificates (--tls-client-auth)', () => {
  let s: RpcStore;
  beforeAll(async () => {
    s = await startRpcStore('127.0.0.1', {
      instanceId: 3,
      tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, clientAuth: true },
    });
  });
  afterAll(async () => s?.stop());

  it('serves a client presenting a certificate signed by its CA', async () => {
    await using c = await connect({
      rpc: s.rpc,
      token: TOKEN,
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
    });
    const id = await c.put(Float32Array.of(1, 2, 3));
    expect(Array.from(((await c.get(id)) as Tensor).data as Float32Array)).toEqual([1, 2, 3]);
    expect(rpcStats(s).tls).toEqual({ clientAuth: true });
  });

  it('refuses a client with no certificate, and one with a foreign-CA certificate: ERR_TLS_HANDSHAKE', async () => {
    const before = rpcStats(s).tlsFailures;
    const none = connect({ rpc: s.rpc, token: TOKEN, tls: { ca: certs.ca } });
    const foreign = connect({
      rpc: s.rpc,
      token: TOKEN,
      tls: { ca: certs.ca, cert: certs.foreignCert, key: certs.foreignKey },
    });
    const refused = `ERR_TLS_HANDSHAKE: the store at ${s.rpc} requires a client certificate signed by its CA; this one was refused`;
    expect([await errText(none), await errText(foreign)]).toEqual([
      `${refused} (none was presented)`,
      `${refused} (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`,
    ]);
    await expect.poll(() => rpcStats(s).tlsFailures - before).toBe(2);
  });
});

describe('TLS files that cannot be used', () => {
  it('StoreServer.start refuses each with ERR_TLS_CONFIG before listening', async () => {
    const { dir, cleanup } = tempDir('trellis-tls-bad-');
    try {
      const notPem = join(dir, 'not.pem');
      writeFileSync(notPem, 'not a certificate\n');
      const start = (tls: object, rpcPort: number | null = 0) =>
        errText(
          StoreServer.start(
            {
              socket: join(dir, 's.sock'),
              size: 16 * MIB,
              token: TOKEN,
              rpcPort: rpcPort ?? undefined,
              rpcHost: '127.0.0.1',
              tls,
            },
            startRpc,
          ),
        );
      expect(await start({ cert: join(dir, 'missing.pem'), key: certs.serverKey })).toBe(
        `ERR_TLS_CONFIG: cannot read --tls-cert ${join(dir, 'missing.pem')}: ENOENT`,
      );
      expect(await start({ cert: certs.serverCert })).toBe(
        'ERR_TLS_CONFIG: serving TLS needs both --tls-cert and --tls-key',
      );
      expect(await start({ cert: certs.serverCert, key: certs.serverKey, clientAuth: true })).toBe(
        "ERR_TLS_CONFIG: --tls-client-auth needs --tls-ca, the CA peers' certificates must chain to",
      );
      expect(await start({ cert: certs.serverCert, key: certs.clientKey })).toMatch(
        /^ERR_TLS_CONFIG: the TLS files \(--tls-cert .*server\.pem, --tls-key .*client\.key\) cannot be used: .*key values mismatch/,
      );
      expect(await start({ cert: notPem, key: certs.serverKey })).toMatch(
        /^ERR_TLS_CONFIG: the TLS files \(--tls-cert .*not\.pem, --tls-key .*\) cannot be used: /,
      );
      expect(await start({ cert: certs.serverCert, key: certs.serverKey }, null)).toBe(
        'ERR_TLS_CONFIG: the TLS flags secure the RPC port: give --rpc-port too',
      );
    } finally {
      cleanup();
    }
  });

  it('`trellis store` with a missing key file exits 1 with one ERR_TLS_CONFIG line', () => {
    const { dir, cleanup } = tempDir('trellis-tls-cli-');
    try {
      const r = spawnSync(
        process.execPath,
        [
          CLI,
          'store',
          '--socket',
          join(dir, 's.sock'),
          '--size',
          '16M',
          '--rpc-port',
          '0',
          '--tls-cert',
          certs.serverCert,
          '--tls-key',
          join(dir, 'nope.key'),
        ],
        { env: { ...process.env, TRELLIS_TOKEN: TOKEN }, encoding: 'utf8', timeout: 30_000 },
      );
      expect({ status: r.status, stderr: r.stderr, stdout: r.stdout }).toEqual({
        status: 1,
        stderr: `trellis: ERR_TLS_CONFIG: cannot read --tls-key ${join(dir, 'nope.key')}: ENOENT\n`,
        stdout: '',
      });
    } finally {
      cleanup();
    }
  });
});

describe('mutual TLS between `trellis store` processes migrating through etcd', () => {
  let etcd: EtcdHandle;
  let tokens: ReturnType<typeof tempDir>;
  let stores: Awaited<ReturnType<typeof spawnStore>>[] = [];
  beforeAll(async () => {
    etcd = await startEtcd();
    tokens = tempDir();
    const tokenFile = join(tokens.dir, 'token');
    writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
    const prefix = `/trellis-test/${randomUUID()}`;
    const tls = [
      '--tls-cert',
      certs.serverCert,
      '--tls-key',
      certs.serverKey,
      '--tls-ca',
      certs.ca,
      '--tls-client-auth',
    ];
    stores = await Promise.all(
      ['127.0.0.1', '127.0.0.2'].map((host, i) =>
        spawnStore([
          ...clusterStoreArgs({
            name: `tls${i}`,
            size: '192M',
            etcdUrl: etcd.url,
            metaPrefix: prefix,
            host,
            tokenFile,
          }),
          ...tls,
        ]),
      ),
    );
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.stop()));
    await etcd?.stop();
    tokens?.cleanup();
  });

  it('says tls mutual on its ready line and migrates 64 MiB byte-exact store to store', async () => {
    const { rpc, tls } = stores[0].ready;
    expect({ rpc: String(rpc).replace(/:\d+$/, ':PORT'), tls }).toEqual({ rpc: '127.0.0.1:PORT', tls: 'mutual' });
    await using a = await connect({ socket: stores[0].socket });
    await using b = await connect({ socket: stores[1].socket });
    const want = pattern(64 * MIB, 11);
    const id = await a.put(want, { persist: true });
    const local = await b.migrate(id);
    const t = (await b.get(local)) as Tensor;
    const sha = (v: ArrayBufferView) =>
      createHash('sha256')
        .update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
        .digest('hex');
    expect(sha(t.data)).toEqual(sha(want));
  });

  it('`trellis status --rpc` reads a store over mutual TLS with --tls-ca, --tls-cert and --tls-key', async () => {
    const endpoint = String(stores[1].ready.rpc);
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'status',
        '--rpc',
        endpoint,
        '--tls-ca',
        certs.ca,
        '--tls-cert',
        certs.clientCert,
        '--tls-key',
        certs.clientKey,
      ],
      { env: { ...process.env, TRELLIS_TOKEN: TOKEN }, encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout).rpc.tls).toEqual({ clientAuth: true });
  });
});
