/**
 * Refuses a Redis that may evict keys. Under any maxmemory-policy but
 * noeviction, Redis silently drops keys when full: a job record, a queued
 * task or a lock would vanish and the job hang or run twice. INFO is read
 * rather than CONFIG GET because managed Redis often renames CONFIG.
 */
import type { Redis } from 'ioredis';
import { TrellisError } from '../errors.js';

export async function checkNoEviction(redis: Redis, where: string): Promise<void> {
  const info = await redis.info('memory');
  const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  if (policy !== 'noeviction') {
    throw new TrellisError(
      'ERR_REDIS_EVICTS',
      `${where}: Redis at ${redis.options.host}:${redis.options.port} has maxmemory-policy ${policy ?? '(unknown)'}; ` +
        'jobs and queued tasks would be lost when it fills up. Set `maxmemory-policy noeviction` ' +
        '(redis.conf, or CONFIG SET maxmemory-policy noeviction) and enable AOF (appendonly yes); see docs/OPERATIONS.md',
    );
  }
}
