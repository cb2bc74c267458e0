// The checkpoint's own chat template (tokenizer_config.json `chat_template`, a Jinja string or a
// list of named templates) rendered through @huggingface/jinja the way transformers'
// apply_chat_template does: messages, add_generation_prompt, the special-token strings, tools.

import { Template } from '@huggingface/jinja';
import { FormatError } from '../formats/errors';
import { RequestError } from './errors';
import { tokenText } from './tokenizer';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string;
  [field: string]: unknown;
}

export interface RenderOptions {
  /** Ends with the opening of an assistant turn. Default true. */
  addGenerationPrompt?: boolean;
  /** Tool schemas, for templates that render them. */
  tools?: unknown[];
  /** Further template variables (e.g. enable_thinking). */
  variables?: Record<string, unknown>;
}

/** Picks the template text: a string, or the entry named `name` (default "default", else the first) of a list. */
export function selectTemplate(source: unknown, name?: string): string | null {
  if (typeof source === 'string') return source;
  if (Array.isArray(source)) {
    const byName = new Map<string, string>();
    for (const t of source) if (t && typeof t.name === 'string' && typeof t.template === 'string') byName.set(t.name, t.template);
    if (name !== undefined) {
      const t = byName.get(name);
      if (t === undefined) throw new RequestError('template', `no chat template named ${JSON.stringify(name)} (have ${[...byName.keys()].join(', ')})`);
      return t;
    }
    return byName.get('default') ?? byName.values().next().value ?? null;
  }
  if (source && typeof source === 'object') return selectTemplate(Object.entries(source).map(([n, template]) => ({ name: n, template })), name);
  return null;
}

export class ChatTemplate {
  private readonly template: Template;
  private readonly specials: Record<string, string>;

  constructor(readonly source: string, tokenizerConfig: Record<string, any> = {}) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new FormatError('tokenizer_config.json chat_template', `does not parse: ${(e as Error).message}`);
    }
    this.specials = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      const t = tokenText(tokenizerConfig[key]);
      if (t !== undefined) this.specials[key] = t;
    }
  }

  /** The template of a tokenizer config (or `override`), or null when it has none. */
  static fromConfig(tokenizerConfig: Record<string, any> | null | undefined, override?: string, name?: string): ChatTemplate | null {
    const cfg = tokenizerConfig ?? {};
    const source = override ?? selectTemplate(cfg.chat_template, name);
    return source ? new ChatTemplate(source, cfg) : null;
  }

  render(messages: ChatMessage[], opts: RenderOptions = {}): string {
    if (!Array.isArray(messages) || !messages.length) throw new RequestError('messages', 'must be a non-empty array');
    messages.forEach((m, i) => {
      if (!m || typeof m.role !== 'string') throw new RequestError(`messages[${i}].role`, 'must be a string');
      if (typeof m.content !== 'string' && !Array.isArray(m.content) && m.content !== null) throw new RequestError(`messages[${i}].content`, 'must be a string');
    });
    try {
      return this.template.render({
        ...this.specials,
        ...(opts.variables ?? {}),
        messages,
        ...(opts.tools ? { tools: opts.tools } : {}),
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      // raise_exception() in a template reports a conversation the model cannot take.
      throw new RequestError('messages', (e as Error).message);
    }
  }
}
