// A value components re-render on (language, session): a tiny observable, no extra dependency.
import { useEffect, useState } from 'preact/hooks'

export function signal(initial) {
  const listeners = new Set()
  let value = initial
  return {
    get value() { return value },
    set value(next) { value = next; for (const f of [...listeners]) f(next) },
    subscribe(f) { listeners.add(f); return () => listeners.delete(f) },
  }
}

export function useSignal(s) {
  const [, set] = useState(0)
  useEffect(() => s.subscribe(() => set((n) => n + 1)), [s])
  return s.value
}
