// Benchmark handler: reads one value per 4 KiB page of its shard, then waits args.ms (the task's "work").
export default async function ({ parts, args }) {
  let s = 0;
  for (const p of parts) for (let i = 0; i < p.x.data.length; i += 1024) s += p.x.data[i];
  await new Promise((r) => setTimeout(r, args?.ms ?? 0));
  return new Float64Array([s]);
}
