// Compiles the four contracts with @ton/tolk-js.
//   node build.mjs          writes build/<name>.boc and build/<name>.json
//   node build.mjs --check  compiles in memory; exits non-zero naming each file that differs
import { runTolkCompiler } from '@ton/tolk-js';
import { Cell } from '@ton/core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const CONTRACTS = ['root', 'proxy', 'client', 'worker'];

/** Compiles one contract; returns { boc: Buffer, json: string, code: Cell }. */
export async function compile(name) {
    const res = await runTolkCompiler({
        entrypointFileName: `${name}.tolk`,
        fsReadCallback: (p) => fs.readFileSync(path.join(here, 'src', p), 'utf8'),
    });
    if (res.status !== 'ok') {
        throw new Error(`${name}.tolk: ${res.message}`);
    }
    const code = Cell.fromBase64(res.codeBoc64);
    const boc = code.toBoc();
    const json = JSON.stringify({
        code_hash_hex: code.hash().toString('hex'),
        code_boc_base64: boc.toString('base64'),
    }, null, 2) + '\n';
    return { boc, json, code };
}

async function main() {
    const check = process.argv.includes('--check');
    const outDir = path.join(here, 'build');
    fs.mkdirSync(outDir, { recursive: true });
    let bad = 0;
    for (const name of CONTRACTS) {
        const { boc, json, code } = await compile(name);
        const files = [[`${name}.boc`, boc], [`${name}.json`, Buffer.from(json)]];
        for (const [file, content] of files) {
            const full = path.join(outDir, file);
            if (check) {
                const old = fs.existsSync(full) ? fs.readFileSync(full) : null;
                if (!old || !old.equals(content)) {
                    console.error(`build/${file} differs from the compiled source (run: node build.mjs)`);
                    bad++;
                }
            } else {
                fs.writeFileSync(full, content);
            }
        }
        console.log(`${name}: ${code.hash().toString('hex')} (${boc.length} bytes)`);
    }
    if (bad) process.exit(1);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    await main();
}
