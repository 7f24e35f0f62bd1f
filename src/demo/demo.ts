export interface DemoOptions {
  readers: number;
  size: number;
  dataDir: string;
}

export async function runDemo(_o: DemoOptions): Promise<void> {
  throw new Error('the demo is being written');
}
