// Grammar-constrained decoding: GBNF grammars, JSON Schema and regex converters, a byte-level
// matcher, and token masks over a vocabulary trie.

export { CharSet } from './charset';
export { GrammarError } from './errors';
export { Grammar, type GrammarExpr, parseGbnf } from './gbnf';
export { gbnfLiteral, gbnfClass } from './emit';
export { jsonSchemaToGbnf, type JsonSchemaOptions } from './json-schema';
export { regexToGbnf, type RegexOptions } from './regex';
export { GrammarMatcher } from './matcher';
export { TokenVocabulary, GrammarConstraint, naiveAllowed } from './token-mask';
