// Benchmark handler: does nothing with its shard and returns one number.
export default async function () {
  return new Float64Array(1);
}
