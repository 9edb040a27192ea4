#!/usr/bin/env node
import './check-node.js';
import './compile-cache.js';
import { entry } from './entry.js';

await import(entry('cli/loreley'));
