// Kernel entry: every export is a pure function over byte offsets into the imported memory.
// No kernel allocates; the host lays out weights, activations and state.
export { heapBase, buildFeatures, relaxedDotProbe } from './base';
export * from './matmul';
export * from './norm';
export * from './act';
export * from './rope';
export * from './conv';
export * from './attention';
export * from './moe';
export * from './linear_attention';
export * from './ssm';
export * from './rnn';
export * from './rwkv7';
export * from './kquant';
export { quantizeKvRows } from './kvcache';
export * from './ternary';
