// A grammar, JSON Schema or regex that cannot be turned into a constraint, or a token the constraint
// refuses. `at` names the place at fault: "line 3, column 7" of a GBNF text, a JSON pointer such as
// "#/properties/a" of a schema, "offset 4" of a regex, or a rule name.

import { SparrowError } from '../../formats/errors';

export class GrammarError extends SparrowError {
  constructor(message: string, readonly at?: string) {
    super('GRAMMAR', message);
    this.name = 'GrammarError';
  }
}
