// The gateway's public API, as any client calls it: problem+json errors become ApiError with the
// status, the detail and the field at fault. Every POST carries a fresh Idempotency-Key, so a retry
// after a lost answer gets the first answer back.
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`)
    this.status = status
    this.problem = problem
    this.field = problem?.errors?.[0]?.field ?? null
    this.fieldMessage = problem?.errors?.[0]?.message ?? problem?.detail ?? ''
  }
}

export class NetworkError extends Error {}

export async function api(path, { method = 'GET', body, token, idempotencyKey } = {}) {
  const headers = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (token) headers.Authorization = `Bearer ${token}`
  if (method !== 'GET') headers['Idempotency-Key'] = idempotencyKey ?? crypto.randomUUID()
  let response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch (error) {
    throw new NetworkError(String(error))
  }
  const text = await response.text()
  const data = text ? JSON.parse(text) : null
  if (!response.ok) throw new ApiError(response.status, data)
  return data
}

// Integers in base units -> a decimal string for people (no floats: amounts stay exact).
export function formatUnits(value, decimals) {
  const v = BigInt(value)
  const negative = v < 0n
  const abs = negative ? -v : v
  const base = 10n ** BigInt(decimals)
  const whole = abs / base
  let frac = (abs % base).toString().padStart(decimals, '0').replace(/0+$/, '')
  if (frac.length < 2 && decimals >= 2) frac = frac.padEnd(2, '0')
  return (negative ? '-' : '') + whole.toString() + (frac ? '.' + frac : '')
}

export const short = (hex) => (hex ? `${hex.slice(0, 10)}…${hex.slice(-6)}` : '')
