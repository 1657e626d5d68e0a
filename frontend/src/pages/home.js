import { html } from '../html.js'
import { t } from '../i18n.js'

export function Home() {
  return html`
    <h1>${t('home.title')}</h1>
    <p class="lead">${t('home.lead')}</p>
    <ul class="cards">
      <li><a class="card" href="/checkout">${t('home.checkout')}</a></li>
      <li><a class="card" href="/merchant">${t('home.merchant')}</a></li>
      <li><a class="card" href="/audit">${t('home.audit')}</a></li>
      <li><a class="card" href="/wallet-setup">${t('home.wallet')}</a></li>
    </ul>`
}
