// Tokens that end an assistant turn. Shared by the server and the in-browser chat so both stop a
// reply at the same place.
import type { LanguageModel } from '../src/index';

/** Tokens that end a chat turn in the templates of common families; each is used if the vocabulary has it. */
export const END_OF_TURN = ['<|im_end|>', '<|eot_id|>', '<end_of_turn>', '<|end|>', '<|endoftext|>', '</s>'];

/** The ids of END_OF_TURN tokens that `lm`'s vocabulary has. */
export function chatStopIds(lm: LanguageModel): number[] {
  const ids = new Set<number>();
  for (const t of END_OF_TURN) {
    const id = lm.tokenizer?.tokenToId(t);
    if (id !== undefined && id !== null) ids.add(id);
  }
  return [...ids];
}
