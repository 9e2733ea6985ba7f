#!/usr/bin/env bash
# Builds build/wordcount.wasm from wordcount.ts with AssemblyScript (from npm).
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund
npx asc wordcount.ts --outFile build/wordcount.wasm --runtime stub --optimize --noAssert --use abort=
echo "built $(pwd)/build/wordcount.wasm ($(wc -c < build/wordcount.wasm) bytes)"
