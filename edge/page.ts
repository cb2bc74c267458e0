// The chat page served at GET /: plain HTML and JavaScript, no framework and no external requests.
// It streams replies from /v1/chat/completions and keeps one session id per conversation, so each
// turn resumes the saved state instead of re-running the conversation so far.

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function chatPage(modelId: string): string {
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
  #messages { flex: 1; overflow-y: auto; padding: 1rem; display: flex; flex-direction: column; gap: .6rem; }
  .msg { max-width: 46rem; padding: .55rem .8rem; border-radius: .6rem; white-space: pre-wrap; word-wrap: break-word; border: 1px solid var(--line); }
  .msg.user { align-self: flex-end; background: var(--user); }
  .msg.assistant { align-self: flex-start; background: var(--bot); }
  .msg.error { align-self: stretch; border-color: #c0392b; color: #c0392b; }
  form { display: flex; gap: .5rem; padding: .75rem 1rem; border-top: 1px solid var(--line); }
  textarea { flex: 1; font: inherit; padding: .5rem; resize: vertical; min-height: 2.6rem; }
  button { font: inherit; padding: .4rem .9rem; }
  #stats { font-size: .8rem; color: var(--muted); padding: 0 1rem .5rem; min-height: 1.2rem; }
</style>
</head>
<body>
<header>
  <h1>sparrow · <span id="model">${model}</span></h1>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></label>
  <label>max tokens <input id="max-tokens" type="number" min="1" step="1" value="200"></label>
  <label>seed <input id="seed" type="number" step="1" placeholder="random"></label>
  <label>API key <input id="key" type="password" autocomplete="off" placeholder="if required"></label>
  <button id="new" type="button">New chat</button>
</header>
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
  const $ = (id) => document.getElementById(id);
  const list = $('messages'), input = $('prompt'), stats = $('stats');
  const keyInput = $('key');
  keyInput.value = localStorage.getItem('sparrow-key') || '';
  keyInput.addEventListener('change', () => localStorage.setItem('sparrow-key', keyInput.value));
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
  let messages = [];
  let session = newId();
  let current = null;

  function bubble(role, text) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    div.textContent = text;
    list.appendChild(div);
    list.scrollTop = list.scrollHeight;
    return div;
  }

  $('new').addEventListener('click', () => {
    if (current) current.abort();
    messages = [];
    session = newId();
    list.textContent = '';
    stats.textContent = '';
  });
  $('stop').addEventListener('click', () => current && current.abort());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
  });

  $('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || current) return;
    input.value = '';
    messages.push({ role: 'user', content: text });
    bubble('user', text);
    const out = bubble('assistant', '');
    out.dataset.state = 'streaming';
    const body = { model: MODEL, messages, stream: true, stream_options: { include_usage: true } };
    const t = parseFloat($('temperature').value); if (Number.isFinite(t)) body.temperature = t;
    const n = parseInt($('max-tokens').value, 10); if (Number.isFinite(n)) body.max_tokens = n;
    const s = parseInt($('seed').value, 10); if (Number.isFinite(s)) body.seed = s;
    const headers = { 'content-type': 'application/json', 'x-session-id': session };
    if (keyInput.value) headers.authorization = 'Bearer ' + keyInput.value;
    current = new AbortController();
    $('send').disabled = true; $('stop').disabled = false;
    const t0 = performance.now();
    let first = 0, tokens = 0, reply = '', usage = null;
    try {
      const res = await fetch('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify(body), signal: current.signal });
      if (!res.ok) {
        let msg = res.status + ' ' + res.statusText;
        try { msg = (await res.json()).error.message; } catch {}
        throw new Error(msg);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
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
            if (delta && delta.content) {
              if (!first) first = performance.now();
              tokens++;
              reply += delta.content;
              out.textContent = reply;
              list.scrollTop = list.scrollHeight;
            }
          }
        }
      }
      messages.push({ role: 'assistant', content: reply });
      out.dataset.state = 'done';
      const secs = (performance.now() - (first || t0)) / 1000;
      const parts = ['first token ' + Math.round((first || performance.now()) - t0) + ' ms'];
      if (usage) parts.push(usage.completion_tokens + ' tokens', (usage.completion_tokens > 1 && secs > 0 ? ((usage.completion_tokens - 1) / secs).toFixed(1) : '–') + ' tok/s',
        (usage.prompt_tokens_details ? usage.prompt_tokens_details.cached_tokens : 0) + ' of ' + usage.prompt_tokens + ' prompt tokens resumed');
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
      input.focus();
    }
  });
})();
</script>
</body>
</html>
`;
}
