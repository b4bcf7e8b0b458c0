// `npx vitest bench --run bench/batcher.bench.ts`: proposals per second through
// the TypeScript `ProposalBatcher` (propose from the JS thread, batches handed
// back to `onBatch`), 10,000 proposals of 100 bytes per iteration, until
// `stop()` has delivered them all.
import { bench, describe } from 'vitest'

import { ProposalBatcher } from '../ts/index.js'

const PROPOSALS = 10_000
const proposal = Buffer.alloc(100, 7)

describe(`ProposalBatcher, ${PROPOSALS} x 100 B per iteration`, () => {
  for (const enable of [true, false]) {
    bench(`batch ${enable ? 'on' : 'off'}: propose all, then stop`, async () => {
      let delivered = 0
      const batcher = new ProposalBatcher({ enable }, (_batch, count) => {
        delivered += count
      })
      batcher.start()
      for (let i = 0; i < PROPOSALS; i++) batcher.propose(proposal)
      await batcher.stop()
      if (delivered !== PROPOSALS) throw new Error(`delivered ${delivered} of ${PROPOSALS}`)
    }, { time: 1_000, warmupTime: 200 })
  }
})
