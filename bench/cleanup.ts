/**
 * Synchronous clean-up actions (kill child processes, remove temp dirs) that
 * must run however the runner ends: normally, on an error, or on Ctrl-C.
 */
const actions = new Set<() => void>()
let installed = false

function runAll(): void {
  for (const action of [...actions].reverse()) {
    try {
      action()
    } catch {
      // Best effort: one failed clean-up must not stop the others.
    }
  }
  actions.clear()
}

function install(): void {
  if (installed) return
  installed = true
  process.on('exit', runAll)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: stopping, cleaning up\n`)
      runAll()
      process.exit(130)
    })
  }
}

/** Registers `action`; the returned function runs it now (once) and unregisters it. */
export function onCleanup(action: () => void): () => void {
  install()
  actions.add(action)
  return () => {
    if (actions.delete(action)) action()
  }
}
