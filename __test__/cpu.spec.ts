import { describe, expect, it } from 'vitest'

import { missingCpuFeatures } from '../ts/cpu.js'

const cpu = (flags: string) => `processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: ${flags}\nbugs\t\t: spectre_v1\n`

describe('the CPU check before the addon loads', () => {
  it('accepts a CPU with SSE4.2 and PCLMULQDQ', () => {
    expect(missingCpuFeatures(cpu('fpu sse2 ssse3 pclmulqdq sse4_1 sse4_2 popcnt'))).toEqual([])
  })

  it('names what an older CPU lacks', () => {
    expect(missingCpuFeatures(cpu('fpu sse2 ssse3 sse4_1'))).toEqual(['sse4_2', 'pclmulqdq'])
    expect(missingCpuFeatures(cpu('fpu sse2 sse4_2'))).toEqual(['pclmulqdq'])
  })

  it('does not mistake a longer flag for a needed one', () => {
    expect(missingCpuFeatures(cpu('sse4_2x pclmulqdq_y'))).toEqual(['sse4_2', 'pclmulqdq'])
  })

  it('lets a cpuinfo without flags through, as the loader would', () => {
    expect(missingCpuFeatures('processor\t: 0\n')).toEqual([])
  })
})
