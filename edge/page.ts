// The chat page served at GET /: plain HTML and JavaScript, no framework and no external requests.
// It streams replies from /v1/chat/completions and keeps one session per conversation (created by
// the server with POST /v1/sessions, under the key typed in the page), so each turn resumes the saved
// state instead of re-running the conversation so far.
//
// Where the server offers it (`browser`), a toggle runs the model in the page instead: the page
// imports the bundled library, loads the model file from this server and generates locally, with
// no /v1 request. The toggle is off by default.

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** URL paths of the in-browser mode's bundle and model file. */
export interface PageBrowserMode {
  bundle: string;
  model: string;
}

export function chatPage(modelId: string, browser?: PageBrowserMode): string {
  const model = escapeHtml(modelId);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sparrow · ${model}</title>
<style>
  :root { color-scheme: light dark; --fg: #1d2330; --bg: #f7f7f4; --muted: #6b7280; --user: #dde9ff; --bot: #ffffff; --line: #d9d9d2; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --bg: #15171c; --muted: #9aa0aa; --user: #22324d; --bot: #1f232b; --line: #30343c; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); display: flex; flex-direction: column; height: 100vh; }
  header { display: flex; gap: .75rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 1rem; margin: 0 auto 0 0; }
  header label { font-size: .8rem; color: var(--muted); display: flex; gap: .3rem; align-items: center; }
  header input { width: 5.5rem; font: inherit; padding: .15rem .3rem; }
  header input#key { width: 9rem; }
  header input[type=checkbox] { width: auto; margin: 0; }
  #messages { flex: 1; overflow-y: auto; padding: 1rem; display: flex; flex-direction: column; gap: .6rem; }
  .msg { max-width: 46rem; padding: .55rem .8rem; border-radius: .6rem; white-space: pre-wrap; word-wrap: break-word; border: 1px solid var(--line); }
  .msg.user { align-self: flex-end; background: var(--user); }
  .msg.assistant { align-self: flex-start; background: var(--bot); }
  .msg.error { align-self: stretch; border-color: #c0392b; color: #c0392b; }
  form { display: flex; gap: .5rem; padding: .75rem 1rem; border-top: 1px solid var(--line); }
  textarea { flex: 1; font: inherit; padding: .5rem; resize: vertical; min-height: 2.6rem; }
  button { font: inherit; padding: .4rem .9rem; }
  #stats { font-size: .8rem; color: var(--muted); padding: 0 1rem .5rem; min-height: 1.2rem; }
  #backend { font-size: .8rem; color: var(--muted); padding: .3rem 1rem 0; }
  #backend:empty { display: none; }
  #backend progress { width: 8rem; vertical-align: middle; margin-left: .4rem; }
</style>
</head>
<body>
<header>
  <h1>sparrow · <span id="model">${model}</span></h1>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></label>
  <label>max tokens <input id="max-tokens" type="number" min="1" step="1" value="200"></label>
  <label>seed <input id="seed" type="number" step="1" placeholder="random"></label>
  <label>API key <input id="key" type="password" autocomplete="off" placeholder="if required"></label>
  ${browser ? '<label title="load the model into this page and generate here, without the server"><input id="local" type="checkbox"> run in this browser</label>' : ''}
  <button id="new" type="button">New chat</button>
</header>
<div id="backend" aria-live="polite"></div>
<main id="messages" aria-live="polite"></main>
<div id="stats"></div>
<form id="form">
  <textarea id="prompt" placeholder="Say something…" rows="2" autofocus></textarea>
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<script>
(() => {
  const MODEL = ${JSON.stringify(modelId).replace(/</g, '\\u003c')};
  const BROWSER = ${JSON.stringify(browser ?? null).replace(/</g, '\\u003c')};
  const $ = (id) => document.getElementById(id);
  const list = $('messages'), input = $('prompt'), stats = $('stats');
  const keyInput = $('key');
  keyInput.value = localStorage.getItem('sparrow-key') || '';
  keyInput.addEventListener('change', () => localStorage.setItem('sparrow-key', keyInput.value));
  let messages = [];
  // The conversation's session on the server: created before its first turn there.
  let session = null;
  let current = null;

  function authHeaders() {
    const h = { 'content-type': 'application/json' };
    if (keyInput.value) h.authorization = 'Bearer ' + keyInput.value;
    return h;
  }

  async function errorMessage(res) {
    let msg = res.status + ' ' + res.statusText, code = null;
    try { const e = (await res.json()).error; msg = e.message; code = e.code; } catch {}
    return { msg, code };
  }

  async function createSession(signal) {
    const res = await fetch('/v1/sessions', { method: 'POST', headers: authHeaders(), body: '{}', signal });
    if (!res.ok) throw new Error((await errorMessage(res)).msg);
    return (await res.json()).id;
  }

  function bubble(role, text) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    div.textContent = text;
    list.appendChild(div);
    list.scrollTop = list.scrollHeight;
    return div;
  }

  // In-browser mode: the bundled library, loaded on first use; the model stays loaded while the
  // page lives, toggled off or on.
  const localBox = $('local'), backend = $('backend');
  let local = null, localLoading = null;
  const inBrowser = () => !!(localBox && localBox.checked);

  function loadLocal() {
    if (local) return Promise.resolve(local);
    if (localLoading) return localLoading;
    backend.textContent = '';
    const label = document.createElement('span'), bar = document.createElement('progress');
    label.textContent = 'loading the model into this page…';
    backend.append(label, bar);
    backend.dataset.state = 'loading';
    localLoading = import(BROWSER.bundle).then((mod) => mod.InBrowserChat.load({
      modelUrl: new URL(BROWSER.model, location.href).href,
      wasmUrl: (build) => new URL('/build/' + build + '.wasm', location.href).href,
      onProgress: (what, fraction) => {
        label.textContent = 'loading the model into this page: ' + what;
        if (fraction === null) bar.removeAttribute('value'); else bar.value = fraction;
      },
    })).then((chat) => {
      local = chat;
      backend.textContent = 'running in this browser · ' + chat.backend.label;
      backend.dataset.state = 'ready';
      backend.dataset.backend = chat.backend.compute;
      return chat;
    }, (err) => {
      localLoading = null;
      backend.textContent = 'the model could not run in this browser: ' + String(err && err.message || err);
      backend.dataset.state = 'error';
      if (localBox) localBox.checked = false;
      throw err;
    });
    return localLoading;
  }

  function newChat() {
    if (current) current.abort();
    messages = [];
    // The old conversation's state is of no more use; a session still generating refuses (409) and is left.
    if (session) fetch('/v1/sessions/' + session, { method: 'DELETE', headers: authHeaders() }).catch(() => {});
    session = null;
    if (local) local.reset();
    list.textContent = '';
    stats.textContent = '';
  }
  $('new').addEventListener('click', newChat);
  if (localBox) localBox.addEventListener('change', () => {
    // The conversation's state lives on one side only, so switching starts a new chat.
    newChat();
    if (localBox.checked) loadLocal().catch(() => {});
    else if (local) backend.textContent = 'running on the server (the model stays loaded in this page)';
    else if (backend.dataset.state !== 'error') backend.textContent = '';
  });
  $('stop').addEventListener('click', () => current && current.abort());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
  });

  /** One turn from the server's /v1/chat/completions stream; returns its usage. */
  async function replyFromServer(params, onText, signal) {
    const body = { model: MODEL, messages, stream: true, stream_options: { include_usage: true } };
    if (params.temperature !== undefined) body.temperature = params.temperature;
    if (params.maxTokens !== undefined) body.max_tokens = params.maxTokens;
    if (params.seed !== undefined) body.seed = params.seed;
    let res;
    for (let attempt = 0; ; attempt++) {
      if (!session) session = await createSession(signal);
      const headers = { ...authHeaders(), 'x-session-id': session };
      res = await fetch('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body), signal });
      if (res.ok) break;
      const { msg, code } = await errorMessage(res);
      // A session the server no longer has (evicted, restarted without a session directory, another
      // key typed in): a new one, and the conversation is sent whole.
      if (code === 'session_not_found' && attempt === 0) { session = null; continue; }
      throw new Error(msg);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '', usage = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const event = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of event.split('\\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') continue;
          const msg = JSON.parse(data);
          if (msg.error) throw new Error(msg.error.message);
          if (msg.usage) usage = msg.usage;
          const delta = msg.choices && msg.choices[0] && msg.choices[0].delta;
          if (delta && delta.content) onText(delta.content);
        }
      }
    }
    return usage && { completion: usage.completion_tokens, prompt: usage.prompt_tokens, cached: usage.prompt_tokens_details ? usage.prompt_tokens_details.cached_tokens : 0 };
  }

  /** One turn generated in this page; returns its usage. */
  async function replyInBrowser(params, onText, signal) {
    const chat = await loadLocal();
    for await (const piece of chat.reply(messages, { ...params, signal })) onText(piece);
    if (signal.aborted) throw new DOMException('stopped', 'AbortError');
    const s = chat.lastStats;
    return s && { completion: s.generatedTokens, prompt: s.promptTokens, cached: s.cachedTokens };
  }

  $('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || current) return;
    input.value = '';
    messages.push({ role: 'user', content: text });
    bubble('user', text);
    const out = bubble('assistant', '');
    out.dataset.state = 'streaming';
    const params = {};
    const t = parseFloat($('temperature').value); if (Number.isFinite(t)) params.temperature = t;
    const n = parseInt($('max-tokens').value, 10); if (Number.isFinite(n)) params.maxTokens = n;
    const s = parseInt($('seed').value, 10); if (Number.isFinite(s)) params.seed = s;
    const here = inBrowser();
    current = new AbortController();
    $('send').disabled = true; $('stop').disabled = false;
    if (localBox) localBox.disabled = true;
    const t0 = performance.now();
    let first = 0, reply = '';
    const onText = (piece) => {
      if (!first) first = performance.now();
      reply += piece;
      out.textContent = reply;
      list.scrollTop = list.scrollHeight;
    };
    try {
      const usage = await (here ? replyInBrowser : replyFromServer)(params, onText, current.signal);
      messages.push({ role: 'assistant', content: reply });
      out.dataset.state = 'done';
      const secs = (performance.now() - (first || t0)) / 1000;
      const parts = ['first token ' + Math.round((first || performance.now()) - t0) + ' ms'];
      if (usage) parts.push(usage.completion + ' tokens', (usage.completion > 1 && secs > 0 ? ((usage.completion - 1) / secs).toFixed(1) : '–') + ' tok/s',
        usage.cached + ' of ' + usage.prompt + ' prompt tokens resumed');
      if (here) parts.push('in this browser');
      stats.textContent = parts.join(' · ');
    } catch (err) {
      if (err.name === 'AbortError') {
        // A stopped turn is left out of the conversation, as the server leaves it out of the saved state.
        out.dataset.state = 'stopped';
        messages.pop();
        stats.textContent = 'stopped; this turn is not part of the conversation';
      } else {
        messages.pop();
        out.remove();
        bubble('error', String(err.message || err));
      }
    } finally {
      current = null;
      $('send').disabled = false; $('stop').disabled = true;
      if (localBox) localBox.disabled = false;
      input.focus();
    }
  });
})();
</script>
</body>
</html>
`;
}
