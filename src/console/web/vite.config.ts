// Build config: one self-contained bundle under dist/, embedded into the kura binary by
// src/console/mod.rs. Nothing may load from outside the server (CSP `default-src 'self'`),
// so the module-preload polyfill (an inline helper) is off and assets are never inlined as data: URLs.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
  },
  server: {
    fs: { allow: ['..', '../../../queries'] },
  },
});
