// Node's compile cache (22.1+): the code V8 compiled for Loreley's modules and its dependencies is
// kept on disk (the system temp dir, node-compile-cache/) and reused by the next process, which
// then starts with less CPU. Cluster children do not inherit it: the supervisor hands them the
// directory in NODE_COMPILE_CACHE, which each child removes from its environment at once so the
// commands it runs do not get it (src/cli/child.ts).
import module from 'node:module';

const enabled = module.enableCompileCache?.();
export const compileCacheDirectory = enabled?.directory;
