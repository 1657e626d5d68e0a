// How to point a wallet at the chain this gateway settles on: from /v1/health (the deployment, the RPC
// URL the operator publishes). The development accounts are listed only by a development system (its
// health names the simulated provider); their keys are the dev chain's well-known keys 1..10.
import { useEffect, useState } from 'preact/hooks'
import { privateKeyToAddress } from 'viem/accounts'
import { html } from '../html.js'
import { lang, t } from '../i18n.js'
import { Notice } from '../layout.js'
import { useSignal } from '../signal.js'
import { api } from '../api.js'
import * as wallet from '../wallet.js'

const DEV_KEYS = Array.from({ length: 10 }, (_, i) => '0x' + (i + 1).toString(16).padStart(64, '0'))

export function WalletSetup() {
  useSignal(lang)
  const [health, setHealth] = useState(null)
  const [message, setMessage] = useState(null)
  useEffect(() => { api('/v1/health').then(setHealth).catch((e) => setMessage({ kind: 'error', text: e.message })) }, [])
  if (!health) return html`<h1>${t('w.title')}</h1><${Notice} kind=${message?.kind}>${message?.text ?? t('loading')}<//>`
  const d = health.deployment
  const dev = Boolean(health.simulator) && d.chain_id === 31337
  async function add() {
    setMessage(null)
    try {
      await wallet.switchChain(d.chain_id, d.rpc_url)
      setMessage({ kind: 'ok', text: t('w.added') })
    } catch (e) { setMessage({ kind: 'error', text: e.message }) }
  }
  return html`
    <h1>${t('w.title')}</h1>
    <p class="lead">${t('w.lead')}</p>
    <section class="panel" aria-labelledby="net-h">
      <h2 id="net-h">${t('w.network')}</h2>
      <dl class="facts" data-testid="network">
        <dt>${t('w.network')}</dt><dd>Cardless ${dev ? 'dev chain' : 'chain'} ${d.chain_id}</dd>
        <dt>${t('w.rpc')}</dt><dd><code>${d.rpc_url ?? '—'}</code></dd>
        <dt>${t('w.chain')}</dt><dd><code>${d.chain_id}</code> (0x${d.chain_id.toString(16)})</dd>
        <dt>${t('w.symbol')}</dt><dd>ETH</dd>
      </dl>
      <button type="button" class="secondary" onClick=${add} disabled=${!wallet.provider() || !d.rpc_url}>${t('w.add')}</button>
      <${Notice} kind=${message?.kind}>${message?.text}<//>
    </section>
    <section class="panel" aria-labelledby="tok-h">
      <h2 id="tok-h">${t('w.tokens')}</h2>
      <ul class="plain">${d.tokens.filter((tk) => !/^0x0{40}$/i.test(tk.address)).map((tk) => html`
        <li><strong>${tk.symbol}</strong> (${tk.decimals}) <code class="hash">${tk.address}</code></li>`)}</ul>
    </section>
    <section class="panel" aria-labelledby="acc-h">
      <h2 id="acc-h">${t('w.accounts')}</h2>
      ${dev ? html`
        <p class="hint">${t('w.accounts.hint')}</p>
        <div class="table-wrap" tabindex="0" role="region" aria-label=${t('w.accounts')}>
          <table data-testid="dev-accounts"><thead><tr><th scope="col">#</th><th scope="col">${t('w.address')}</th><th scope="col">${t('w.key')}</th></tr></thead>
          <tbody>${DEV_KEYS.map((key, i) => html`<tr><td>${i + 1}</td><td><code class="hash">${privateKeyToAddress(key)}</code></td><td><code class="hash">${key}</code></td></tr>`)}</tbody></table>
        </div>` : html`<p>${t('w.noaccounts')}</p>`}
    </section>`
}
