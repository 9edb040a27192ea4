#!/usr/bin/env node
import './check-node.js';
import { compileCacheDirectory } from './compile-cache.js';
import { entry } from './entry.js';

// For the cluster children, which remove it from their own environment as they start.
if (compileCacheDirectory) process.env.NODE_COMPILE_CACHE = compileCacheDirectory;
await import(entry('cli/supervisor'));
