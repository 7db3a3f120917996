// owl's chat page. Plain JavaScript, no build step, nothing fetched but this server's own
// OpenAI routes (/v1/models, /v1/models/{id}, /v1/chat/completions).
//
// Safety: model output and user text are only ever put into the page as text nodes
// (textContent, createTextNode); the Markdown renderer below builds elements itself and
// never parses HTML. Links are made only for http(s) URLs. The API key, when the server
// wants one, comes from the settings field and stays in this tab's sessionStorage.
'use strict';

const CONVERSATIONS_KEY = 'owl.conversations.v1';
const SETTINGS_KEY = 'owl.settings.v1';
const API_KEY_KEY = 'owl.api-key';
const DEFAULTS = { temperature: 0.8, top_p: 0.95, max_tokens: 1024, model: '' };

const $ = (id) => document.getElementById(id);
const state = {
  conversations: [],
  currentId: null,
  settings: { ...DEFAULTS },
  models: [],
  controller: null,
  streaming: false,
};

// ---------------------------------------------------------------- storage

function loadStored() {
  try {
    const conversations = JSON.parse(localStorage.getItem(CONVERSATIONS_KEY) || '[]');
    if (Array.isArray(conversations)) state.conversations = conversations.filter(validConversation);
  } catch (_) { state.conversations = []; }
  try {
    const settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || '{}');
    state.settings = { ...DEFAULTS, ...(settings && typeof settings === 'object' ? settings : {}) };
  } catch (_) { state.settings = { ...DEFAULTS }; }
  state.currentId = state.conversations.length ? state.conversations[0].id : null;
}

function validConversation(c) {
  return c && typeof c.id === 'string' && Array.isArray(c.messages) &&
    c.messages.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string');
}

function saveConversations() {
  try { localStorage.setItem(CONVERSATIONS_KEY, JSON.stringify(state.conversations)); } catch (_) { /* full: keep going */ }
}

function saveSettings() {
  try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(state.settings)); } catch (_) { /* ignore */ }
}

function apiKey() { return sessionStorage.getItem(API_KEY_KEY) || ''; }

function current() { return state.conversations.find((c) => c.id === state.currentId) || null; }

