export * from './runtime';
export * from './types';
export * from './matmul';