function newConversation() {
  const c = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`, title: 'New chat', system: '', messages: [], created: Date.now() };
  state.conversations.unshift(c);
  state.currentId = c.id;
  saveConversations();
  return c;
}

// ---------------------------------------------------------------- HTTP

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function showError(text) {
  const box = $('error');
  box.textContent = text || '';
  box.hidden = !text;
}

async function loadModels() {
  const picker = $('model-picker');
  let response;
  try {
    response = await fetch('/v1/models', { headers: headers() });
  } catch (e) { showError(`cannot reach the server: ${e.message}`); return; }
  if (response.status === 401) {
    showError('This server needs an API key: enter it under Settings.');
    openSettings(true);
    return;
  }
  if (!response.ok) { showError(await errorMessage(response)); return; }
  const body = await response.json();
  state.models = (body.data || []).map((m) => m.id).filter((id) => typeof id === 'string');
  picker.replaceChildren(...state.models.map((id) => {
    const o = document.createElement('option');
    o.value = id;
    o.textContent = id;
    return o;
  }));
  const wanted = current() && current().model;
  const choice = [wanted, state.settings.model].find((m) => m && state.models.includes(m)) || state.models[0] || '';
  picker.value = choice;
  state.settings.model = choice;
  showError('');
  if (!$('model-panel').hidden) loadModelPanel();
}

// ---------------------------------------------------------------- Markdown, safely

// Inline spans: `code`, **bold**, *italic* / _italic_, [text](http(s)://url).
function renderInline(text, into) {
  const pattern = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*|_[^_\n]+_)|(\[[^\]\n]+\]\((https?:\/\/[^\s)]+)\))/;
  let rest = text;
  while (rest.length) {
    const m = pattern.exec(rest);
    if (!m) { into.appendChild(document.createTextNode(rest)); break; }
    if (m.index > 0) into.appendChild(document.createTextNode(rest.slice(0, m.index)));
    const token = m[0];
    let node;
    if (m[1]) { node = document.createElement('code'); node.textContent = token.slice(1, -1); }
    else if (m[2]) { node = document.createElement('strong'); renderInline(token.slice(2, -2), node); }
    else if (m[3]) { node = document.createElement('em'); renderInline(token.slice(1, -1), node); }
    else {
      node = document.createElement('a');
      node.textContent = token.slice(1, token.indexOf(']('));
      node.href = m[5];
      node.rel = 'noopener noreferrer nofollow';
      node.target = '_blank';
    }
    into.appendChild(node);
    rest = rest.slice(m.index + token.length);
  }
}

// Blocks: fenced code, headings, lists, quotes, paragraphs.
function renderMarkdown(text, into) {
  const lines = text.split('\n');
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (!paragraph.length) return;
    const p = document.createElement('p');
    renderInline(paragraph.join('\n'), p);
    into.appendChild(p);
    paragraph = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)\s*([\w+.-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) code.push(lines[i++]);
      i++; // the closing fence (or the end of a reply still streaming)
      const pre = document.createElement('pre');
      const c = document.createElement('code');
      if (fence[2]) c.dataset.lang = fence[2];
      c.textContent = code.join('\n');
      pre.appendChild(c);
      into.appendChild(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const h = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      renderInline(heading[2], h);
      into.appendChild(h);
      i++;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = document.createElement(ordered ? 'ol' : 'ul');
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const li = document.createElement('li');
        renderInline(m[2], li);
        list.appendChild(li);
        i++;
      }
      into.appendChild(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      flush();
      const quote = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quote.push(lines[i++].replace(/^\s*>\s?/, ''));
      const bq = document.createElement('blockquote');
      renderMarkdown(quote.join('\n'), bq);
      into.appendChild(bq);
      continue;
    }
    if (!line.trim()) { flush(); i++; continue; }
    paragraph.push(line);
    i++;
  }
  flush();
}

// A reply's <think> section, when the server did not split it off already.
function splitThink(content) {
  const open = content.indexOf('<think>');
  if (open < 0) return { reasoning: '', content };
  const close = content.indexOf('</think>', open);
  if (close < 0) return { reasoning: content.slice(open + 7), content: content.slice(0, open) };
  return { reasoning: content.slice(open + 7, close), content: content.slice(0, open) + content.slice(close + 8) };
}

// ---------------------------------------------------------------- rendering

function renderSidebar() {
  const list = $('conversations');
  list.replaceChildren(...state.conversations.map((c) => {
    const li = document.createElement('li');
    if (c.id === state.currentId) li.className = 'current';
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    open.textContent = c.title || 'New chat';
    open.title = c.title || '';
    open.addEventListener('click', () => { if (!state.streaming) { state.currentId = c.id; render(); } });
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = '×';
    del.title = 'Delete this conversation';
    del.setAttribute('aria-label', `Delete ${c.title}`);
    del.addEventListener('click', () => {
      if (state.streaming) return;
      state.conversations = state.conversations.filter((x) => x.id !== c.id);
      if (state.currentId === c.id) state.currentId = state.conversations.length ? state.conversations[0].id : null;
      saveConversations();
      render();
    });
    li.append(open, del);
    return li;
  }));
}

function renderMessage(conversation, message, index) {
  const div = document.createElement('div');
  div.className = `message ${message.role}`;
  const role = document.createElement('div');
  role.className = 'role';
  const who = document.createElement('span');
  who.textContent = message.role === 'user' ? 'You' : (message.model || 'Assistant');
  role.appendChild(who);
  const last = index === conversation.messages.length - 1;
  if (message.role === 'user' && !state.streaming) {
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'edit';
    edit.textContent = 'Edit';
    edit.addEventListener('click', () => editMessage(conversation, index, div));
    role.appendChild(edit);
  }
  if (message.role === 'assistant' && last && !state.streaming) {
    const again = document.createElement('button');
    again.type = 'button';
    again.className = 'regenerate';
    again.textContent = 'Regenerate';
    again.addEventListener('click', () => regenerate(conversation));
    role.appendChild(again);
  }
  div.appendChild(role);
  const body = document.createElement('div');
  body.className = 'body';
  if (message.role === 'user') {
    body.textContent = message.content;
  } else {
    const split = splitThink(message.content);
    const reasoning = (message.reasoning || '') + split.reasoning;
    if (reasoning.trim()) {
      const details = document.createElement('details');
      const summary = document.createElement('summary');
      summary.textContent = 'Thinking';
      const thinking = document.createElement('div');
      thinking.className = 'thinking';
      thinking.textContent = reasoning.trim();
      details.append(summary, thinking);
      body.appendChild(details);
    }
    renderMarkdown(split.content, body);
  }
  div.appendChild(body);
  if (message.status) {
    const status = document.createElement('div');
    status.className = 'status';
    status.textContent = message.status;
    div.appendChild(status);
  }
  return div;
}

function renderMessages() {
  const box = $('messages');
  const c = current();
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(...(c ? c.messages.map((m, i) => renderMessage(c, m, i)) : []));
  if (atBottom || state.streaming) box.scrollTop = box.scrollHeight;
}

function render() {
  renderSidebar();
  renderMessages();
  const c = current();
  $('system-prompt').value = c ? c.system || '' : '';
  $('send').hidden = state.streaming;
  $('stop').hidden = !state.streaming;
  $('input').disabled = false;
}

// ---------------------------------------------------------------- chatting

function editMessage(conversation, index, div) {
  const body = div.querySelector('.body');
  const area = document.createElement('textarea');
  area.value = conversation.messages[index].content;
  area.rows = Math.min(12, area.value.split('\n').length + 1);
  const save = document.createElement('button');
  save.type = 'button';
  save.textContent = 'Save and send';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'Cancel';
  save.addEventListener('click', () => {
    const text = area.value.trim();
    if (!text) return;
    conversation.messages = conversation.messages.slice(0, index);
    conversation.messages.push({ role: 'user', content: text });
    saveConversations();
    complete(conversation);
  });
  cancel.addEventListener('click', () => renderMessages());
  body.replaceChildren(area, save, cancel);
  area.focus();
}

function regenerate(conversation) {
  if (state.streaming) return;
  const last = conversation.messages[conversation.messages.length - 1];
  if (last && last.role === 'assistant') conversation.messages.pop();
  complete(conversation);
}

function send(text) {
  let c = current();
  if (!c) c = newConversation();
  c.messages.push({ role: 'user', content: text });
  if (c.title === 'New chat') c.title = text.split('\n')[0].slice(0, 60);
  saveConversations();
  complete(c);
}

function requestBody(conversation) {
  const messages = [];
  if (conversation.system && conversation.system.trim()) messages.push({ role: 'system', content: conversation.system });
  for (const m of conversation.messages) messages.push({ role: m.role, content: m.role === 'assistant' ? splitThink(m.content).content : m.content });
  const body = { model: state.settings.model || undefined, messages, stream: true, stream_options: { include_usage: true } };
  const t = Number(state.settings.temperature);
  const p = Number(state.settings.top_p);
  const n = Number(state.settings.max_tokens);
  if (Number.isFinite(t)) body.temperature = t;
  if (Number.isFinite(p)) body.top_p = p;
  if (Number.isInteger(n) && n > 0) body.max_tokens = n;
  return body;
}

// Streams the next assistant turn into the conversation.
async function complete(conversation) {
  if (state.streaming) return;
  showError('');
  const body = requestBody(conversation);
  const reply = { role: 'assistant', content: '', reasoning: '', model: state.settings.model, status: '' };
  conversation.messages.push(reply);
  conversation.model = state.settings.model;
  state.streaming = true;
  state.controller = new AbortController();
  render();
  const speed = $('speed');
  const started = performance.now();
  let first = 0;
  let pieces = 0;
  let usage = null;
  let drawn = false;
  const redraw = () => {
    if (drawn) return;
    drawn = true;
    requestAnimationFrame(() => { drawn = false; renderMessages(); });
  };
  try {
    const response = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(body), signal: state.controller.signal });
    if (!response.ok) throw new Error(await errorMessage(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let done = false;
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') { done = true; break; }
          let chunk;
          try { chunk = JSON.parse(data); } catch (_) { continue; }
          if (chunk.error) throw new Error(chunk.error.message || 'the server reported an error');
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (!delta) continue;
          const text = (delta.content || '') + (delta.reasoning_content || '');
          if (delta.content) reply.content += delta.content;
          if (delta.reasoning_content) reply.reasoning += delta.reasoning_content;
          if (text) {
            pieces++;
            const now = performance.now();
            if (!first) first = now;
            const seconds = (now - first) / 1000;
            if (seconds > 0.2) speed.textContent = `${((pieces - 1) / seconds).toFixed(1)} tokens/s`;
            redraw();
          }
        }
      }
    }
    if (usage && usage.completion_tokens && first) {
      const seconds = (performance.now() - first) / 1000;
      const rate = seconds > 0 ? (Math.max(usage.completion_tokens - 1, 0) / seconds) : 0;
      speed.textContent = `${usage.completion_tokens} tokens, ${rate.toFixed(1)} tokens/s`;
    }
  } catch (e) {
    if (e.name === 'AbortError') {
      reply.status = 'stopped';
    } else {
      reply.status = 'failed';
      showError(e.message);
      if (/^401/.test(e.message)) openSettings(true);
    }
  } finally {
    if (!reply.content && !reply.reasoning && reply.status !== 'stopped') conversation.messages.pop();
    state.streaming = false;
    state.controller = null;
    saveConversations();
    render();
    if (!usage && !first) speed.textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  }
}

// ---------------------------------------------------------------- the model panel

function row(table, key, value, link) {
  const tr = document.createElement('tr');
  const th = document.createElement('th');
  th.textContent = key;
  const td = document.createElement('td');
  if (link && /^https?:\/\//.test(link)) {
    const a = document.createElement('a');
    a.href = link;
    a.textContent = value;
    a.rel = 'noopener noreferrer';
    a.target = '_blank';
    td.appendChild(a);
  } else {
    td.textContent = value;
  }
  tr.append(th, td);
  table.appendChild(tr);
}

function humanCount(n) {
  if (typeof n !== 'number') return 'unknown';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  return String(n);
}

async function loadModelPanel() {
  const panel = $('model-panel');
  const id = state.settings.model;
  if (!id) { panel.textContent = 'No model.'; return; }
  panel.textContent = 'Loading…';
  let response;
  try { response = await fetch(`/v1/models/${encodeURIComponent(id)}`, { headers: headers() }); } catch (e) { panel.textContent = e.message; return; }
  if (!response.ok) { panel.textContent = await errorMessage(response); return; }
  const model = await response.json();
  const card = model.owl || {};
  const title = document.createElement('h3');
  title.textContent = card.title || model.id;
  const facts = document.createElement('table');
  facts.className = 'facts';
  row(facts, 'Name', model.id);
  row(facts, 'Family', card.family || 'unknown');
  row(facts, 'Publisher', card.publisher || 'unknown');
  row(facts, 'Parameters', humanCount(card.parameters));
  row(facts, 'Quantization', card.quantization || 'unknown');
  row(facts, 'Context length', card.context_length ? String(card.context_length) : 'unknown');
  const license = card.license || {};
  row(facts, 'License', license.name || license.id || 'unknown', license.url);
  if (card.lineage && card.lineage.base_model) row(facts, 'Base model', card.lineage.base_model);
  const parts = [title, facts];
  const lists = [['Obligations', license.obligations], ['Use restrictions', license.restrictions]];
  for (const [name, items] of lists) {
    if (!Array.isArray(items) || !items.length) continue;
    const h = document.createElement('h4');
    h.textContent = name;
    const ul = document.createElement('ul');
    for (const item of items) {
      const li = document.createElement('li');
      li.textContent = item;
      ul.appendChild(li);
    }
    parts.push(h, ul);
  }
  const openness = card.openness;
  if (openness) {
    const verdict = document.createElement('p');
    verdict.className = 'verdict';
    verdict.textContent = `Openness: ${openness.osaid} (OSI Open Source AI Definition), MOF class ${openness.mof_class}`;
    const basis = document.createElement('p');
    basis.textContent = openness.basis || '';
    const table = document.createElement('table');
    table.className = 'openness';
    for (const c of openness.components || []) {
      const released = c.released === true ? 'released' : c.released === false ? 'not released' : 'unknown';
      row(table, c.name, c.license ? `${released} (${c.license})` : released, c.url);
    }
    const note = document.createElement('p');
    note.className = 'note';
    note.textContent = '"Open weights" is not "open source": the table says what the publisher released, with links to check.';
    parts.push(verdict, basis, table, note);
  }
  panel.replaceChildren(...parts);
}

// ---------------------------------------------------------------- wiring

function openSettings(open) {
  $('settings').hidden = !open;
  $('settings-toggle').setAttribute('aria-expanded', String(open));
}

function setup() {
  loadStored();
  $('temperature').value = state.settings.temperature;
  $('top-p').value = state.settings.top_p;
  $('max-tokens').value = state.settings.max_tokens;
  $('api-key').value = apiKey();

  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('input').value.trim();
    if (!text || state.streaming) return;
    $('input').value = '';
    send(text);
  });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => { if (state.controller) state.controller.abort(); });
  $('new-chat').addEventListener('click', () => { if (!state.streaming) { newConversation(); render(); $('input').focus(); } });
  $('settings-toggle').addEventListener('click', () => openSettings($('settings').hidden));
  $('model-info').addEventListener('click', () => {
    const panel = $('model-panel');
    panel.hidden = !panel.hidden;
    $('model-info').setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) loadModelPanel();
  });
  $('model-picker').addEventListener('change', (e) => {
    state.settings.model = e.target.value;
    saveSettings();
    if (!$('model-panel').hidden) loadModelPanel();
  });
  for (const [id, key] of [['temperature', 'temperature'], ['top-p', 'top_p'], ['max-tokens', 'max_tokens']]) {
    $(id).addEventListener('change', (e) => { state.settings[key] = e.target.value === '' ? DEFAULTS[key] : Number(e.target.value); saveSettings(); });
  }
  $('system-prompt').addEventListener('change', (e) => {
    let c = current();
    if (!c) c = newConversation();
    c.system = e.target.value;
    saveConversations();
    renderSidebar();
  });
  $('api-key').addEventListener('change', (e) => {
    const key = e.target.value.trim();
    if (key) sessionStorage.setItem(API_KEY_KEY, key); else sessionStorage.removeItem(API_KEY_KEY);
    loadModels();
  });
  render();
  loadModels();
}

document.addEventListener('DOMContentLoaded', setup);
